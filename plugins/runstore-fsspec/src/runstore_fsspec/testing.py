"""A local S3 endpoint for tests: moto's server on 127.0.0.1 (``pip install moto[server]``).

>>> server = S3Server()            # doctest: +SKIP
>>> server.start(); server.reset(); server.create_bucket()
>>> runstore.open(server.url("runs"))

It serves real S3 over HTTP (conditional writes included), can be stopped
and started again on the same port to simulate an outage, and keeps its data
across such a restart (``reset`` wipes it).

moto checks a condition (``If-None-Match: *``) and stores the object in two
steps, so its threaded server can let two *concurrent* conditional writes of
one key both succeed, which S3 never does. ``S3Server(serial=True)`` answers
one request at a time, which makes every conditional write atomic as on S3:
use it for tests of concurrent writers.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DUMMY_CREDENTIALS", "S3Server"]

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
"""Environment for talking to the local server (no region goes to s3fs itself)."""


@dataclass
class S3Server:
    """A moto server on ``host``; ``port=0`` picks a free port at the first start."""

    host: str = "127.0.0.1"
    port: int = 0
    bucket: str = "runstore-test"
    serial: bool = False
    """One request at a time (conditional writes atomic under concurrency), else threaded."""
    server: Any = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.server is not None

    def url(self, prefix: str, **options: object) -> str:
        """A store URL under :attr:`bucket` with this endpoint and ``options``."""
        query = "&".join(f"{k}={v}" for k, v in {"endpoint_url": self.endpoint, **options}.items())
        return f"s3://{self.bucket}/{prefix}?{query}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        if self.serial:
            self.server = _SerialMotoServer(self.host, self.port)
        else:
            self.server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self.server.start()
        self.port = int(self.server.get_host_and_port()[1])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def reset(self) -> None:
        """Wipe every bucket and object (moto's ``POST /moto-api/reset``)."""
        # plain http to the local server: the scheme is ours, not user input
        reset = f"{self.endpoint}/moto-api/reset"
        request = urllib.request.Request(reset, method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
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
        paginator = self.client().get_paginator("list_objects_v2")
        return sorted(
            item["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents", ())
        )


class _SerialMotoServer:
    """moto's WSGI app on a single-threaded werkzeug server, one connection per request."""

    def __init__(self, host: str, port: int) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        class OneAtATime(MotoRequestHandler):
            # no keep-alive: an idle connection would block every other client
            protocol_version = "HTTP/1.0"

        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(host, port, app, threaded=False, request_handler=OneAtATime)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def get_host_and_port(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
