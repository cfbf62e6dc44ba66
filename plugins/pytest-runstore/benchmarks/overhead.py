"""Wall time of a suite of trivial tests with and without pytest-runstore.

    python plugins/pytest-runstore/benchmarks/overhead.py [--tests 2000] [--repeat 5]

Runs the same generated suite as separate pytest processes, the variants
interleaved so that a noisy machine slows them alike, and prints the median
wall time of each and its ratio to the bare suite (the plugin blocked with
``-p no:runstore``): installed but off, recording to a local store, and
``--junitxml`` (and ``--report-log`` when pytest-reportlog is installed) as
the tools people compare it with. Compare ratios from one run, not times; CPU time
(user + system of each pytest process) is less disturbed by other load than
wall time.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _suite(root: Path, tests: int, per_file: int = 100) -> None:
    for start in range(0, tests, per_file):
        body = "".join(
            f"def test_{n}():\n    assert {n} == {n}\n\n"
            for n in range(start, min(start + per_file, tests))
        )
        (root / f"test_gen_{start // per_file:03d}.py").write_text(body)
    (root / "pytest.ini").write_text("[pytest]\n")


def _children_cpu() -> float:
    """CPU seconds (user + system) used by finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _variants(root: Path) -> dict[str, list[str]]:
    variants = {
        "bare (-p no:runstore)": ["-p", "no:runstore"],
        "installed, off": [],
        "--runstore (local store)": [f"--runstore={root / 'runs'}"],
        "--junitxml": [f"--junitxml={root / 'junit.xml'}"],
    }
    if importlib.util.find_spec("pytest_reportlog") is not None:
        variants["--report-log"] = [f"--report-log={root / 'log.jsonl'}"]
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="runstore-pytest-bench-"))
    try:
        _suite(root, options.tests)
        variants = _variants(root)
        times: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(options.repeat):
            for name, args in variants.items():
                command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
                used = _children_cpu()
                started = time.perf_counter()
                done = subprocess.run(command, cwd=root, capture_output=True, check=False)
                times[name].append(time.perf_counter() - started)
                cpu[name].append(_children_cpu() - used)
                if done.returncode != 0:
                    raise SystemExit(f"{name} failed:\n{done.stdout.decode()[-2000:]}")
        bare = statistics.median(times["bare (-p no:runstore)"])
        bare_cpu = statistics.median(cpu["bare (-p no:runstore)"])
        print(f"{options.tests} trivial tests, median of {options.repeat} runs each")
        print(f"  {'':<28} {'wall':>9} {'ratio':>6} {'cpu':>9} {'ratio':>6}")
        for name, samples in times.items():
            wall, used = statistics.median(samples), statistics.median(cpu[name])
            print(
                f"  {name:<28} {wall:7.2f} s {wall / bare:5.2f}x "
                f"{used:7.2f} s {used / bare_cpu:5.2f}x"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
