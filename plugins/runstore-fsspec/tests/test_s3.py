"""Runs on S3 (moto's server over HTTP): tree, processes, outages, streams, index."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import runstore
from runstore.model.errors import (
    AlreadyExistsError,
    BackendUnavailableError,
    ConflictError,
    CorruptError,
    NotFoundError,
    UnsupportedError,
)
from runstore.model.run import RunManifest, RunRecord, RunState
from runstore.spi import BufferedStreamWriter
from runstore_fsspec._conditional import VERDICT_KEY
from runstore_fsspec.backend import FsspecBackend
from runstore_fsspec.testing import S3Server


def backend_of(store: runstore.Store) -> FsspecBackend:
    backend = store.aio.state_backend
    assert isinstance(backend, FsspecBackend)
    return backend


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (another process, same environment)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


def count_requests(store: runstore.Store) -> Counter[str]:
    """Count the S3 operations the store sends from now on (botocore's event hooks)."""
    counts: Counter[str] = Counter()

    def record(event_name: str, **_: Any) -> None:
        counts[event_name.rsplit(".", 1)[-1]] += 1

    async def register() -> None:
        client = await backend_of(store).objects._s3()  # type: ignore[attr-defined]
        client.meta.events.register("before-send.s3", record)

    store.portal.call(register())
    return counts


@pytest.fixture
def store(s3: S3Server) -> Iterator[runstore.Store]:
    with runstore.open(s3.url("runs"), heartbeat_interval=0) as store:
        yield store


# -- the tree ---------------------------------------------------------------------------


def test_finished_run_leaves_the_windtunnel_tree_under_the_prefix(
    s3: S3Server, store: runstore.Store
) -> None:
    with store.create_run(run_id="run_20240115_001", sut_name="shop", seed=42) as run:
        run.append("instances", {"instance_id": "inst_001", "status": "passed"})
        run.append("steps", {"instance_id": "inst_001", "step_name": "login"})
        run.append("assertions", {"instance_id": "inst_001", "name": "total", "passed": True})
        run.log("info", "checkout done", instance_id="inst_001")
        run.put_artifact("inst_001/step_001_request.json", b"{}")
    # the endpoint's verdict is recorded by the first store of the process that writes
    probed = [f"runs/{VERDICT_KEY}"] if f"runs/{VERDICT_KEY}" in s3.keys("runs/") else []
    assert s3.keys("runs/") == [
        *probed,
        "runs/.runstore/records/run_20240115_001.json",
        *(
            f"runs/run_20240115_001/{name}"
            for name in (
                "artifacts.jsonl",
                "artifacts/inst_001/step_001_request.json",
                "assertions.jsonl",
                "instances.jsonl",
                "logs.jsonl",
                "manifest.json",
                "state.json",
                "steps.jsonl",
                "summary.json",
            )
        ),
    ]
    body = s3.client().get_object(Bucket=s3.bucket, Key="runs/run_20240115_001/steps.jsonl")
    assert body["Body"].read() == b'{"instance_id":"inst_001","step_name":"login"}\n'


def test_live_run_streams_are_segments_until_it_finishes(
    s3: S3Server, store: runstore.Store
) -> None:
    run = store.create_run(run_id="run_live")
    run.append("steps", {"n": 1})
    run.flush()
    run.append("steps", {"n": 2})
    run.flush()
    assert [k for k in s3.keys("runs/run_live/") if ".segments" in k] == [
        "runs/run_live/.segments/steps/0000000000000000.jsonl",
        "runs/run_live/.segments/steps/0000000000000008.jsonl",
    ]
    assert list(store.get_run("run_live").read("steps")) == [{"n": 1}, {"n": 2}]
    run.finish()
    assert not [k for k in s3.keys("runs/run_live/") if ".segments" in k]
    assert list(store.get_run("run_live").read("steps")) == [{"n": 1}, {"n": 2}]


def test_a_second_process_lists_and_reads_the_run(s3: S3Server, store: runstore.Store) -> None:
    with store.create_run(run_id="run_shared", sut_name="bank") as run:
        for i in range(3):
            run.append("steps", {"n": i})
        run.put_artifact("report.txt", b"all good")
    result = run_python(
        """
        import json, sys, runstore
        with runstore.open(sys.argv[1]) as store:
            (record,) = store.list_runs()
            view = store.get_run(record.run_id)
            print(json.dumps({
                "run_id": record.run_id,
                "status": record.status,
                "sut": record.sut_name,
                "steps": [r["n"] for r in view.read("steps")],
                "artifact": view.read_artifact("report.txt", verify=True).decode(),
            }))
        """,
        s3.url("runs"),
    )
    assert json.loads(result.stdout) == {
        "run_id": "run_shared",
        "status": "succeeded",
        "sut": "bank",
        "steps": [0, 1, 2],
        "artifact": "all good",
    }


# -- many writers -------------------------------------------------------------------


def test_two_creators_with_identical_manifests_get_one_run_and_one_refusal(
    s3: S3Server, store: runstore.Store
) -> None:
    """Processes started together can build byte-identical manifests (same generated id,
    same microsecond): only the one whose state landed holds the run; the other is
    refused and frees nothing of it."""
    backend = backend_of(store)
    now = datetime.now(UTC)
    manifest = RunManifest(run_id="run_twin", timestamp=now, sut_name="load")

    def state(owner: str) -> RunState:
        return RunState(run_id="run_twin", created_at=now, updated_at=now, owner=owner)

    async def create_twice() -> None:
        await backend.create_run(manifest, state("host:1:first"))
        with pytest.raises(AlreadyExistsError):
            await backend.create_run(manifest, state("host:2:second"))
        await backend.create_run(manifest, state("host:1:first"))  # a retry of the first lands

    store.portal.call(create_twice())
    view = store.get_run("run_twin")
    assert view.state.owner == "host:1:first"
    assert view.manifest == manifest
    assert [r.run_id for r in store.list_runs()] == ["run_twin"]


def test_eight_processes_creating_runs_lose_none_and_duplicate_none(serial_s3: S3Server) -> None:
    s3 = serial_s3
    start_at = time.time() + 3  # every process imports first, then they start together
    code = """
        import json, sys, time, runstore
        url, start_at = sys.argv[1], float(sys.argv[2])
        with runstore.open(url, heartbeat_interval=0) as store:
            time.sleep(max(0.0, start_at - time.time()))
            ids = []
            for _ in range(3):
                with store.create_run(sut_name="load") as run:
                    run.append("steps", {"writer": sys.argv[3]})
                ids.append(run.run_id)
        print(json.dumps(ids))
    """
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), s3.url("runs"), str(start_at), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    try:
        outputs = [process.communicate(timeout=240) for process in processes]
    finally:
        for process in processes:
            process.kill()
            process.wait()
    claimed: list[str] = []
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        claimed += json.loads(out)
    assert len(claimed) == 24
    assert len(set(claimed)) == 24  # no id claimed twice
    with runstore.open(s3.url("runs")) as store:
        listed = store.list_runs()
        assert sorted(r.run_id for r in listed) == sorted(claimed)  # no index entry lost
        assert {r.status for r in listed} == {"succeeded"}
        numbers = sorted(int(r.rsplit("_", 1)[1]) for r in claimed)
        assert numbers == list(range(1, 25))


