"""Stateless callers: a store opened for every call, against plain files doing the same work.

A pipeline that opens the store, resumes its run, writes and closes on every
call (short-lived event loops, serverless handlers) pays for opening each
time. Cases, each timed side by side with its plain-file baseline:

* open, resume, append one record, close, N times (baseline: open the JSONL
  file, append + flush one line, close; and, doing the same work as runstore's
  one-owner rule, the same with a state file written to a temp file and
  renamed into place twice a call: claim, release; the goal is on this one);
* create a run with its state, M times (baseline: a directory, a manifest and
  a state file, each written to a temp file and renamed into place), as one
  ``create_run(state=...)`` (the same work; the goal) and as ``create_run()``
  then ``set_state()`` (two state writes);
* a second ``runstore.open()`` + ``close()`` (absolute, in ms: goal <= 1 ms).

It also prints ``import runstore`` in a fresh interpreter (absolute, in ms).

    python benchmarks/stateless.py [--calls 300] [--runs 50] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import Row, interleaved, parser, run_main

import runstore

RECORD = {"level": "info", "message": "phase done", "phase": "translate", "n": 1}


def plain_appends(root: Path, calls: int) -> float:
    path = root / "run" / "logs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for _ in range(calls):
        with path.open("ab") as handle:
            handle.write(json.dumps(RECORD).encode() + b"\n")
            handle.flush()
    return time.perf_counter() - start


def plain_owned_appends(root: Path, calls: int) -> float:
    path = root / "run" / "logs.jsonl"
    state = root / "run" / "state.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for n in range(calls):
        _atomic_write(state, json.dumps({"owner": "me", "revision": 2 * n}).encode())
        with path.open("ab") as handle:
            handle.write(json.dumps(RECORD).encode() + b"\n")
            handle.flush()
        _atomic_write(state, json.dumps({"owner": None, "revision": 2 * n + 1}).encode())
    return time.perf_counter() - start


def stateless_appends(root: Path, calls: int) -> float:
    url = str(root / "runs")
    with runstore.open(url) as store:
        store.create_run(run_id="run_stateless").start()
    start = time.perf_counter()
    for _ in range(calls):
        with runstore.open(url) as store:
            store.resume_run("run_stateless").append("logs", RECORD)
    return time.perf_counter() - start


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def runstore_creates_with_state(root: Path, runs: int) -> float:
    with runstore.open(str(root / "runs"), heartbeat_interval=0) as store:
        start = time.perf_counter()
        for _ in range(runs):
            store.create_run(state={"phase": "start", "done": 0})
        return time.perf_counter() - start


def plain_creates(root: Path, runs: int) -> float:
    start = time.perf_counter()
    for n in range(runs):
        run = root / f"run_{n:03d}"
        run.mkdir(parents=True)
        _atomic_write(run / "manifest.json", json.dumps({"run_id": run.name}).encode())
        _atomic_write(run / "state.json", json.dumps({"phase": "start", "done": 0}).encode())
    return time.perf_counter() - start


def runstore_creates(root: Path, runs: int) -> float:
    with runstore.open(str(root / "runs"), heartbeat_interval=0) as store:
        start = time.perf_counter()
        for _ in range(runs):
            store.create_run().set_state({"phase": "start", "done": 0})
        return time.perf_counter() - start


def second_open_ms(root: Path) -> float:
    url = str(root / "runs")
    runstore.open(url).close()
    times = []
    for _ in range(30):
        start = time.perf_counter()
        runstore.open(url).close()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def import_ms() -> float:
    code = "import time; t = time.perf_counter(); import runstore; print(time.perf_counter() - t)"
    times = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout)
        for _ in range(5)
    ]  # fmt: skip
    return statistics.median(times) * 1000


def main(args: argparse.Namespace) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        b, m, ratio = interleaved(
            args.rounds,
            lambda i: plain_appends(base / f"pa{i}", args.calls),
            lambda i: stateless_appends(base / f"sa{i}", args.calls),
        )
        rows.append(
            Row(
                f"open+resume+append+close x{args.calls} / plain append",
                b,
                m,
                ratio,
                None,
                "s",
                False,
            )
        )
        b, m, ratio = interleaved(
            args.rounds,
            lambda i: plain_owned_appends(base / f"po{i}", args.calls),
            lambda i: stateless_appends(base / f"so{i}", args.calls),
        )
        rows.append(Row("  same / plain doing the same work", b, m, ratio, 3.0, "s", False))
        b, m, ratio = interleaved(
            args.rounds,
            lambda i: plain_creates(base / f"pc{i}", args.runs),
            lambda i: runstore_creates_with_state(base / f"rs{i}", args.runs),
        )
        rows.append(Row(f"create_run(state=) x{args.runs} / plain", b, m, ratio, 3.0, "s", False))
        b, m, ratio = interleaved(
            args.rounds,
            lambda i: plain_creates(base / f"pc2{i}", args.runs),
            lambda i: runstore_creates(base / f"rc{i}", args.runs),
        )
        rows.append(Row("  create_run() + set_state() / plain", b, m, ratio, None, "s", False))
        opened = second_open_ms(base / "open")
        rows.append(Row("second open + close (ms)", 1.0, opened, opened, 1.0, "ms", False))
        imported = import_ms()
        rows.append(Row("import runstore (ms)", 1.0, imported, imported, None, "ms", False))
    return rows


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    sys.exit(run_main(main, p.parse_args()))
