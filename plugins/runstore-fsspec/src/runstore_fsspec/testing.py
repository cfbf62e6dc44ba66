"""A local S3 endpoint for tests: moto's server on 127.0.0.1 (``pip install moto[server]``).

>>> server = S3Server()            # doctest: +SKIP
>>> server.start(); server.reset(); server.create_bucket()
>>> runstore.open(server.url("runs"))

It serves real S3 over HTTP (conditional writes included); nothing is
patched. The first start picks a free port and keeps it, so the server can be
stopped and started again on the same port to simulate an outage; the data
outlives such a restart (``reset`` wipes it). Clients need credentials and a
region: use :data:`DUMMY_CREDENTIALS` as environment variables, and never pass
a region to s3fs.

``mode`` says how it serves:

* ``"threaded"`` (default): in a thread of this process, a thread per request.
* ``"serial"``: in a thread of this process, one request at a time. moto checks
  a condition (``If-None-Match: *``) and stores the object in two steps, so the
  threaded server can let two *concurrent* conditional writes of one key both
  succeed, which S3 never does; the serial one makes every conditional write
  atomic as on S3: use it for tests of concurrent writers. Both in-process
  modes share this process's moto data, so a serial server started next to a
  threaded one serves the same buckets.
* ``"process"``: ``python -m moto.server`` in a child process, with its own
  interpreter (no GIL shared with the client: benchmarks) and its own data,
  lost when it stops.

:class:`S3rver` is a second S3 implementation, the ``s3rver`` emulator from
npm, run with node in a child process. It speaks S3 well enough for
runstore but ignores ``If-None-Match`` and ``If-Match``, as older MinIO and
some Ceph gateways do: the endpoint runstore has to detect and serve safely.

The pytest fixtures built on them (``s3_server``, ``s3``, ``serial_s3``,
``s3rver_server``, ``s3rver``) are in :mod:`runstore_fsspec.pytest_plugin`.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal, Protocol

__all__ = [
    "DUMMY_CREDENTIALS",
    "MOTO_REQUIREMENT",
    "S3RVER_CREDENTIALS",
    "S3RVER_ENV",
    "S3RVER_REQUIREMENT",
    "Mode",
    "S3Server",
    "S3rver",
    "find_s3rver",
]

MOTO_REQUIREMENT = "moto[server]"
"""What the server needs installed."""

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""Environment for talking to the local server (no region goes to s3fs itself)."""

Mode = Literal["threaded", "serial", "process"]

S3RVER_REQUIREMENT: Final = "s3rver@3.7.1"
"""The npm package :class:`S3rver` runs (``make s3rver`` installs it into ``.s3rver/``)."""
S3RVER_ENV: Final = "RUNSTORE_S3RVER"
"""Environment variable naming the ``s3rver`` executable, if it is not found otherwise."""
S3RVER_CREDENTIALS: Final = {"key": "S3RVER", "secret": "S3RVER"}
"""The only key pair s3rver accepts (store options; :meth:`S3rver.url` adds them)."""


