"""runstore on S3 (moto's server in a child process, over HTTP on 127.0.0.1).

Three measurements, each against a baseline taken in the same run:

* PUT requests per 10 000 appended records at the default (``batch``) policy:
  segment writes plus compaction, and the whole run (create .. finish).
  Baseline: one PUT per record (``durability="record"``). Goal: <= 20.
* 100 MB artifact upload throughput, ``run.put_artifact(path)`` (streamed,
  hashed, create-only multipart) vs a raw ``s3fs.S3FileSystem.put_file`` of the
  same file, interleaved rounds. Goal: ratio >= 0.9.
* Requests for ``list_runs`` over N runs (default 10 000) from a fresh store,
  after the index snapshot exists. Baseline: one GET per run. Goal: a handful
  (N/1000 listing pages + 2).

    python benchmarks/s3.py [--records 10000] [--mb 100] [--rounds 3] [--runs 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _harness import Row, interleaved, parser, run_main

import runstore
from runstore.model.run import RunManifest, RunRecord, RunState, utcnow
from runstore_fsspec.backend import FsspecBackend
from runstore_fsspec.testing import DUMMY_CREDENTIALS, S3Server

BUCKET = "runstore-bench"


def count_requests(store: runstore.Store) -> Counter[str]:
    """HTTP methods the store sends from now on (botocore's ``before-send`` event)."""
    counts: Counter[str] = Counter()

    def record(request: Any, **_: Any) -> None:
        counts[request.method] += 1

    async def register() -> None:
        backend = store.aio.state_backend
        assert isinstance(backend, FsspecBackend)
        client = await backend.objects._s3()  # type: ignore[attr-defined]
        client.meta.events.register("before-send.s3", record)

    store.portal.call(register())
    return counts


def bench_puts(s3: S3Server, records: int) -> list[Row]:
    record = {"instance_id": "inst_001", "step_name": "checkout", "observation": "x" * 220}
    url = s3.url("puts")
    with runstore.open(url, heartbeat_interval=0) as store:
        counts = count_requests(store)
        run = store.create_run(run_id="run_puts")
        run.start()
        before = counts["PUT"]
        for _ in range(records):
            run.append("steps", record)
        run.flush()
        appends = counts["PUT"] - before
        finishing = counts["PUT"]
        run.finish()
        compaction = counts["PUT"] - finishing - 3  # minus summary, state and index
        total = counts["PUT"]
    per_10k = 10_000 / records
    streams = (appends + compaction) * per_10k
    print(
        f"{records} records: {appends} segment PUTs, {compaction} compaction PUT(s), "
        f"{total} PUTs for the whole run",
        file=sys.stderr,
    )
    return [
        Row(
            "PUTs per 10k records: segments + compaction",
            baseline=10_000,
            measured=streams,
            ratio=streams,
            goal=20,
            unit="",
            higher_is_better=False,
        ),
        Row(
            "PUTs per 10k records: whole run (create..finish)",
            baseline=10_000 + 8,
            measured=total * per_10k,
            ratio=total * per_10k,
            goal=20,
            unit="",
            higher_is_better=False,
        ),
    ]


def bench_artifact(s3: S3Server, megabytes: int, rounds: int) -> list[Row]:
    import s3fs

    source = Path(tempfile.mkdtemp()) / "artifact.bin"
    block = os.urandom(1 << 20)
    with source.open("wb") as handle:
        for _ in range(megabytes):
            handle.write(block)
    raw = s3fs.S3FileSystem(**s3.storage_options(), skip_instance_cache=True)
    url = s3.url("artifacts")
    try:
        with runstore.open(url, heartbeat_interval=0) as store:
            run = store.create_run(run_id="run_artifacts")

            def baseline(i: int) -> float:
                start = time.perf_counter()
                raw.put_file(str(source), f"{s3.bucket}/raw/{i}.bin")
                return megabytes / (time.perf_counter() - start)

            def subject(i: int) -> float:
                start = time.perf_counter()
                run.put_artifact(f"big_{i}.bin", source)
                return megabytes / (time.perf_counter() - start)

            base, ours, ratio = interleaved(rounds, baseline, subject)
            run.finish()
    finally:
        source.unlink()
    return [
        Row(
            f"{megabytes} MB artifact upload vs s3fs put_file",
            base,
            ours,
            ratio,
            goal=0.9,
            unit="MB/s",
        )
    ]


def bench_listing(s3: S3Server, runs: int) -> list[Row]:
    url = s3.url("index")
    with runstore.open(url, heartbeat_interval=0) as store:
        backend = store.aio.state_backend
        assert isinstance(backend, FsspecBackend)
        now = utcnow()

        async def populate() -> None:
            # index objects only (one PUT per run): what list_runs reads
            limit = asyncio.Semaphore(32)

            async def one(n: int) -> None:
                run_id = f"run_{n:06d}"
                manifest = RunManifest(run_id=run_id, timestamp=now, sut_name=f"sut{n % 10}")
                state = RunState(run_id=run_id, status="succeeded", created_at=now, updated_at=now)
                async with limit:
                    await backend._write_index(run_id, 1, RunRecord.build(manifest, state))

            await asyncio.gather(*(one(n) for n in range(runs)))

        start = time.perf_counter()
        store.portal.call(populate())
        print(
            f"{runs} index objects written in {time.perf_counter() - start:.1f} s", file=sys.stderr
        )
        start = time.perf_counter()
        assert len(store.list_runs()) == runs  # reads every object once, saves the snapshot
        print(f"first listing (cold): {time.perf_counter() - start:.1f} s", file=sys.stderr)
    with runstore.open(url, heartbeat_interval=0) as fresh:
        counts = count_requests(fresh)
        start = time.perf_counter()
        assert len(fresh.list_runs(status="succeeded", limit=20)) == 20
        elapsed = time.perf_counter() - start
    requests = sum(counts.values())
    print(
        f"listing {runs} runs from a fresh store: {requests} requests, {elapsed:.2f} s",
        file=sys.stderr,
    )
    return [
        Row(
            f"requests for list_runs over {runs} runs",
            baseline=runs,
            measured=requests,
            ratio=requests,
            goal=-(-runs // 1000) + 2,
            unit="",
            higher_is_better=False,
        )
    ]


def main(args: argparse.Namespace) -> list[Row]:
    os.environ.update({k: os.environ.get(k, v) for k, v in DUMMY_CREDENTIALS.items()})
    rows: list[Row] = []
    # a child process: moto's own interpreter does not share our GIL
    with S3Server(bucket=BUCKET, mode="process") as s3:
        s3.create_bucket()
        rows += bench_puts(s3, args.records)
        rows += bench_artifact(s3, args.mb, args.rounds)
        if args.runs:
            rows += bench_listing(s3, args.runs)
    return rows


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument("--records", type=int, default=10_000)
    cli.add_argument("--mb", type=int, default=100)
    cli.add_argument("--rounds", type=int, default=3)
    cli.add_argument("--runs", type=int, default=10_000, help="0 skips the listing benchmark")
    sys.exit(run_main(main, cli.parse_args()))
