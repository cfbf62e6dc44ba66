"""runstore.ops.transfer: copying runs between stores (local <-> S3, memory -> fsspec)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

import runstore
from runstore.model.errors import ConflictError, CorruptError, NotFoundError
from runstore.ops.transfer import CopyProgress, acopy_runs, copy_runs
from runstore_fsspec.testing import S3Server

_names = itertools.count()


def fill(store: runstore.Store, tmp_path: Path) -> None:
    """Two finished runs (one failed) with streams and artifacts, and one live run."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1 << 20))
    with store.create_run(run_id="run_ok", sut_name="shop", seed=1, tags=["nightly"]) as run:
        for i in range(200):
            run.append("steps", {"instance_id": f"inst_{i % 5:03d}", "n": i})
        run.append("instances", {"instance_id": "inst_000", "status": "passed"})
        run.log("info", "done")
        run.set_phase("load", status="done", completed=5, total=5)
        run.put_artifact("inst_000/request.json", b'{"q": 1}')
        run.put_artifact("exports/big.bin", big, kind="export")
    with pytest.raises(RuntimeError), store.create_run(run_id="run_failed", sut_name="bank"):
        raise RuntimeError("boom")
    store.create_run(run_id="run_live").start()


def stream_bytes(store: runstore.Store, run_id: str, stream: str) -> bytes:
    async def collect() -> bytes:
        chunks = store.aio.log_backend.read_bytes(run_id, stream)
        return b"".join([chunk async for chunk in chunks])

    return store.portal.call(collect())


def assert_same_run(a: runstore.Store, b: runstore.Store, run_id: str) -> None:
    left, right = a.get_run(run_id), b.get_run(run_id)
    assert (left.manifest, left.state, left.summary) == (right.manifest, right.state, right.summary)
    assert left.streams() == right.streams()
    for stream in left.streams():
        assert stream_bytes(a, run_id, stream) == stream_bytes(b, run_id, stream)

    def stored(view: runstore.RunView) -> list[runstore.ArtifactRef]:
        # the location (uri) is each store's own; everything stored must be equal
        return [ref.model_copy(update={"uri": None}) for ref in view.artifacts()]

    assert stored(left) == stored(right)
    for ref in left.artifacts():
        body = right.read_artifact(ref.name, verify=True)
        assert hashlib.sha256(body).hexdigest() == ref.sha256


@pytest.fixture
def local(tmp_path: Path) -> Iterator[runstore.Store]:
    with runstore.open(str(tmp_path / "local"), heartbeat_interval=0) as store:
        yield store


@pytest.fixture
def remote(s3: S3Server) -> Iterator[runstore.Store]:
    with runstore.open(s3.url("runs"), heartbeat_interval=0) as store:
        yield store


def test_copy_local_to_s3_reproduces_finished_runs_exactly(
    local: runstore.Store, remote: runstore.Store, tmp_path: Path
) -> None:
    fill(local, tmp_path)
    report = copy_runs(local, remote)
    assert (report.copied, report.skipped, report.live) == (
        ["run_failed", "run_ok"],
        [],
        ["run_live"],
    )
    for run_id in report.copied:
        assert_same_run(local, remote, run_id)
    assert remote.list_runs() == local.list_runs(status=["succeeded", "failed"])


def test_copy_s3_to_local_reproduces_finished_runs_exactly(
    local: runstore.Store, remote: runstore.Store, tmp_path: Path
) -> None:
    fill(remote, tmp_path)
    report = copy_runs(remote, local, ["run_ok"])
    assert report.copied == ["run_ok"]
    assert_same_run(remote, local, "run_ok")


def test_copying_again_skips_runs_already_identical(
    local: runstore.Store, remote: runstore.Store, tmp_path: Path
) -> None:
    fill(local, tmp_path)
    copy_runs(local, remote)
    again = copy_runs(local, remote)
    assert (again.copied, again.skipped, again.bytes_copied) == ([], ["run_failed", "run_ok"], 0)