def test_two_writers_on_one_stream_conflict_instead_of_interleaving(
    s3: S3Server, store: runstore.Store
) -> None:
    store.create_run(run_id="run_two").start()
    backend = backend_of(store)

    async def race() -> None:
        first = await backend.open_writer("run_two", "steps")
        second = await backend.open_writer("run_two", "steps")
        first.write(b'{"by":"first"}\n')
        await first.commit()
        second.write(b'{"by":"second"}\n')
        with pytest.raises(ConflictError, match="another writer"):
            await second.commit()
        assert isinstance(second, BufferedStreamWriter) and second.broken is not None
        with pytest.raises(ConflictError):  # a later flush learns it too: never a success
            await second.commit()
        with pytest.raises(ConflictError):
            second.write(b'{"by":"second, again"}\n')

    store.portal.call(race())
    assert list(store.get_run("run_two").read("steps")) == [{"by": "first"}]
    store.close()  # closing skips the broken writer: its conflict was raised already


def test_a_retried_segment_write_that_already_landed_is_not_duplicated(
    s3: S3Server, store: runstore.Store
) -> None:
    store.create_run(run_id="run_retry").start()
    backend = backend_of(store)

    async def retry() -> None:
        landed = await backend.open_writer("run_retry", "steps")
        retried = await backend.open_writer("run_retry", "steps")
        landed.write(b'{"n":1}\n')
        await landed.commit()
        # the same writer's second attempt, with more records appended meanwhile
        retried.write(b'{"n":1}\n{"n":2}\n')
        await retried.commit()

    store.portal.call(retry())
    assert list(store.get_run("run_retry").read("steps")) == [{"n": 1}, {"n": 2}]


