"""Fixtures: a real S3 endpoint (moto's server) on 127.0.0.1, shared by the session.

Every test using ``s3`` gets a freshly reset server with one empty bucket.
Credentials are dummies; no region is passed to s3fs (``AWS_DEFAULT_REGION``
is set instead).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from runstore_fsspec.testing import DUMMY_CREDENTIALS, S3Server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    saved = {k: os.environ.get(k) for k in DUMMY_CREDENTIALS}
    os.environ.update(DUMMY_CREDENTIALS)
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3(s3_server: S3Server) -> S3Server:
    """The server, reset, with an empty bucket (``s3.bucket``)."""
    if not s3_server.running:
        s3_server.start()
    s3_server.reset()
    s3_server.create_bucket()
    return s3_server


@pytest.fixture
def serial_s3(s3: S3Server) -> Iterator[S3Server]:
    """A second endpoint on the same (reset) data that answers one request at a time.

    moto's threaded server does not make concurrent conditional writes of one
    key atomic (S3 does); tests of concurrent writers use this one.
    """
    server = S3Server(serial=True, bucket=s3.bucket)
    server.start()
    try:
        yield server
    finally:
        server.stop()
