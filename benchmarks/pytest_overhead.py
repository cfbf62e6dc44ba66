"""pytest-runstore's overhead: a suite of trivial tests with and without the plugin.

The same generated suite runs as separate pytest processes, once per variant
in each round, in an order that rotates from round to round so that a noisy
machine slows every variant alike. The baseline is the bare suite (the plugin
blocked with ``-p no:runstore``); the variants are the plugin installed but
off, recording to a local store (goal: at most 1.3x the bare wall time), and
the tools people compare it with: ``--junitxml`` and pytest-reportlog's
``--report-log`` (when it is installed). Each row gives the median of the
bare and the variant's times and the median of their per-round ratio, for
wall time and for CPU time (user + system of the pytest process), which other
load on the machine disturbs less.

    python benchmarks/pytest_overhead.py [--tests 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import Row, parser, run_main

BARE = "bare (-p no:runstore)"
GOAL = 1.3  # the plugin's recording: at most 1.3x the bare suite's wall time


def write_suite(root: Path, tests: int, per_file: int = 100) -> None:
    """``tests`` trivial passing tests, ``per_file`` to a module, and a pytest.ini."""
    for start in range(0, tests, per_file):
        body = "".join(
            f"def test_{n}():\n    assert {n} == {n}\n\n"
            for n in range(start, min(start + per_file, tests))
        )
        (root / f"test_gen_{start // per_file:03d}.py").write_text(body)
    (root / "pytest.ini").write_text("[pytest]\n")


def variants(root: Path) -> dict[str, list[str]]:
    """Each variant's extra pytest arguments, the bare suite first."""
    found = {
        BARE: ["-p", "no:runstore"],
        "installed, off": [],
        "--runstore (local store)": [f"--runstore={root / 'runs'}"],
        "--junitxml": [f"--junitxml={root / 'junit.xml'}"],
    }
    if importlib.util.find_spec("pytest_reportlog") is not None:
        found["--report-log (pytest-reportlog)"] = [f"--report-log={root / 'log.jsonl'}"]
    else:
        print("pytest-reportlog is not installed: --report-log is not compared", file=sys.stderr)
    return found


def _children_cpu() -> float:
    """CPU seconds (user + system) used by finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_pytest(root: Path, args: list[str]) -> tuple[float, float]:
    """One pytest process on the suite: its wall and CPU seconds."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    used = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=root, capture_output=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pytest {' '.join(args)} failed:\n{done.stdout.decode()[-2000:]}")
    return wall, _children_cpu() - used


def main(args: argparse.Namespace) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="runstore-pytest-bench-") as tmp:
        root = Path(tmp)
        write_suite(root, args.tests)
        cases = variants(root)
        names = list(cases)
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(args.repeat):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                seconds, used = run_pytest(root, cases[name])
                wall[name].append(seconds)
                cpu[name].append(used)
    print(f"{args.tests} trivial tests, {args.repeat} rounds; times in seconds", file=sys.stderr)
    rows = []
    for name in names[1:]:
        for measure, samples in (("wall", wall), ("cpu", cpu)):
            ratio = statistics.median(
                ours / base for ours, base in zip(samples[name], samples[BARE], strict=True)
            )
            goal = GOAL if measure == "wall" and name.startswith("--runstore") else None
            rows.append(
                Row(
                    f"{name} / bare, {measure}",
                    statistics.median(samples[BARE]),
                    statistics.median(samples[name]),
                    ratio,
                    goal,
                    unit="s",
                    higher_is_better=False,
                )
            )
    return rows


if __name__ == "__main__":
    p = parser(__doc__)
    p.add_argument("--tests", type=int, default=2000, help="trivial tests in the suite")
    p.add_argument("--repeat", type=int, default=5, help="rounds (one run of each variant)")
    sys.exit(run_main(main, p.parse_args()))