# -- outages --------------------------------------------------------------------------


def test_server_stopped_mid_run_is_backend_unavailable_and_acknowledged_records_survive(
    s3: S3Server,
) -> None:
    url = s3.url("runs", retries=2)
    with runstore.open(url, durability="record", heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_outage")
        for i in range(5):
            run.append("steps", {"n": i})  # each one stored before append returns
        s3.stop()
        try:
            with pytest.raises(BackendUnavailableError) as info:
                run.append("steps", {"n": 5})
            assert info.value.code == "backend_unavailable"
            assert isinstance(info.value, ConnectionError)
            assert info.value.__cause__ is not None
        finally:
            s3.start()
        with runstore.open(url) as reader:
            steps = [r["n"] for r in reader.get_run("run_outage").read("steps")]
        assert steps[:5] == [0, 1, 2, 3, 4]
        run.finish()


def test_records_buffered_during_an_outage_are_written_when_the_server_is_back(
    s3: S3Server,
) -> None:
    url = s3.url("runs", retries=1)
    with runstore.open(url, heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_buffered")
        run.append("steps", {"n": 0})
        run.flush()
        s3.stop()
        try:
            run.append("steps", {"n": 1})  # acknowledged into the batch window
            with pytest.raises(BackendUnavailableError):
                run.flush()
        finally:
            s3.start()
        run.flush()
        assert [r["n"] for r in store.get_run("run_buffered").read("steps")] == [0, 1]
        run.finish()


def test_unreachable_endpoint_is_backend_unavailable() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the socket closes
    with (
        runstore.open(f"s3://any-bucket/x?endpoint_url=http://127.0.0.1:{port}&retries=1") as store,
        pytest.raises(BackendUnavailableError, match="unreachable"),
    ):
        store.list_runs()


def test_missing_bucket_is_not_found_naming_the_bucket(s3: S3Server) -> None:
    with (
        runstore.open(f"s3://no-such-bucket/runs?endpoint_url={s3.endpoint}") as store,
        pytest.raises(NotFoundError, match="bucket does not exist"),
    ):
        store.create_run(run_id="run_x")


# -- durability policies ----------------------------------------------------------------


def segment_keys(s3: S3Server, run_id: str) -> list[str]:
    return [k for k in s3.keys(f"runs/{run_id}/") if "/.segments/" in k]


def test_record_durability_stores_each_append_before_it_returns(s3: S3Server) -> None:
    with runstore.open(s3.url("runs"), durability="record", heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_rec")
        for i in range(3):
            run.append("steps", {"n": i})
            assert len(segment_keys(s3, "run_rec")) == i + 1


def test_batch_durability_writes_a_segment_every_n_records(s3: S3Server) -> None:
    with runstore.open(s3.url("runs", batch_records=10), heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_n")
        for i in range(25):
            run.append("steps", {"n": i})
        assert len(segment_keys(s3, "run_n")) == 2  # 20 stored, 5 in the window
        run.finish()
        assert len(list(store.get_run("run_n").read("steps"))) == 25


def test_batch_durability_writes_a_segment_after_the_interval(s3: S3Server) -> None:
    with runstore.open(s3.url("runs", batch_interval=0.2), heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_t")
        run.append("steps", {"n": 1})
        deadline = time.monotonic() + 5
        while not segment_keys(s3, "run_t") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(segment_keys(s3, "run_t")) == 1


def test_closing_the_store_writes_what_the_window_still_holds(s3: S3Server) -> None:
    with runstore.open(s3.url("runs"), heartbeat_interval=0) as store:
        store.create_run(run_id="run_close").append("steps", {"n": 1})
    with runstore.open(s3.url("runs")) as store:
        assert list(store.get_run("run_close").read("steps")) == [{"n": 1}]


def test_local_only_durability_is_refused(s3: S3Server) -> None:
    with runstore.open(s3.url("runs"), durability="fsync") as store:
        run = store.create_run(run_id="run_fsync")
        with pytest.raises(UnsupportedError, match="'batch'"):
            run.append("steps", {"n": 1})


def test_buffer_stays_within_one_batch_however_long_the_run(s3: S3Server) -> None:
    with runstore.open(s3.url("runs", batch_bytes=16384), heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_flat")
        run.append("steps", {"n": 0})
        writer = run.aio.core.writers["steps"]
        largest = 0
        for i in range(3000):
            run.append("steps", {"n": i, "pad": "x" * 100})
            largest = max(largest, writer.pending)  # type: ignore[attr-defined]
        assert largest < 16384 + 200
        run.finish()


# -- segments and compaction ----------------------------------------------------------


def read_from(store: runstore.Store, run_id: str, stream: str, offset: int) -> bytes:
    async def collect() -> bytes:
        return b"".join([c async for c in store.aio.log_backend.read_bytes(run_id, stream, offset)])

    return store.portal.call(collect())


def test_byte_offsets_stay_valid_across_compaction(s3: S3Server, store: runstore.Store) -> None:
    run = store.create_run(run_id="run_off")
    for i in range(10):
        run.append("steps", {"n": i})
        run.flush()  # ten segments
    live = [read_from(store, "run_off", "steps", offset) for offset in (0, 7, 40, 95)]
    run.finish()
    assert [read_from(store, "run_off", "steps", offset) for offset in (0, 7, 40, 95)] == live
    assert live[0].count(b"\n") == 10


def test_torn_last_segment_is_hidden_from_readers_and_repaired_by_the_next_writer(
    s3: S3Server, store: runstore.Store
) -> None:
    run = store.create_run(run_id="run_torn")
    run.append("steps", {"n": 1})
    run.flush()
    s3.client().put_object(
        Bucket=s3.bucket,
        Key="runs/run_torn/.segments/steps/0000000000000008.jsonl",
        Body=b'{"n":2}\n{"n":',
    )
    view = store.get_run("run_torn")
    assert list(view.read("steps")) == [{"n": 1}, {"n": 2}]
    assert view.torn_tails["steps"] == 5
    with runstore.open(s3.url("runs"), heartbeat_interval=0) as other:
        backend = backend_of(other)

        async def append_after_crash() -> None:
            writer = await backend.open_writer("run_torn", "steps")
            writer.write(b'{"n":3}\n')
            await writer.close()

        other.portal.call(append_after_crash())
    view = store.get_run("run_torn")
    assert list(view.read("steps")) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert view.torn_tails["steps"] == 0


def test_a_missing_segment_is_reported_as_corrupt(s3: S3Server, store: runstore.Store) -> None:
    run = store.create_run(run_id="run_gap")
    for i in range(3):
        run.append("steps", {"n": i})
        run.flush()
    s3.client().delete_object(
        Bucket=s3.bucket, Key="runs/run_gap/.segments/steps/0000000000000008.jsonl"
    )
    with pytest.raises(CorruptError, match="missing bytes 8-16"):
        list(store.get_run("run_gap").read("steps"))


def test_segments_left_behind_by_an_interrupted_compaction_are_not_read_twice(
    s3: S3Server, store: runstore.Store
) -> None:
    with store.create_run(run_id="run_left") as run:
        run.append("steps", {"n": 1})
        run.append("steps", {"n": 2})
    # compaction wrote steps.jsonl, then died before deleting its segment
    s3.client().put_object(
        Bucket=s3.bucket,
        Key="runs/run_left/.segments/steps/0000000000000000.jsonl",
        Body=b'{"n":1}\n{"n":2}\n',
    )
    assert list(store.get_run("run_left").read("steps")) == [{"n": 1}, {"n": 2}]
    store.portal.call(store.aio.log_backend.finalize("run_left"))
    assert not segment_keys(s3, "run_left")


def test_reopened_finished_stream_continues_after_the_canonical_file(
    s3: S3Server, store: runstore.Store
) -> None:
    with store.create_run(run_id="run_more") as run:
        run.append("steps", {"n": 1})
    backend = backend_of(store)

    async def append_more() -> None:
        writer = await backend.open_writer("run_more", "steps")
        writer.write(b'{"n":2}\n')
        await writer.close()
        await backend.finalize("run_more")

    store.portal.call(append_more())
    assert list(store.get_run("run_more").read("steps")) == [{"n": 1}, {"n": 2}]
    assert not segment_keys(s3, "run_more")


# -- artifacts ------------------------------------------------------------------------


def test_large_artifact_is_a_multipart_upload_verified_by_sha256(
    s3: S3Server, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with source.open("wb") as handle:
        for _ in range(12):
            handle.write(block)
    with runstore.open(s3.url("runs", part_size=5 << 20), heartbeat_interval=0) as store:
        with store.create_run(run_id="run_mpu") as run:
            ref = run.put_artifact("big.bin", source)
            assert run.put_artifact("big.bin", source) == ref  # identical: a no-op
            with pytest.raises(ConflictError):
                run.put_artifact("big.bin", source.read_bytes()[:-1] + b"!")
        head = s3.client().head_object(Bucket=s3.bucket, Key="runs/run_mpu/artifacts/big.bin")
        assert head["ETag"].endswith('-3"')  # three parts
        assert ref.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
        view = store.get_run("run_mpu")
        digest = hashlib.sha256()
        for chunk in view.open_artifact("big.bin", verify=True):
            digest.update(chunk)
        assert digest.hexdigest() == ref.sha256


def test_100_mb_artifact_is_streamed_without_loading_it_into_memory(
    s3: S3Server, tmp_path: Path
) -> None:
    source = tmp_path / "100mb.bin"
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with source.open("wb") as handle:
        for _ in range(100):
            handle.write(block)
            digest.update(block)
    result = run_python(
        """
        import json, resource, sys
        from pathlib import Path
        import runstore
        def peak_mb():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with runstore.open(sys.argv[1], heartbeat_interval=0) as store:
            with store.create_run(run_id="run_big") as run:
                run.put_artifact("warmup.bin", b"x" * (1 << 20))
                before = peak_mb()
                ref = run.put_artifact("exports/100mb.bin", Path(sys.argv[2]), kind="export")
                after = peak_mb()
        print(json.dumps({"sha256": ref.sha256, "size": ref.size, "growth_mb": after - before}))
        """,
        s3.url("runs"),
        str(source),
        timeout=240,
    )
    report = json.loads(result.stdout)
    assert (report["sha256"], report["size"]) == (digest.hexdigest(), 100 << 20)
    assert report["growth_mb"] < 60, report  # parts in flight, never the whole file
    head = s3.client().head_object(Bucket=s3.bucket, Key="runs/run_big/artifacts/exports/100mb.bin")
    assert head["ContentLength"] == 100 << 20


# -- run index --------------------------------------------------------------------------


def test_listing_many_runs_reads_only_index_objects_that_changed(s3: S3Server) -> None:
    url = s3.url("runs", index_compact_after=10)
    with runstore.open(url) as store:
        backend = backend_of(store)

        async def create(n: int) -> None:
            run = await store.aio.create_run(f"run_{n:04d}", sut_name="shop")
            await run.finish()

        async def create_all() -> None:
            await asyncio.gather(*(create(n) for n in range(40)))

        store.portal.call(create_all())
        assert len(store.list_runs()) == 40  # reads every index object, saves a snapshot
    with runstore.open(url) as fresh:
        requests = count_requests(fresh)
        assert len(fresh.list_runs(status="succeeded")) == 40
        assert requests == {"ListObjectsV2": 1, "GetObject": 1}  # listing + snapshot
        store = fresh
        backend = backend_of(store)
        store.get_run("run_0007")
        requests.clear()
        store.portal.call(backend.delete_run("run_0003"))
        requests.clear()
        records = store.list_runs()
        assert len(records) == 39
        assert requests["GetObject"] <= 1


def test_index_entry_is_never_replaced_by_an_older_revision(
    s3: S3Server, store: runstore.Store
) -> None:
    run = store.create_run(run_id="run_rev", sut_name="new")
    run.start()
    backend = backend_of(store)
    stale = RunRecord.build(run.manifest.model_copy(update={"sut_name": "old"}), run.state)
    fresh_store = runstore.open(store.url)
    try:
        store.portal.call(backend._write_index("run_rev", 0, stale))
        other = backend_of(fresh_store)
        fresh_store.portal.call(other._write_index("run_rev", 0, stale))
    finally:
        fresh_store.close()
    (record,) = store.list_runs()
    assert (record.sut_name, record.status) == ("new", "running")


def test_rebuild_index_restores_lost_index_objects(s3: S3Server, store: runstore.Store) -> None:
    with store.create_run(run_id="run_idx", sut_name="shop"):
        pass
    s3.client().delete_object(Bucket=s3.bucket, Key="runs/.runstore/records/run_idx.json")
    assert store.list_runs() == []
    assert store.portal.call(backend_of(store).rebuild_index()) == 1
    (record,) = store.list_runs()
    assert (record.run_id, record.status, record.sut_name) == ("run_idx", "succeeded", "shop")
