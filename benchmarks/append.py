"""Append path against the raw limit: orjson + write + flush per line, same records.

Each round measures the raw loop and runstore's append on the same records in
the same process, interleaved; the table gives median throughputs and the
median ratio (runstore / raw).

    python benchmarks/append.py [--records 50000] [--rounds 7] [--fsync] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from _harness import Row, interleaved, parser, run_main

import runstore

PRODUCERS = 64


def make_records(n: int) -> list[dict[str, Any]]:
    """~300-byte step records, like a harness writes."""
    return [
        {
            "instance_id": f"inst_{i % 100:03d}",
            "step_name": "checkout",
            "step_index": i,
            "observation": {"status": 200, "latency_ms": 12.5 + i % 7, "items": [1, 2, 3]},
            "note": "x" * 150,
        }
        for i in range(n)
    ]


def raw_loop(path: Path, records: list[dict[str, Any]], *, fsync: bool = False) -> float:
    start = time.perf_counter()
    with path.open("ab") as handle:
        for record in records:
            handle.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            handle.flush()
            if fsync:
                os.fdatasync(handle.fileno())
    return len(records) / (time.perf_counter() - start)


def sync_append(root: Path, records: list[dict[str, Any]]) -> float:
    with runstore.open(str(root), heartbeat_interval=0) as store:
        run = store.create_run()
        run.append("steps", records[0])  # open the stream outside the timed loop
        append = run.append
        start = time.perf_counter()
        for record in records:
            append("steps", record)
        elapsed = time.perf_counter() - start
        run.finish()
    return len(records) / elapsed


async def _async_append(
    root: Path, records: list[dict[str, Any]], producers: int, durability: Any
) -> float:
    store = runstore.aio.open(str(root), heartbeat_interval=0, durability=durability)
    run = await store.create_run()
    await run.append("steps", records[0])
    share = len(records) // producers

    async def produce(part: list[dict[str, Any]]) -> None:
        for record in part:
            await run.append("steps", record)

    start = time.perf_counter()
    await asyncio.gather(*(produce(records[i * share : (i + 1) * share]) for i in range(producers)))
    elapsed = time.perf_counter() - start
    await run.finish()
    await store.aclose()
    return share * producers / elapsed


def main(args: argparse.Namespace) -> list[Row]:
    records = make_records(args.records)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)

        def raw(i: int) -> float:
            return raw_loop(base / f"raw{i}.jsonl", records)

        cases: list[tuple[str, float, Any]] = [
            ("sync append / raw loop", 0.6, lambda i: sync_append(base / f"s{i}", records)),
            (
                "async append, 1 producer / raw loop",
                0.5,
                lambda i: asyncio.run(_async_append(base / f"a{i}", records, 1, None)),
            ),
            (
                f"async append, {PRODUCERS} producers / raw loop",
                0.5,
                lambda i: asyncio.run(_async_append(base / f"p{i}", records, PRODUCERS, None)),
            ),
        ]
        for name, goal, subject in cases:
            b, m, ratio = interleaved(args.rounds, raw, subject)
            rows.append(Row(name, b, m, ratio, goal))
        if args.fsync:
            few = records[: max(PRODUCERS * 50, args.records // 10)]
            b, m, ratio = interleaved(
                max(3, args.rounds // 2),
                lambda i: raw_loop(base / f"f{i}.jsonl", few, fsync=True),
                lambda i: asyncio.run(_async_append(base / f"fs{i}", few, PRODUCERS, "fsync")),
            )
            rows.append(Row(f"fsync, {PRODUCERS} producers / fsync per record", b, m, ratio, 10.0))
    return rows


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--records", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--fsync", action="store_true", help="also measure durability='fsync'")
    sys.exit(run_main(main, p.parse_args()))
