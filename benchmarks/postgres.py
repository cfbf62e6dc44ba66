"""runstore-postgres beside the local backend, in one run (issue 18).

Starts a throwaway PostgreSQL server (``initdb`` + ``pg_ctl`` on 127.0.0.1,
PostgreSQL's durable defaults: fsync on) and a local store in a temporary
folder, and measures each pair in the same process:

* appends/s, one producer (sync API): postgres ``record`` against local
  ``flush``; postgres ``batch`` against local ``fsync``;
* appends/s, 8 producers (async API, one run each, ``record``): without and
  with NOTIFY (each commit notifies followers; PostgreSQL serialises the
  commits of notifying transactions);
* ``create_run``/s: local against postgres;
* the first page (50) of ``list_runs(where=...)`` at ``--runs`` runs, against
  the reference semantics in memory over the same records (goal: <= 20 ms);
* ``tail -f`` latency, from ``append`` to a follower in another store seeing
  the record: polling (every 0.5 s: local, and postgres with ``notify=false``)
  against postgres LISTEN/NOTIFY. Appends come at random moments, so a
  poller's wait is spread over its interval.

    .venv/bin/python benchmarks/postgres.py [--runs 100000] [--records 20000] [--tail 20]
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from _harness import Row, parser, run_main

import runstore
import runstore.aio
from runstore.model.run import RunManifest, RunState
from runstore.registry.config import parse_target
from runstore.spi.backends import Durability, RunQuery
from runstore_postgres.backend import PostgresBackend
from runstore_postgres.testing import PostgresServer

RECORD = {"instance_id": "inst_001", "step_name": "login", "observation": {"x": 1}}
POLL = 0.5


def appends(url: str, durability: Durability | None, count: int) -> float:
    with runstore.open(url, durability=durability) as store:
        run = store.create_run()
        start = time.perf_counter()
        for _ in range(count):
            run.append("steps", RECORD)
        run.flush()
        elapsed = time.perf_counter() - start
        run.finish()
    return count / elapsed


def concurrent_appends(url: str, producers: int, each: int) -> float:
    async def produce() -> float:
        async with runstore.aio.open(url) as store:
            runs = [await store.create_run() for _ in range(producers)]

            async def one(run: runstore.aio.AsyncRun) -> None:
                for _ in range(each):
                    await run.append("steps", RECORD)

            start = time.perf_counter()
            await asyncio.gather(*(one(run) for run in runs))
            elapsed = time.perf_counter() - start
            for run in runs:
                await run.finish()
        return producers * each / elapsed

    return asyncio.run(produce())


def creates(url: str, count: int) -> float:
    with runstore.open(url) as store:
        start = time.perf_counter()
        for _ in range(count):
            store.create_run(sut_name="bench", metadata={"project": "p"})
        return count / (time.perf_counter() - start)


async def fill(url: str, runs: int) -> None:
    # Commits without waiting for the WAL flush: only the filling is sped up.
    options = quote("-c synchronous_commit=off")
    backend = PostgresBackend.from_target(
        parse_target(f"{url}&pool_max_size=8&options={options}")[1]
    )
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


def listing(url: str, where: str) -> tuple[float, float]:
    """Median ms of the first page: pushed down, and the reference over every record."""
    with runstore.open(url) as store:
        store.list_runs(where=where, limit=50)  # warm the pool and the server's cache
        times = []
        for _ in range(20):
            start = time.perf_counter()
            store.list_runs(where=where, limit=50)
            times.append(time.perf_counter() - start)
        everything = list(store.list_runs())
        start = time.perf_counter()
        RunQuery(where=where, limit=50).apply(everything)
        reference = time.perf_counter() - start
    return statistics.median(times) * 1000, reference * 1000


def tail_latency(url: str, samples: int, seed: int) -> float:
    """Median ms from ``append`` to a follower (another store) seeing the record."""
    rng = random.Random(seed)
    seen: queue.Queue[float] = queue.Queue()
    with runstore.open(url) as writer_store:
        run = writer_store.create_run()
        ready = threading.Event()

        def follow() -> None:
            with runstore.open(url) as reader:
                view = reader.get_run(run.run_id)
                ready.set()
                for _ in view.read("steps", follow=True, poll_interval=POLL):
                    seen.put(time.perf_counter())

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        ready.wait()
        latencies = []
        for n in range(samples):
            time.sleep(rng.uniform(0, POLL))
            start = time.perf_counter()
            run.append("steps", {"n": n})
            latencies.append(seen.get(timeout=60) - start)
        run.finish()
        follower.join(60)
    return statistics.median(latencies) * 1000


def main(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    n = args.records
    with PostgresServer() as server, tempfile.TemporaryDirectory() as tmp:
        pg = server.url(schema="bench")
        local = f"{tmp}/runs"
        flush = appends(local, None, n)
        record = appends(pg, None, max(n // 20, 100))
        rows.append(
            Row(
                "appends/s, 1 producer: local flush | pg record",
                flush,
                record,
                record / flush,
                None,
            )
        )
        fsync = appends(local, "fsync", max(n // 20, 100))
        batch = appends(pg, "batch", n)
        rows.append(
            Row("appends/s, 1 producer: local fsync | pg batch", fsync, batch, batch / fsync, None)
        )
        each = max(n // 400, 20)
        quiet = concurrent_appends(server.url(schema="quiet", notify="false"), 8, each)
        loud = concurrent_appends(server.url(schema="loud"), 8, each)
        rows.append(
            Row(
                "appends/s, 8 producers, pg record: no NOTIFY | NOTIFY",
                quiet,
                loud,
                loud / quiet,
                None,
            )
        )
        local_creates, pg_creates = creates(local, 300), creates(pg, 300)
        rows.append(
            Row(
                "create_run/s: local | pg",
                local_creates,
                pg_creates,
                pg_creates / local_creates,
                None,
            )
        )
        polled_local = tail_latency(local, args.tail, seed=1)
        polled = tail_latency(server.url(schema="polled", notify="false"), args.tail, seed=1)
        notified = tail_latency(server.url(schema="notified"), args.tail, seed=1)
        for name, baseline in (("local poll", polled_local), ("pg poll", polled)):
            rows.append(
                Row(
                    f"tail -f latency: {name} {POLL} s | pg NOTIFY",
                    baseline,
                    notified,
                    notified / baseline,
                    goal=None,
                    unit="ms",
                    higher_is_better=False,
                )
            )
        if args.runs:
            many = server.url(schema="many")
            start = time.perf_counter()
            asyncio.run(fill(many, args.runs))
            print(
                f"inserted {args.runs} runs in {time.perf_counter() - start:.0f} s", file=sys.stderr
            )
            for where in (
                "metadata.project = 'rare'",
                "metadata.project = 'p7'",
                f"metadata.n >= {args.runs - 10}",
            ):
                pushed, reference = listing(many, where)
                rows.append(
                    Row(
                        f"first page, {where}: reference | pg",
                        reference,
                        pushed,
                        pushed / reference,
                        goal=None,
                        unit="ms",
                        higher_is_better=False,
                    )
                )
    return rows


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument("--runs", type=int, default=100_000, help="0 skips the listing benchmark")
    cli.add_argument("--records", type=int, default=20_000)
    cli.add_argument("--tail", type=int, default=20, help="records timed per tail-latency case")
    sys.exit(run_main(main, cli.parse_args()))
