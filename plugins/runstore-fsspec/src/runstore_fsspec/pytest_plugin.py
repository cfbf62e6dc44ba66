"""pytest fixtures: a real S3 endpoint (moto's server on 127.0.0.1) for tests.

Installing runstore-fsspec registers this module with pytest (entry point
``pytest11``, plugin name ``runstore_fsspec``; ``-p no:runstore_fsspec`` turns
it off). The server needs ``moto[server]``; without it the tests that use these
fixtures are skipped, and pytest starts as usual (moto is imported only when a
fixture is used).

``s3_server`` (session)
    The :class:`~runstore_fsspec.testing.S3Server`, started on a free port at
    its first use and stopped at the end of the session. For the session the
    environment holds :data:`~runstore_fsspec.testing.DUMMY_CREDENTIALS`
    (dummy keys, ``AWS_DEFAULT_REGION=us-east-1``), so runstore, s3fs and
    child processes reach it with no option but ``endpoint_url``.
``s3``
    The same server, running (started again if a test stopped it), reset,
    with one empty bucket ``s3.bucket``. Open a store with
    ``runstore.open(s3.url("runs"))``; look behind its back with ``s3.keys()``,
    ``s3.objects()`` or ``s3.client()``; simulate an outage with ``s3.stop()``
    then ``s3.start()`` (same port, same data).
``serial_s3``
    A second endpoint on the same data as ``s3`` that answers one request at
    a time: concurrent conditional writes of one key are atomic there, as on
    S3 (moto's threaded server does not make them so). For tests of
    concurrent writers.
``s3rver_server`` (session)
    A second S3 implementation, :class:`~runstore_fsspec.testing.S3rver`
    (the ``s3rver`` emulator from npm, which ignores conditional writes),
    started with node on a free port of 127.0.0.1. It is looked for in
    ``$RUNSTORE_S3RVER``, in ``.s3rver/`` of the test root or a folder above
    it (``make s3rver`` installs it there) and on PATH; the tests that use
    it are skipped when it is missing.
``s3rver``
    The same server, with a folder of its bucket that no other test uses
    (``s3rver.folder``): ``runstore.open(s3rver.url("runs"))`` opens a store
    in it (the URL carries the key pair s3rver accepts) and ``s3rver.keys()``
    lists it. The bucket (``s3rver.bucket``) is the session's, so the
    endpoint's verdict on conditional writes is probed once per session.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstore_fsspec.testing import (
    DUMMY_CREDENTIALS,
    MOTO_REQUIREMENT,
    S3RVER_ENV,
    S3RVER_REQUIREMENT,
    S3rver,
    S3Server,
    find_s3rver,
)

__all__ = ["s3", "s3_server", "s3rver", "s3rver_server", "serial_s3"]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server for the session, with dummy credentials in the environment."""
    try:
        importlib.import_module("moto.server")
    except ImportError as exc:
        needs = f"the local S3 server needs {MOTO_REQUIREMENT}: pip install '{MOTO_REQUIREMENT}'"
        pytest.skip(f"{needs} ({exc})")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in DUMMY_CREDENTIALS.items():
            patch.setenv(key, value)
        with S3Server() as server:
            yield server


@pytest.fixture
def s3(s3_server: S3Server) -> S3Server:
    """The session's server, running, reset, with one empty bucket (``s3.bucket``)."""
    s3_server.start()  # again, if a test stopped it
    s3_server.reset()
    s3_server.create_bucket()
    return s3_server


@pytest.fixture
def serial_s3(s3: S3Server) -> Iterator[S3Server]:
    """A second endpoint on ``s3``'s data (reset) that answers one request at a time."""
    with S3Server(host=s3.host, bucket=s3.bucket, mode="serial") as server:
        yield server


@pytest.fixture(scope="session")
def s3rver_server(request: pytest.FixtureRequest) -> Iterator[S3rver]:
    """The s3rver emulator (npm) for the session, on a free port of 127.0.0.1."""
    executable = find_s3rver(request.config.rootpath, Path.cwd())
    if executable is None:
        pytest.skip(
            f"s3rver is not installed: run `make s3rver` (npm install --prefix .s3rver "
            f"{S3RVER_REQUIREMENT}) or name the executable in ${S3RVER_ENV}"
        )
    with S3rver(executable) as server:
        server.new_bucket()
        yield server


@pytest.fixture
def s3rver(s3rver_server: S3rver) -> S3rver:
    """The session's s3rver, running, with a folder of its bucket for this test alone."""
    if not s3rver_server.running:  # it died: a new one, with a new bucket
        s3rver_server.stop()
        s3rver_server.start()
        s3rver_server.new_bucket()
    s3rver_server.new_folder()
    return s3rver_server
