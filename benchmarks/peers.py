"""runstore against its peers doing the same work, side by side in one process.

Each round runs one run per tool, in rotating order, with the same records and
the same artifact files; the table gives each peer's median cost (baseline
column) next to runstore's (runstore column) and the median of the per-round
ratios peer cost / runstore cost, i.e. how many times faster runstore is.

Work per run: ``--records`` step records (~300-byte dicts, the ones
``append.py`` uses) and ``--artifacts`` files of ``--artifact-kb`` KiB, each
already on disk, as a harness would have them.

How the work maps onto each tool:

========================  ==========================  ===================================
runstore (local backend)  MLflow file store           Sacred FileStorageObserver
========================  ==========================  ===================================
``create_run()``          ``mlflow.start_run()``      ``ex.run()`` (host info, observers)
``run.append("steps",     ``mlflow.log_metric(        ``_run.log_scalar("latency_ms",
record)`` per record:     "latency_ms", value,        value, step)`` per record: kept in
the whole record, on      step=i)`` per record: one   memory, written to metrics.json by
disk when it returns      number, on disk when it     the heartbeat (every 10 s) and at
                          returns (goal row)          the end; its cost here is the loop
                                                      plus the time spent in the
                                                      observer's ``log_metrics``
(same)                    ``mlflow.log_dict(batch,    (none)
                          "steps/NNNNNN.json")`` per
                          ``--batch`` records: the
                          whole records, one JSON
                          artifact per batch (no
                          goal: nothing is on disk
                          until a batch is full)
``run.put_artifact(name,  ``mlflow.log_artifact(      ``_run.add_artifact(path, name)``
path)`` (sha256 + copy)   path)`` (copy)              (copy, then run.json rewritten)
``run.finish()``          ``mlflow.end_run()``        return from the main function
========================  ==========================  ===================================

The goal (issue 9): runstore >= 50x faster per record than MLflow's file store,
measured as ``log_metric`` per record, the closest per-record equivalent of
``append`` (one durable write per record); it favours MLflow, which writes one
number where runstore writes the whole record. "whole run" rows time the run
from its creation to its end, all records and artifacts included.

MLflow 3 refuses the file store unless ``MLFLOW_ALLOW_FILE_STORE=true`` (it is
in maintenance mode; its advice is SQLite): this script sets it, and turns off
MLflow's telemetry. Logging is synchronous (MLflow's default).

The peers are not project dependencies: ``nox -s peers`` installs
``mlflow-skinny`` and ``sacred`` in its own environment and runs this script.
Run elsewhere without them, it prints a "skipped: install ..." row per missing
peer and exits 0.

    python benchmarks/peers.py [--records 2000] [--artifacts 20] [--artifact-kb 64]
                               [--batch 100] [--rounds 5] [--profile FILE]
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from _harness import Row, parser, run_main
from append import make_records

import runstore

os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

INSTALL = {"mlflow": "mlflow-skinny", "sacred": "sacred"}


@dataclass
class Sample:
    """Seconds spent by one tool in one run, by phase."""

    records: float = 0.0
    batches: float = 0.0
    artifacts: float = 0.0
    total: float = 0.0


@dataclass
class Work:
    records: list[dict[str, Any]]
    artifacts: list[Path]
    batch: int


@dataclass
class Tool:
    name: str
    run: Callable[[Work], Sample]
    samples: list[Sample] = field(default_factory=list)


def importable(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        print(
            f"peers.py: {module} is not importable ({exc}); skipped. "
            f"Install {INSTALL[module]} (nox -s peers does, in its own environment).",
            file=sys.stderr,
        )
        return None


def runstore_tool(store: runstore.Store) -> Callable[[Work], Sample]:
    def run(work: Work) -> Sample:
        sample = Sample()
        start = time.perf_counter()
        run = store.create_run()
        append = run.append
        append("steps", work.records[0])  # opens the stream: in "whole run" only
        t = time.perf_counter()
        for record in work.records[1:]:
            append("steps", record)
        sample.records = time.perf_counter() - t
        t = time.perf_counter()
        for path in work.artifacts:
            run.put_artifact(path.name, path)
        sample.artifacts = time.perf_counter() - t
        run.finish()
        sample.total = time.perf_counter() - start
        return sample

    return run


def mlflow_tool(mlflow: Any, root: Path) -> Callable[[Work], Sample]:
    mlflow.set_tracking_uri((root / "mlruns").as_uri())

    def run(work: Work) -> Sample:
        sample = Sample()
        start = time.perf_counter()
        mlflow.start_run()
        log_metric = mlflow.log_metric
        log_metric("latency_ms", 0.0, step=-1)
        t = time.perf_counter()
        for record in work.records[1:]:
            log_metric("latency_ms", record["observation"]["latency_ms"], step=record["step_index"])
        sample.records = time.perf_counter() - t
        t = time.perf_counter()
        for first in range(0, len(work.records), work.batch):
            mlflow.log_dict(work.records[first : first + work.batch], f"steps/{first:06d}.json")
        sample.batches = time.perf_counter() - t
        t = time.perf_counter()
        for path in work.artifacts:
            mlflow.log_artifact(str(path))
        sample.artifacts = time.perf_counter() - t
        mlflow.end_run()
        # log_dict is not part of runstore's work: leave it out of the whole run.
        sample.total = time.perf_counter() - start - sample.batches
        return sample

    return run


def sacred_tool(sacred: Any, root: Path) -> Callable[[Work], Sample]:
    sacred.SETTINGS.CAPTURE_MODE = "no"
    sacred.SETTINGS.DISCOVER_SOURCES = "none"
    sacred.SETTINGS.DISCOVER_DEPENDENCIES = "none"
    sacred.SETTINGS.HOST_INFO.INCLUDE_GPU_INFO = False
    observers = importlib.import_module("sacred.observers")
    experiment = sacred.Experiment("runstore-peers", save_git_info=False)
    logger = logging.getLogger("runstore-peers.sacred")
    logger.setLevel(logging.WARNING)
    experiment.logger = logger
    observer = observers.FileStorageObserver(str(root / "sacred"))
    experiment.observers.append(observer)
    flushed = [0.0]
    log_metrics = observer.log_metrics

    def timed_log_metrics(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return log_metrics(*args, **kwargs)
        finally:
            flushed[0] += time.perf_counter() - t

    observer.log_metrics = timed_log_metrics
    current: list[tuple[Work, Sample]] = []

    def main(_run: Any) -> None:
        work, sample = current[0]
        log_scalar = _run.log_scalar
        log_scalar("latency_ms", 0.0, -1)
        t = time.perf_counter()
        for record in work.records[1:]:
            log_scalar("latency_ms", record["observation"]["latency_ms"], record["step_index"])
        sample.records = time.perf_counter() - t
        t = time.perf_counter()
        for path in work.artifacts:
            _run.add_artifact(str(path), name=path.name)
        sample.artifacts = time.perf_counter() - t

    experiment.main(main)

    def run(work: Work) -> Sample:
        sample = Sample()
        current[:] = [(work, sample)]
        flushed[0] = 0.0
        start = time.perf_counter()
        experiment.run()
        sample.total = time.perf_counter() - start
        sample.records += flushed[0]
        return sample

    return run


def skipped(peer: str, module: str) -> Row:
    nan = math.nan
    return Row(f"{peer}: skipped: install {INSTALL[module]}", nan, nan, nan, None, unit="")


def rows_for(peer: Tool, ours: Tool, work: Work, per_record: str, goal: float | None) -> list[Row]:
    n, a = len(work.records), len(work.artifacts)
    # (case, peer phase, peer count, runstore phase, runstore count, scale, unit, goal);
    # the first record opens the stream or file and is timed in "whole run" only.
    cases: list[tuple[str, str, int, str, int, float, str, float | None]] = [
        (
            f"{peer.name} {per_record}, per record",
            "records",
            n - 1,
            "records",
            n - 1,
            1e6,
            "us",
            goal,
        ),
    ]
    if any(s.batches for s in peer.samples):
        cases.append(
            (
                f"{peer.name} log_dict per {work.batch} records, per record",
                "batches",
                n,
                "records",
                n - 1,
                1e6,
                "us",
                None,
            )
        )
    if a:
        cases.append(
            (f"{peer.name} artifact, per artifact", "artifacts", a, "artifacts", a, 1e3, "ms", None)
        )
    cases.append(
        (
            f"{peer.name} whole run ({n} records, {a} artifacts)",
            "total",
            1,
            "total",
            1,
            1e3,
            "ms",
            None,
        )
    )
    rows = []
    for case, phase, count, our_phase, our_count, scale, unit, g in cases:
        theirs = [getattr(s, phase) / count * scale for s in peer.samples]
        mine = [getattr(s, our_phase) / our_count * scale for s in ours.samples]
        ratio = statistics.median(t / m for t, m in zip(theirs, mine, strict=True))
        rows.append(
            Row(case, statistics.median(theirs), statistics.median(mine), ratio, g, unit=unit)
        )
    return rows


def main(args: argparse.Namespace) -> list[Row]:
    mlflow = importable("mlflow")
    sacred = importable("sacred")
    rows: list[Row] = []
    if mlflow is None:
        rows.append(skipped("MLflow file store", "mlflow"))
    if sacred is None:
        rows.append(skipped("Sacred FileStorageObserver", "sacred"))
    if mlflow is None and sacred is None:
        return rows
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        payload = os.urandom(args.artifact_kb * 1024)
        (root / "files").mkdir()
        artifacts = []
        for k in range(args.artifacts):
            path = root / "files" / f"artifact_{k:03d}.bin"
            path.write_bytes(payload[k:] + payload[:k])
            artifacts.append(path)
        work = Work(make_records(args.records), artifacts, args.batch)
        with runstore.open(str(root / "runstore"), heartbeat_interval=0) as store:
            ours = Tool("runstore", runstore_tool(store))
            peers: list[Tool] = []
            if mlflow is not None:
                peers.append(Tool("MLflow", mlflow_tool(mlflow, root)))
            if sacred is not None:
                peers.append(Tool("Sacred", sacred_tool(sacred, root)))
            tools = [ours, *peers]
            for tool in tools:  # warm-up run: imports, first experiment, caches
                tool.run(work)
            for i in range(args.rounds):
                for k in range(len(tools)):
                    tool = tools[(i + k) % len(tools)]
                    tool.samples.append(tool.run(work))
    for peer in peers:
        if peer.name == "MLflow":
            rows += rows_for(peer, ours, work, "log_metric vs append", 50.0)
        else:
            rows += rows_for(peer, ours, work, "log_scalar+flush vs append", None)
    return rows


if __name__ == "__main__":
    p = parser(
        __doc__ + "\nColumns: baseline = the peer's median cost, runstore = runstore's, ratio ="
        " median per-round peer cost / runstore cost (x times faster)."
    )
    p.add_argument("--records", type=int, default=2000, help="records per run")
    p.add_argument("--artifacts", type=int, default=20, help="artifacts per run")
    p.add_argument("--artifact-kb", type=int, default=64, help="size of each artifact")
    p.add_argument("--batch", type=int, default=100, help="records per MLflow log_dict")
    p.add_argument("--rounds", type=int, default=5)
    sys.exit(run_main(main, p.parse_args()))
