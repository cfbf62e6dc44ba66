"""Append path against the raw limit: orjson + write + flush per line, same records.

Each round measures the raw loop and runstore's append on the same records in
the same process, interleaved; the report gives the median throughput of each
and their ratio (runstore / raw). Ratios, not absolute times, are comparable
across machines and runs.

    python benchmarks/append.py [--records 50000] [--rounds 7] [--fsync]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

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


def raw_loop(path: Path, records: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    with path.open("ab") as handle:
        for record in records:
            handle.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            handle.flush()
    return len(records) / (time.perf_counter() - start)


def raw_fsync_loop(path: Path, records: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    with path.open("ab") as handle:
        for record in records:
            handle.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            handle.flush()
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


def async_append(
    producers: int, durability: Any = None
) -> Callable[[Path, list[dict[str, Any]]], float]:
    def bench(root: Path, records: list[dict[str, Any]]) -> float:
        return asyncio.run(_async_append(root, records, producers, durability))

    return bench


def measure(
    name: str,
    baseline: Callable[[Path, list[dict[str, Any]]], float],
    subject: Callable[[Path, list[dict[str, Any]]], float],
    records: list[dict[str, Any]],
    rounds: int,
    goal: float,
) -> dict[str, Any]:
    raw, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            raw.append(baseline(Path(tmp) / f"raw{i}.jsonl", records))
            ours.append(subject(Path(tmp) / f"store{i}", records))
    row: dict[str, Any] = {
        "case": name,
        "raw_per_s": round(statistics.median(raw)),
        "runstore_per_s": round(statistics.median(ours)),
        "ratio": round(statistics.median(o / r for o, r in zip(ours, raw, strict=True)), 3),
        "goal": goal,
    }
    row["met"] = row["ratio"] >= goal
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--fsync", action="store_true", help="also measure durability='fsync' group commit"
    )
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    args = parser.parse_args(argv)
    records = make_records(args.records)
    rows = [
        measure("sync append", raw_loop, sync_append, records, args.rounds, 0.6),
        measure("async append, 1 producer", raw_loop, async_append(1), records, args.rounds, 0.5),
        measure(
            f"async append, {PRODUCERS} producers",
            raw_loop,
            async_append(PRODUCERS),
            records,
            args.rounds,
            0.5,
        ),
    ]
    if args.fsync:
        few = records[: max(PRODUCERS * 50, args.records // 10)]
        rows.append(
            measure(
                f"fsync, {PRODUCERS} producers vs fsync per record",
                raw_fsync_loop,
                async_append(PRODUCERS, "fsync"),
                few,
                max(3, args.rounds // 2),
                10.0,
            )
        )
    if args.json:
        for row in rows:
            print(orjson.dumps(row).decode())
    else:
        print(f"{'case':<48} {'raw/s':>10} {'runstore/s':>11} {'ratio':>7} {'goal':>6}")
        for row in rows:
            mark = "ok" if row["met"] else "MISSED"
            print(
                f"{row['case']:<48} {row['raw_per_s']:>10} {row['runstore_per_s']:>11} "
                f"{row['ratio']:>7} {row['goal']:>6} {mark}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