@dataclass
class S3Server:
    """A moto S3 server on ``host``; ``port=0`` picks a free port at the first start.

    Also a context manager: ``with S3Server() as server:`` starts and stops it.
    """

    host: str = "127.0.0.1"
    port: int = 0
    bucket: str = "runstore-test"
    """The bucket :meth:`create_bucket`, :meth:`url`, :meth:`keys` and :meth:`objects` use."""
    mode: Mode = "threaded"
    timeout: float = 30.0
    """Seconds to wait for the server to listen, and for an answer to :meth:`reset`."""
    _server: _Serving | None = field(default=None, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def url(self, prefix: str, **options: object) -> str:
        """A store URL for ``prefix`` in :attr:`bucket` on this endpoint, with ``options``.

        ``endpoint_url=...`` among the options replaces the endpoint (a proxy, say).
        """
        query = "&".join(f"{k}={v}" for k, v in {"endpoint_url": self.endpoint, **options}.items())
        return f"s3://{self.bucket}/{prefix}?{query}"

    def storage_options(self) -> dict[str, str]:
        """Keyword arguments for ``s3fs.S3FileSystem`` to reach this server (no region)."""
        return {"endpoint_url": self.endpoint}

    def start(self) -> None:
        """Serve on :attr:`port` (a free port, kept from now on, when it is 0).

        A no-op when running. Raises ``ImportError`` when moto is missing (in-process modes).
        """
        if self._server is not None:
            return
        server: _Serving
        if self.mode == "process":
            server = _ChildProcess(self.host, self.port)
        else:
            server = _InProcess(self.host, self.port, threaded=self.mode == "threaded")
        self._server, self.port = server, server.port
        try:
            _wait_until_listening(self.host, self.port, server.alive, self.timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop serving (connections are refused until :meth:`start`); a no-op when stopped."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Wipe every bucket and object (moto's ``POST /moto-api/reset``)."""
        # plain http to the local server: the scheme is ours, not user input
        reset = f"{self.endpoint}/moto-api/reset"
        request = urllib.request.Request(reset, method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            if response.status != 200:
                raise RuntimeError(f"moto reset answered {response.status}")

    def client(self) -> Any:
        """A plain botocore S3 client, for looking at the bucket from outside runstore."""
        import botocore.session

        return botocore.session.get_session().create_client("s3", endpoint_url=self.endpoint)

    def create_bucket(self) -> None:
        self.client().create_bucket(Bucket=self.bucket)

    def keys(self, prefix: str = "") -> list[str]:
        """Every key of :attr:`bucket` under ``prefix``, sorted."""
        return sorted(self._listing(self.client(), prefix))

    def objects(self, prefix: str = "") -> Iterator[tuple[str, bytes]]:
        """Every object of :attr:`bucket` under ``prefix``: its key and its bytes, in key order."""
        client = self.client()
        for key in self._listing(client, prefix):
            body: bytes = client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            yield key, body

    def _listing(self, client: Any, prefix: str) -> Iterator[str]:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                yield item["Key"]


class _Serving(Protocol):
    port: int

    def alive(self) -> bool: ...

    def stop(self) -> None: ...


class _InProcess:
    """moto's WSGI app on werkzeug in a thread; ``threaded=False``: one request at a time."""

    def __init__(self, host: str, port: int, *, threaded: bool) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        werkzeug_log = logging.getLogger("werkzeug")
        if werkzeug_log.level == logging.NOTSET:
            werkzeug_log.setLevel(logging.WARNING)  # a line per request otherwise

        class OneAtATime(MotoRequestHandler):
            # no keep-alive: an idle connection would block every other client
            protocol_version = "HTTP/1.0"

        handler = MotoRequestHandler if threaded else OneAtATime
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(host, port, app, threaded=threaded, request_handler=handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()  # the port refuses connections from now on
        self._thread.join()


class _ChildProcess:
    """``python -m moto.server`` in a child process (its own interpreter and data)."""

    def __init__(self, host: str, port: int) -> None:
        if port == 0:
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
        self.port = port
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def alive(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)


def _wait_until_listening(host: str, port: int, alive: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if not alive():
                raise RuntimeError(
                    f"moto's server on {host}:{port} stopped before it listened"
                    f" (is {MOTO_REQUIREMENT} installed?)"
                ) from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- s3rver (npm) -------------------------------------------------------------------------

_LISTENING = re.compile(rb"listening on (\S+):(\d+)")
_names = itertools.count()


def find_s3rver(*roots: Path) -> Path | None:
    """The ``s3rver`` executable: ``$RUNSTORE_S3RVER``, ``.s3rver/`` in or above ``roots``, PATH."""
    named = os.environ.get(S3RVER_ENV)
    if named:
        return Path(named)
    for root in roots:
        for folder in (root, *root.parents):
            candidate = folder / ".s3rver" / "node_modules" / ".bin" / "s3rver"
            if candidate.is_file():
                return candidate
    found = shutil.which("s3rver")
    return Path(found) if found else None


@dataclass
class S3rver:
    """The ``s3rver`` S3 emulator (npm) in a child process on ``host``, on a free port.

    Its data lives in a temporary folder, removed by :meth:`stop`. It does
    not enforce conditional writes. :meth:`url` and :meth:`keys` work under
    :attr:`folder` of :attr:`bucket` (:meth:`new_folder` gives a test its own);
    :meth:`url` carries the key pair s3rver accepts.
    """

    executable: Path
    host: str = "127.0.0.1"
    bucket: str = "runstore-test"
    folder: str = ""
    """A folder of :attr:`bucket` that :meth:`url` and :meth:`keys` work under (``""``: none)."""
    timeout: float = 30.0
    port: int = 0
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _directory: Path | None = field(default=None, init=False, repr=False)
    _client: Any = field(default=None, init=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _under(self, prefix: str) -> str:
        return f"{self.folder}/{prefix}" if self.folder else prefix

    def url(self, prefix: str, **options: object) -> str:
        """A store URL for ``prefix`` in :attr:`folder` of :attr:`bucket`, with ``options``."""
        merged = {"endpoint_url": self.endpoint, **S3RVER_CREDENTIALS, **options}
        query = "&".join(f"{k}={v}" for k, v in merged.items())
        return f"s3://{self.bucket}/{self._under(prefix)}?{query}"

    def start(self) -> None:
        """Start node on a free port (s3rver picks it and prints it); a no-op when running."""
        if self._process is not None:
            return
        self._directory = Path(tempfile.mkdtemp(prefix="s3rver-"))
        # s3rver's continuation tokens use DES, which OpenSSL 3 keeps in its legacy provider
        env = dict(os.environ, NODE_OPTIONS="--openssl-legacy-provider")
        command = [str(self.executable), "-d", str(self._directory)]
        command += ["-a", self.host, "-p", str(self.port), "-s"]
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
        try:
            assert self._process.stdout is not None
            self.port = _announced_port(self._process.stdout, self.timeout)
            _wait_until_listening(self.host, self.port, lambda: self.running, self.timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop node and remove its data (buckets included); a no-op when stopped."""
        process, self._process, self._client = self._process, None, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def __enter__(self) -> S3rver:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def client(self) -> Any:
        """A plain botocore S3 client, for looking at the buckets from outside runstore."""
        if self._client is None:
            import botocore.session

            self._client = botocore.session.get_session().create_client(
                "s3",
                endpoint_url=self.endpoint,
                region_name="us-east-1",
                aws_access_key_id=S3RVER_CREDENTIALS["key"],
                aws_secret_access_key=S3RVER_CREDENTIALS["secret"],
            )
        return self._client

    def new_bucket(self) -> str:
        """Create an empty bucket with a name not used before, and make it :attr:`bucket`."""
        self.bucket = f"runstore-test-{next(_names)}"
        self.client().create_bucket(Bucket=self.bucket)
        return self.bucket

    def new_folder(self) -> str:
        """Work under a folder of :attr:`bucket` not used before (nothing is written)."""
        self.folder = f"test-{next(_names)}"
        return self.folder

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` under :attr:`folder`, from outside runstore."""
        self.client().put_object(Bucket=self.bucket, Key=self._under(key), Body=data)

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under :attr:`folder` and ``prefix``, sorted, relative to :attr:`folder`."""
        start = len(self._under(""))
        found: list[str] = []
        for page in (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=self._under(prefix))
        ):
            found.extend(item["Key"][start:] for item in page.get("Contents", ()))
        return sorted(found)


def _announced_port(stdout: IO[bytes], timeout: float) -> int:
    """The port in s3rver's ``S3rver listening on HOST:PORT`` line."""
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        for line in stdout:
            lines.put(line)
        lines.put(b"")

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    seen: list[bytes] = []
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            raise RuntimeError(
                f"s3rver did not say where it listens within {timeout}s: {b''.join(seen)!r}"
            ) from None
        if not line:
            raise RuntimeError(f"s3rver stopped before it listened: {b''.join(seen)!r}")
        seen.append(line)
        match = _LISTENING.search(line)
        if match:
            return int(match.group(2))
