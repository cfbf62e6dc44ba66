"""Shared plumbing for the benchmarks: interleaved rounds, medians, a result table.

Every benchmark compares runstore with a raw baseline doing the same work in
the same process, alternating the two in each round, and reports the median
ratio: absolute times on a shared 2-core machine vary 5-30% between runs,
ratios measured side by side much less.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass
class Row:
    case: str
    baseline: float
    measured: float
    ratio: float
    goal: float | None
    unit: str = "/s"
    higher_is_better: bool = True

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.ratio >= self.goal if self.higher_is_better else self.ratio <= self.goal


def interleaved(
    rounds: int, baseline: Callable[[int], float], subject: Callable[[int], float]
) -> tuple[float, float, float]:
    """Run ``baseline(i)`` then ``subject(i)`` for each round; medians and median ratio."""
    base, ours = [], []
    for i in range(rounds):
        base.append(baseline(i))
        ours.append(subject(i))
    ratio = statistics.median(o / b for o, b in zip(ours, base, strict=True))
    return statistics.median(base), statistics.median(ours), ratio


def parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.add_argument(
        "--profile",
        metavar="FILE",
        type=Path,
        help="run under cProfile (every thread, and child processes that call merge_profile)"
        " and write the stats, sorted by cumulative time, to FILE",
    )
    return p


_child_dumps: list[Path] = []


def merge_profile(dump: Path) -> None:
    """Add a pstats dump (e.g. a child process's, from :func:`profiling`) to the report."""
    _child_dumps.append(dump)


@contextmanager
def profiling(dump: Path) -> Iterator[None]:
    """Profile the calling thread and every thread started in the block; dump the merged stats.

    One cProfile per thread: the sync API does its work in a portal thread,
    which a profiler of the calling thread alone would show as lock waits.
    """
    profilers = [cProfile.Profile()]
    lock = threading.Lock()

    def start_in_thread(*_: object) -> None:
        profiler = cProfile.Profile()
        with lock:
            profilers.append(profiler)
        profiler.enable()  # replaces this bootstrap hook for the rest of the thread

    threading.setprofile(start_in_thread)
    profilers[0].enable()
    try:
        yield
    finally:
        profilers[0].disable()
        threading.setprofile(None)
        with lock:
            for profiler in profilers:
                profiler.create_stats()
            recorded = [profiler for profiler in profilers if profiler.stats]
            stats = pstats.Stats(*recorded)
        stats.dump_stats(dump)
        print(f"{len(recorded)} thread(s) profiled", file=sys.stderr)


def _profiled(
    main: Callable[[argparse.Namespace], list[Row]], args: argparse.Namespace
) -> list[Row]:
    dump = args.profile.with_name(args.profile.name + ".pstats")
    with profiling(dump):
        rows = main(args)
    with args.profile.open("w") as out:
        stats = pstats.Stats(str(dump), *(str(d) for d in _child_dumps), stream=out)
        print(f"this process and {len(_child_dumps)} child process(es)", file=out)
        stats.sort_stats("cumulative").print_stats(60)
        stats.sort_stats("tottime").print_stats(30)
    print(f"profile written to {args.profile} (raw stats: {dump})", file=sys.stderr)
    return rows


def run_main(main: Callable[[argparse.Namespace], list[Row]], args: argparse.Namespace) -> int:
    rows = main(args) if args.profile is None else _profiled(main, args)
    report(rows, as_json=args.json)
    return 0


def report(rows: Sequence[Row], *, as_json: bool = False) -> None:
    if as_json:
        for row in rows:
            data: dict[str, Any] = {**row.__dict__, "met": row.met}
            print(orjson.dumps(data).decode())
        return
    print(f"{'case':<52} {'baseline':>12} {'runstore':>12} {'ratio':>8} {'goal':>8}")
    for row in rows:
        goal = (
            "" if row.goal is None else ("≥ " if row.higher_is_better else "≤ ") + f"{row.goal:g}"
        )
        mark = {None: "", True: "ok", False: "MISSED"}[row.met]
        print(
            f"{row.case:<52} {row.baseline:>10.4g}{row.unit:<2} {row.measured:>10.4g}{row.unit:<2} "
            f"{row.ratio:>8.3f} {goal:>8} {mark}"
        )
