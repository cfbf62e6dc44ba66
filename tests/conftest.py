"""Fixtures shared by the cross-package tests.

``cli_store`` is a store URL for the end-to-end CLI tests, once on the local
filesystem and once on S3 (the ``s3`` fixture of runstore-fsspec's pytest
plugin: moto's server on 127.0.0.1, reset before each test).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

import runstore
from runstore.cli.app import cli
from runstore.model.run import RunStatus
from runstore_fsspec.testing import S3Server

_prefixes = itertools.count()


@dataclass(frozen=True)
class CliStore:
    """A store for a CLI test: its URL, which backend, and its root (local only)."""

    url: str
    kind: str
    root: Path | None = None
    s3: S3Server | None = None
    """The local S3 server when ``kind`` is ``s3``."""

    def invoke(self, *args: str) -> Result:
        """``runstore --store URL ARGS...`` through the click entry point, in process."""
        return CliRunner().invoke(cli, ["--store", self.url, *args])

    def read(self, key: str) -> bytes:
        """A stored file (``run_id/summary.json``), read behind runstore's back."""
        if self.root is not None:
            return (self.root / key).read_bytes()
        assert self.s3 is not None
        response = self.s3.client().get_object(Bucket=self.s3.bucket, Key=f"{self.prefix}/{key}")
        data: bytes = response["Body"].read()
        return data

    def overwrite(self, key: str, data: bytes) -> None:
        """Replace a stored file behind runstore's back (tampering, damage)."""
        if self.root is not None:
            path = self.root / key
            path.chmod(0o644)
            path.write_bytes(data)
            return
        assert self.s3 is not None
        self.s3.client().put_object(Bucket=self.s3.bucket, Key=f"{self.prefix}/{key}", Body=data)

    def exists(self, key: str) -> bool:
        if self.root is not None:
            return (self.root / key).exists()
        assert self.s3 is not None
        return f"{self.prefix}/{key}" in self.s3.keys(f"{self.prefix}/{key}")

    @property
    def prefix(self) -> str:
        """The key prefix of the store in its bucket (S3 only)."""
        return self.url.split("?", 1)[0].split("/", 3)[3]


@pytest.fixture(params=["local", "s3"])
def cli_store(request: pytest.FixtureRequest, tmp_path: Path) -> CliStore:
    """An empty store, on the local filesystem and on S3."""
    if request.param == "local":
        return _local(tmp_path)
    server: S3Server = request.getfixturevalue("s3")
    return CliStore(url=server.url(f"cli-{next(_prefixes)}"), kind="s3", s3=server)


def write_small_run(
    store: runstore.Store,
    run_id: str,
    *,
    seed: int = 1,
    status: RunStatus = "succeeded",
    tags: tuple[str, ...] = (),
    log_retention: dict[str, int] | None = None,
) -> None:
    """A run with every kind of record and two artifacts, all derived from ``seed``."""
    run = store.create_run(
        run_id, sut_name="shop", seed=seed, tags=tags, log_retention=log_retention
    )
    run.log("info", "started", seed=seed)
    for n in (1, 2):
        instance = f"inst_{n:03d}"
        passed = (seed + n) % 3 != 0
        request = run.put_artifact(f"{instance}/request.json", orjson.dumps({"n": n, "seed": seed}))
        run.append("steps", {"instance_id": instance, "step_name": "buy", "request": request.name})
        run.append("assertions", {"instance_id": instance, "name": "ok", "passed": passed})
        run.append(
            "instances", {"instance_id": instance, "status": "passed" if passed else "failed"}
        )
    run.put_artifact("report.json", orjson.dumps({"seed": seed}), kind="qa_report")
    run.finish(status)


def _local(tmp_path: Path, name: str = "runs") -> CliStore:
    root = tmp_path / name
    return CliStore(url=str(root), kind="local", root=root)


@pytest.fixture
def local_store(tmp_path: Path) -> CliStore:
    """An empty store on the local filesystem (for the tests that need one backend only).

    It is not ``cli_store``'s local store: a test may use both as two stores.
    """
    return _local(tmp_path, "local-runs")


def small_runs(store: CliStore, *run_ids: str, **options: Any) -> None:
    """Write small finished runs (:func:`write_small_run`) into ``store``."""
    with runstore.open(store.url) as opened:
        for run_id in run_ids:
            write_small_run(opened, run_id, **options)


@pytest.fixture(name="small_runs")
def small_runs_fixture() -> Callable[..., None]:
    """``small_runs(store, "run_a", "run_b", seed=2)``: see :func:`write_small_run`."""
    return small_runs
