"""Concurrency: many processes creating runs and updating state on one store.

Writers start together (they wait for one ``go``), open the store in the race,
create runs with generated ids and update each run's state; a reader process
lists and reads the runs the whole time. One checker judges the outcome:
lost index entries, duplicate run ids, lost state updates, errors the reader
saw. For runstore every count must be 0. The same checker run over a naive
read-modify-write JSON index (the control) must find lost updates: proof
that the test can fail.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import HERE, PYTHON, Figures, Scale, subprocess_env

import runstore
from runstore_fsspec.testing import S3Server


@dataclass(frozen=True)
class Load:
    """What each writer does: create ``runs`` runs, update each one's state ``updates`` times."""

    runs: int = 3
    updates: int = 4


LOCAL = Load()
S3_QUICK = Load(runs=1, updates=3)


@dataclass(frozen=True)
class Verdict:
    claimed: int
    duplicates: int
    lost_entries: int
    lost_updates: int
    reader_errors: int
    reader_reads: int
    reader_runs_read: int

    @property
    def clean(self) -> bool:
        return not (self.duplicates or self.lost_entries or self.lost_updates or self.reader_errors)


def judge(
    claims: list[str], final: dict[str, tuple[str, int]], reader: Counter[str], updates: int
) -> Verdict:
    """The checker: the same for runstore and for the control."""
    unique = set(claims)
    return Verdict(
        claimed=len(claims),
        duplicates=len(claims) - len(unique),
        lost_entries=len(unique - set(final)),
        lost_updates=sum(
            1 for run_id in unique & set(final) if final[run_id] != ("succeeded", updates)
        ),
        reader_errors=reader["errors"],
        reader_reads=reader["reads"],
        reader_runs_read=reader["runs_read"],
    )


def _spawn(*args: str, log: Path) -> subprocess.Popen[str]:
    with log.open("w") as stderr:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [PYTHON, str(HERE / "concurrency_worker.py"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=subprocess_env(),
        )


def race(
    mode: str, url: str, writers: int, logs: Path, load: Load = LOCAL
) -> tuple[list[str], Counter[str]]:
    """Start the writers and the reader, let them go at once; the claimed ids and what
    the reader saw."""
    logs.mkdir(parents=True, exist_ok=True)
    args = [str(load.runs), str(load.updates)]
    procs = [
        _spawn("writer", mode, url, str(n), *args, log=logs / f"writer{n}.log")
        for n in range(writers)
    ]
    reader = _spawn("reader", mode, url, log=logs / "reader.log")
    try:
        for proc in [*procs, reader]:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        for proc in [*procs, reader]:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        claims: list[str] = []
        for n, proc in enumerate(procs):
            out, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, (logs / f"writer{n}.log").read_text()
            claims += [line.split()[1] for line in out.splitlines() if line.startswith("run ")]
        out, _ = reader.communicate("stop\n", timeout=600)
        assert reader.returncode == 0, (logs / "reader.log").read_text()
        return claims, Counter(json.loads(out))
    finally:  # a failed writer leaves none of the others running behind the next test
        for proc in [*procs, reader]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None and not pipe.closed:
                    pipe.close()


def runstore_final(url: str) -> dict[str, tuple[str, int]]:
    final: dict[str, tuple[str, int]] = {}
    with runstore.open(url, heartbeat_interval=0) as store:
        for record in store.list_runs(sut_name="race"):
            phase = store.get_run(record.run_id).state.phases.get("work")
            final[record.run_id] = (record.status, phase.completed if phase else 0)
    return final


def naive_final(directory: Path) -> dict[str, tuple[str, int]]:
    runs = json.loads((directory / "index.json").read_text())
    return {run_id: (entry.get("status"), entry.get("completed")) for run_id, entry in runs.items()}


def publish(
    figures: Figures, name: str, writers: int, verdict: Verdict, load: Load = LOCAL
) -> None:
    figures.add(f"concurrency.{name}.processes", writers)
    figures.add(f"concurrency.{name}.runs_created", verdict.claimed)
    figures.add(f"concurrency.{name}.state_updates", verdict.claimed * (load.updates + 2))
    figures.add(f"concurrency.{name}.reader_passes", verdict.reader_reads)
    figures.add(f"concurrency.{name}.reader_runs_read", verdict.reader_runs_read)
    figures.add(f"concurrency.{name}.lost_index_entries", verdict.lost_entries)
    figures.add(f"concurrency.{name}.duplicate_run_ids", verdict.duplicates)
    figures.add(f"concurrency.{name}.lost_state_updates", verdict.lost_updates)
    figures.add(f"concurrency.{name}.reader_errors", verdict.reader_errors)


def test_processes_racing_on_a_fresh_local_store_lose_nothing(
    root: Path, tmp_path: Path, scale: Scale, figures: Figures
) -> None:
    writers = scale.local_writers
    claims, reader = race("runstore", str(root), writers, tmp_path / "logs")
    verdict = judge(claims, runstore_final(str(root)), reader, LOCAL.updates)
    publish(figures, "local", writers, verdict)
    assert verdict.claimed == writers * LOCAL.runs
    assert verdict.clean, (verdict, reader)
    assert verdict.reader_reads > 0


def test_the_checker_catches_a_naive_read_modify_write_index_losing_updates(
    tmp_path: Path, scale: Scale, figures: Figures
) -> None:
    """The control: the same race and checker over an index without claims or CAS."""
    directory = tmp_path / "naive"
    writers = scale.local_writers
    claims, reader = race("naive", str(directory), writers, tmp_path / "logs")
    verdict = judge(claims, naive_final(directory), reader, LOCAL.updates)
    publish(figures, "naive_control", writers, verdict)
    assert verdict.claimed == writers * LOCAL.runs
    assert not verdict.clean, "the checker must catch the control losing updates"
    assert verdict.lost_entries + verdict.lost_updates + verdict.duplicates > 0


@pytest.mark.s3
def test_processes_racing_on_one_s3_bucket_lose_nothing(
    s3: S3Server, tmp_path: Path, scale: Scale, figures: Figures
) -> None:
    url = s3.url("race")
    runstore.open(url).close()
    writers, load = scale.s3_writers, LOCAL if scale.long else S3_QUICK
    claims, reader = race("runstore", url, writers, tmp_path / "logs", load)
    verdict = judge(claims, runstore_final(url), reader, load.updates)
    publish(figures, "s3", writers, verdict, load)
    assert verdict.claimed == writers * load.runs
    assert verdict.clean, (verdict, reader)