def test_interrupted_copy_resumes_where_it_stopped(
    local: runstore.Store, remote: runstore.Store, tmp_path: Path
) -> None:
    fill(local, tmp_path)

    class Interrupted(Exception):
        pass

    def stop_after_first_stream(event: CopyProgress) -> None:
        if event.item == "stream:instances":
            raise Interrupted

    with pytest.raises(Interrupted):
        copy_runs(local, remote, ["run_ok"], progress=stop_after_first_stream)
    assert remote.get_run("run_ok").state.status == "running"  # marked as a partial copy
    total = sum(len(stream_bytes(local, "run_ok", s)) for s in local.get_run("run_ok").streams())
    resumed = copy_runs(local, remote, ["run_ok"])
    assert resumed.copied == ["run_ok"]
    assert resumed.bytes_copied < total + (1 << 20) + 8  # instances were not sent again
    assert_same_run(local, remote, "run_ok")


def test_progress_reports_every_stream_artifact_and_run(
    local: runstore.Store, remote: runstore.Store, tmp_path: Path
) -> None:
    fill(local, tmp_path)
    events: list[CopyProgress] = []
    copy_runs(local, remote, ["run_ok"], progress=events.append)
    items = [e.item for e in events]
    assert "stream:steps" in items
    assert "artifact:exports/big.bin" in items
    assert events[-1] == CopyProgress(
        run_id="run_ok",
        item=None,
        runs_done=1,
        runs_total=1,
        bytes_copied=events[-1].bytes_copied,
    )
    assert events[-1].bytes_copied > 1 << 20


def test_a_different_run_under_the_same_id_is_a_conflict(
    local: runstore.Store, remote: runstore.Store
) -> None:
    with local.create_run(run_id="run_same", sut_name="here"):
        pass
    with remote.create_run(run_id="run_same", sut_name="there"):
        pass
    with pytest.raises(ConflictError, match="another manifest"):
        copy_runs(local, remote)


def test_unknown_run_is_not_found_before_anything_is_copied(
    local: runstore.Store, remote: runstore.Store
) -> None:
    with local.create_run(run_id="run_here"):
        pass
    with pytest.raises(NotFoundError):
        copy_runs(local, remote, ["run_here", "run_missing"])
    assert remote.list_runs() == []


def test_artifact_damaged_at_the_source_is_refused_and_not_stored(
    s3: S3Server, local: runstore.Store, remote: runstore.Store
) -> None:
    with remote.create_run(run_id="run_bad") as run:
        run.put_artifact("a.bin", b"original")
    s3.client().put_object(Bucket=s3.bucket, Key="runs/run_bad/artifacts/a.bin", Body=b"damaged")
    with pytest.raises(CorruptError, match="sha256"):
        copy_runs(remote, local)
    with pytest.raises(NotFoundError):
        local.get_run("run_bad").read_artifact("a.bin")


def test_async_stores_copy_on_the_callers_loop() -> None:
    source, target = f"memory://copy-{next(_names)}", f"fsspec+memory://copy-{next(_names)}"

    async def scenario() -> list[Any]:
        async with runstore.aio.open(source) as src, runstore.aio.open(target) as dst:
            run = await src.create_run("run_async")
            async with run:
                await run.append("steps", {"n": 1})
                await run.put_artifact("a.txt", b"hello")
            report = await acopy_runs(src, dst)
            view = await dst.get_run("run_async")
            records = [r async for r in view.read("steps")]
            return [report.copied, records, await view.read_artifact("a.txt", verify=True)]

    try:
        assert asyncio.run(scenario()) == [["run_async"], [{"n": 1}], b"hello"]
    finally:
        memory = fsspec.filesystem("memory")
        if memory.exists(f"/{target.rsplit('/', 1)[-1]}"):
            memory.rm(f"/{target.rsplit('/', 1)[-1]}", recursive=True)
