"""runstore.analysis against reading the same JSONL files raw, side by side.

A local store of R runs x I instance records (written through the API first),
then, alternating in each round:

* ``instances_df(store)`` against ``pyarrow.json.read_json`` of every run's
  ``instances.jsonl`` concatenated (records per second; goal: >= 0.5);
* the same against DuckDB's ``read_json`` over the same files (the json
  extension is built into the wheel), when DuckDB is installed;
* ``sql("SELECT status, count(*) FROM instances GROUP BY ALL")`` against
  DuckDB's ``read_json`` with the same query.

Peak memory: each reader runs in a fresh interpreter and reports its peak
RSS above the interpreter's start, next to the size of the Arrow table it
built and the bytes of JSONL it read. Bounded means the peak follows the
table, not the store: reading 4x the runs with ``columns=["status"]``
(a small table) must not cost 4x the memory.

    python benchmarks/analysis.py [--runs 200] [--instances 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.json as pajson  # type: ignore[import-untyped]
from _harness import Row, interleaved, parser, run_main

import runstore
from runstore.analysis import instances_df, sql

BY_STATUS = "SELECT status, count(*) AS n FROM instances GROUP BY ALL"


def build(root: Path, runs: int, instances: int) -> str:
    url = str(root / "runs")
    with runstore.open(url) as store:
        for r in range(runs):
            with store.create_run(f"run_{r:04d}", sut_name="bench", seed=r) as run:
                for n in range(instances):
                    run.append(
                        "instances",
                        {
                            "instance_id": f"inst_{n:05d}",
                            "status": "failed" if (n * 7 + r) % 11 == 0 else "passed",
                            "scenario_id": f"scenario_{n % 8}",
                            "duration_ms": 20 + (n * r) % 300,
                            "trace_id": f"{r:04x}{n:08x}",
                            "detail": {"worker": n % 4, "attempt": 1, "host": "ci-1"},
                        },
                    )
    return url


def files(url: str) -> list[Path]:
    return sorted(Path(url).glob("*/instances.jsonl"))


def raw_pyarrow(paths: list[Path]) -> pa.Table:
    return pa.concat_tables([pajson.read_json(p) for p in paths], promote_options="permissive")


def raw_duckdb(url: str, query: str | None = None) -> pa.Table:
    import duckdb

    con = duckdb.connect()
    glob = str(Path(url) / "*" / "instances.jsonl")
    source = f"read_json('{glob}', format='newline_delimited', filename=true)"
    text = query.replace("FROM instances", f"FROM {source}") if query else f"SELECT * FROM {source}"
    result: pa.Table = con.sql(text).to_arrow_table()
    con.close()
    return result


def timed(rows: int, work: object) -> float:
    """Records per second of ``work()``."""
    assert callable(work)
    start = time.perf_counter()
    work()
    return rows / (time.perf_counter() - start)


_CHILD = """
import json, os, sys, threading, time
import pyarrow as pa, pyarrow.json as pajson
from pathlib import Path
import runstore
from runstore.analysis import instances_df

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


peak, done = [0], threading.Event()


def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)


url, how, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
where = None if limit == 0 else f"run_id < 'run_{limit:04d}'"
store = runstore.open(url)
store.list_runs(limit=1)  # the loop thread and the backend are up before measuring
before = rss()
sampler = threading.Thread(target=sample)
sampler.start()
if how == "pyarrow":
    paths = sorted(Path(url).glob("*/instances.jsonl"))[: limit or None]
    table = pa.concat_tables([pajson.read_json(p) for p in paths])
else:
    columns = ["status"] if how == "status" else None
    table = instances_df(store, where=where, columns=columns)
done.set()
sampler.join()
peak[0] = max(peak[0], rss())
print(json.dumps({"peak_mb": (peak[0] - before) / 2**20, "table_mb": table.nbytes / 2**20,
                  "rows": table.num_rows}))
"""


def peak_memory(url: str, how: str, limit: int = 0) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, url, how, str(limit)],
        capture_output=True,
        check=True,
        timeout=600,
    )
    result: dict[str, float] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def main(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="rs-bench-analysis-") as tmp:
        start = time.perf_counter()
        url = build(Path(tmp), args.runs, args.instances)
        print(f"wrote {args.runs} x {args.instances} in {time.perf_counter() - start:.1f} s")
        paths = files(url)
        size = sum(p.stat().st_size for p in paths) / 2**20
        total = args.runs * args.instances
        print(f"{len(paths)} instances.jsonl files, {size:.1f} MiB")
        store = runstore.open(url)
        try:
            assert instances_df(store).num_rows == total
            b, m, ratio = interleaved(
                args.rounds,
                lambda _: timed(total, lambda: raw_pyarrow(paths)),
                lambda _: timed(total, lambda: instances_df(store)),
            )
            rows.append(Row("instances_df / pyarrow.json.read_json", b, m, ratio, 0.5))
            try:
                import duckdb  # noqa: F401
            except ImportError:
                pass
            else:
                b, m, ratio = interleaved(
                    args.rounds,
                    lambda _: timed(total, lambda: raw_duckdb(url)),
                    lambda _: timed(total, lambda: instances_df(store)),
                )
                rows.append(Row("instances_df / duckdb read_json", b, m, ratio, 0.5))
                b, m, ratio = interleaved(
                    args.rounds,
                    lambda _: timed(total, lambda: raw_duckdb(url, BY_STATUS)),
                    lambda _: timed(total, lambda: sql(BY_STATUS, store)),
                )
                rows.append(Row("sql(GROUP BY status) / duckdb read_json", b, m, ratio, 0.5))
        finally:
            store.close()
        quarter = max(1, args.runs // 4)
        raw = peak_memory(url, "pyarrow")
        full = peak_memory(url, "all")
        small = peak_memory(url, "status", quarter)
        large = peak_memory(url, "status")
        print(
            f"peak RSS above start (MiB): pyarrow.json {raw['peak_mb']:.0f} "
            f"(table {raw['table_mb']:.0f}); instances_df {full['peak_mb']:.0f} "
            f"(table {full['table_mb']:.0f}); columns=['status'] over {quarter} runs "
            f"{small['peak_mb']:.0f}, over {args.runs} runs {large['peak_mb']:.0f} "
            f"(table {large['table_mb']:.1f}); JSONL read {size:.0f}"
        )
        rows.append(
            Row(
                "peak RSS instances_df / pyarrow.json (MiB)",
                raw["peak_mb"],
                full["peak_mb"],
                full["peak_mb"] / max(raw["peak_mb"], 1.0),
                None,
                "MB",
                False,
            )
        )
        rows.append(
            Row(
                f"peak RSS status-only, {args.runs} / {quarter} runs",
                small["peak_mb"],
                large["peak_mb"],
                large["peak_mb"] / max(small["peak_mb"], 1.0),
                2.0,
                "MB",
                False,
            )
        )
    return rows


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--instances", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    sys.exit(run_main(main, p.parse_args()))
