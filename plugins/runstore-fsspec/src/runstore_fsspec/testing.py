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

The pytest fixtures built on it (``s3_server``, ``s3``, ``serial_s3``) are in
:mod:`runstore_fsspec.pytest_plugin`.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = ["DUMMY_CREDENTIALS", "MOTO_REQUIREMENT", "Mode", "S3Server"]

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
