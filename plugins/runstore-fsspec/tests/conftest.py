"""Fixtures: a real S3 endpoint (moto's server) on 127.0.0.1, shared by the session.

Every test gets a freshly reset server with one empty bucket, ``BUCKET``.
Credentials are dummies; no region is passed to s3fs (``AWS_DEFAULT_REGION``
is set instead).
"""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

BUCKET = "runstore-test"
_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    """A moto server that tests may stop and start again on the same port."""

    host: str = "127.0.0.1"
    port: int = 0
    server: Any = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, prefix: str, **options: object) -> str:
        """A store URL under ``BUCKET`` with this endpoint."""
        query = "&".join(f"{k}={v}" for k, v in {"endpoint_url": self.endpoint, **options}.items())
        return f"s3://{BUCKET}/{prefix}?{query}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self.server.start()
        self.port = self.server.get_host_and_port()[1]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def running(self) -> bool:
        return self.server is not None

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def client(self) -> Any:
        """A plain boto3 client, for inspecting the bucket from outside runstore."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint)

    def keys(self, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return sorted(
            item["Key"]
            for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix)
            for item in page.get("Contents", ())
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(_ENV)
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
    """The server, reset, with an empty ``BUCKET``."""
    if not s3_server.running:
        s3_server.start()
    s3_server.reset()
    s3_server.client().create_bucket(Bucket=BUCKET)
    return s3_server
