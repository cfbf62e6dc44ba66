"""Figures for docs/backends/postgres.md: the postgres backend beside the local one, one run.

    .venv/bin/python plugins/runstore-postgres/benchmarks/postgres.py [--runs 100000]

Starts a throwaway PostgreSQL server (durable settings: fsync on) on 127.0.0.1.
Prints appends/s under ``record`` and ``batch`` (one producer, sync API),
create_run/s, and the first page of a metadata-filtered ``list_runs`` at
``--runs`` runs (inserted through the backend, 8 at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

import runstore
from runstore.model.run import RunManifest, RunState
from runstore.registry.config import parse_target
from runstore.spi.backends import Durability
from runstore_postgres.backend import PostgresBackend
from runstore_postgres.testing import PostgresServer


def appends(url: str, durability: Durability | None, count: int) -> float:
    with runstore.open(url, durability=durability) as store:
        run = store.create_run()
        record = {"instance_id": "inst_001", "step_name": "login", "observation": {"x": 1}}
        start = time.perf_counter()
        for _ in range(count):
            run.append("steps", record)
        run.flush()
        elapsed = time.perf_counter() - start
        run.finish()
    return count / elapsed


def creates(url: str, count: int) -> float:
    with runstore.open(url) as store:
        start = time.perf_counter()
        for _ in range(count):
            store.create_run(sut_name="bench", metadata={"project": "p"})
        return count / (time.perf_counter() - start)


async def fill(url: str, runs: int) -> None:
    backend = PostgresBackend.from_target(parse_target(url + "&pool_max_size=8")[1])
    base = datetime(2026, 1, 1, tzinfo=UTC)

    async def one(n: int) -> None:
        when = base + timedelta(seconds=n)
        project = "rare" if n % 1000 == 0 else f"p{n % 50}"
        manifest = RunManifest(
            run_id=f"run_{n:07d}", timestamp=when, metadata={"project": project, "n": n}
        )
        await backend.create_run(
            manifest, RunState(run_id=manifest.run_id, created_at=when, updated_at=when)
        )

    for start in range(0, runs, 8):
        await asyncio.gather(*(one(n) for n in range(start, min(start + 8, runs))))
    await backend.aclose()


def listing(url: str, where: str) -> float:
    with runstore.open(url) as store:
        store.list_runs(where=where, limit=50)  # warm the pool and the cache
        times = []
        for _ in range(20):
            start = time.perf_counter()
            store.list_runs(where=where, limit=50)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    with PostgresServer() as server, tempfile.TemporaryDirectory() as tmp:
        pg = server.url(schema="bench")
        local = f"{tmp}/runs"
        print(f"{'':32}{'postgres':>12}{'local':>12}")
        n = args.records
        print(
            f"{'appends/s record (1 producer)':32}{appends(pg, None, n // 10):12.0f}"
            f"{appends(local, None, n):12.0f}  (local: flush)"
        )
        print(
            f"{'appends/s batch (1 producer)':32}{appends(pg, 'batch', n):12.0f}"
            f"{appends(local, 'fsync', n // 10):12.0f}  (local: fsync)"
        )
        print(f"{'create_run/s':32}{creates(pg, 300):12.0f}{creates(local, 300):12.0f}")
        many = server.url(schema="many")
        start = time.perf_counter()
        asyncio.run(fill(many, args.runs))
        print(f"inserted {args.runs} runs in {time.perf_counter() - start:.0f} s")
        for where in (
            "metadata.project = 'rare'",
            "metadata.project = 'p7'",
            "metadata.n >= 99990",
        ):
            print(f"first page of {where!r}: {listing(many, where):.1f} ms")


if __name__ == "__main__":
    main()
