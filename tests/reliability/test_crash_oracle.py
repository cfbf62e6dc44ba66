"""Crash test with an oracle: SIGKILL a writer at random points, then check everything.

A writer process streams records and artifacts into several runs at once and
prints an acknowledgement the moment each call returns (``crash_writer.py``).
The test kills it with SIGKILL at a random point (after a random number of
acknowledgements, or after a random delay), then checks the store against
what was acknowledged. The next trial's writer resumes every unfinished run
(``resume_run``) and carries on, so each trial also tests recovery from the
previous kill. A last writer finishes every run without being killed.

After every kill:

* every acknowledged record is present exactly once, in order, with its bytes;
  at most one unacknowledged operation (the one in flight) shows up;
* every acknowledged artifact is listed once and matches its sha256;
* every ``.json`` file parses, every complete ``.jsonl`` line parses, and only
  the bytes after a stream's last newline may be torn: readers hide them and
  report them in ``view.torn_tails``;
* every acknowledged run is listed, with the status its ``state.json`` holds.

After the final writer: no torn tail is left and ``verify_run`` finds nothing.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from harness import (
    CRASH_STREAMS,
    HERE,
    PYTHON,
    Figures,
    Scale,
    Walk,
    artifact_bytes,
    record_for,
    subprocess_env,
    temp_leftovers,
    walk_local,
    walk_s3,
)

import runstore
from runstore.ops.maintenance import recover_runs, verify_run
from runstore_fsspec.testing import S3Server

ACK_TIMEOUT = 120.0


@dataclass
class RunModel:
    """What the oracle knows is stored for one run."""

    records: Counter[str] = field(default_factory=Counter)
    artifacts: set[str] = field(default_factory=set)
    verified: set[str] = field(default_factory=set)
    phase: int = 0
    finished: bool = False


@dataclass
class Oracle:
    runs: dict[str, RunModel] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    acks: Counter[str] = field(default_factory=Counter)

    def apply(self, line: str) -> None:
        kind, *args = line.split()
        if kind in ("ready", "end"):
            return
        run_id = args[0]
        self.touched.add(run_id)
        self.acks[kind] += 1
        if kind == "run":
            self.runs[run_id] = RunModel()
            return
        model = self.runs.setdefault(run_id, RunModel())
        if kind == "rec":
            stream, seq = args[1], int(args[2])
            assert seq >= model.records[stream], f"{line}: acknowledged out of order"
            model.records[stream] = seq + 1
        elif kind == "art":
            model.artifacts.add(args[1])
        elif kind == "phase":
            model.phase = max(model.phase, int(args[1]))
        elif kind == "fin":
            model.finished = True
        else:
            raise AssertionError(f"unexpected line from the writer: {line!r}")


class ForkServer:
    """``crash_writer.py``: one interpreter that forks a writer per trial."""

    def __init__(self, url: str, log: Path, *, s3: bool) -> None:
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [PYTHON, str(HERE / "crash_writer.py"), url, *(["s3"] if s3 else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            # the local writer needs no other plugin: one being edited cannot break it
            env=subprocess_env() if s3 else subprocess_env(RUNSTORE_DISABLE_PLUGINS="fsspec"),
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        self._pump_thread = threading.Thread(
            target=self._pump, args=(self.proc.stdout,), daemon=True
        )
        self._pump_thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def next_line(self, timeout: float) -> str | None:
        """The next line, or ``None`` when ``timeout`` passes first."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None:
            raise AssertionError(f"the fork server died: see {self.log.name}")
        if line.startswith("error "):
            raise AssertionError(f"the writer failed on its own: {line}")
        return line

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self._pump_thread.join(timeout=60)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.log.close()


def run_writer(
    server: ForkServer,
    oracle: Oracle,
    *,
    seed: int,
    durability: str,
    kill: tuple[str, float],
    final_actions: int = 100,
) -> bool:
    """One trial: fork a writer, kill it per ``kill`` (or let it end), reap it.

    Returns whether it was killed (``False``: it ended before the kill point).
    """
    finish = kill[0] == "never"
    actions = final_actions if finish else 1_000_000
    server.send(f"fork {seed} {actions} {durability} {int(finish)}")
    pid: int | None = None
    acks = 0
    started = time.monotonic()
    ended = False
    while True:
        if kill[0] == "time":
            timeout = max(0.0, started + kill[1] - time.monotonic())
        else:
            timeout = ACK_TIMEOUT
        line = server.next_line(timeout)
        if line is None:
            if kill[0] != "time":
                raise AssertionError("the writer stopped acknowledging")
            break
        if line.startswith("pid "):
            pid = int(line.split()[1])
        else:
            oracle.apply(line)
            acks += line.split()[0] != "ready"
            ended = line == "end"
        if ended or (kill[0] == "acks" and pid is not None and acks >= kill[1]):
            break
    while pid is None:
        line = server.next_line(ACK_TIMEOUT)
        assert line is not None, "no pid from the fork server"
        if line.startswith("pid "):
            pid = int(line.split()[1])
        else:
            oracle.apply(line)
    if not ended:
        os.kill(pid, signal.SIGKILL)
    server.send(f"reap {pid}")
    while True:
        line = server.next_line(ACK_TIMEOUT)
        assert line is not None, "the writer could not be reaped"
        if line.startswith("reaped "):
            status = int(line.split()[2])
            break
        oracle.apply(line)
    if ended:
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        return False
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    return True


@dataclass
class Check:
    surplus: int = 0
    torn: dict[str, int] = field(default_factory=dict)
    records: int = 0


def check_run(store: runstore.Store, oracle: Oracle, run_id: str, check: Check) -> None:
    model = oracle.runs.get(run_id)
    if model is None:  # created, but killed before the acknowledgement
        check.surplus += 1
        model = oracle.runs[run_id] = RunModel()
    view = store.get_run(run_id)
    for stream in CRASH_STREAMS:
        records = list(view.read(stream))
        seqs = [r["seq"] for r in records]
        assert seqs == list(range(len(seqs))), f"{run_id}/{stream}: not exactly once, in order"
        acked = model.records[stream]
        assert len(records) >= acked, f"{run_id}/{stream}: lost {acked - len(records)} records"
        for record in records[acked:] if acked < len(records) else ():
            assert record == record_for(run_id, stream, record["seq"])
        for record in records[max(0, acked - 3) : acked]:  # spot-check the acknowledged bytes
            assert record == record_for(run_id, stream, record["seq"])
        check.surplus += len(records) - acked
        check.records += len(records)
        model.records[stream] = len(records)
        if view.torn_tails.get(stream):
            check.torn[f"{run_id}/{stream}.jsonl"] = view.torn_tails[stream]
    names = [line["name"] for line in view.read("artifacts")]
    assert len(names) == len(set(names)), f"{run_id}: an artifact is listed twice"
    assert model.artifacts <= set(names), f"{run_id}: lost {model.artifacts - set(names)}"
    check.surplus += len(set(names) - model.artifacts)
    model.artifacts |= set(names)
    for name in sorted(set(names) - model.verified):
        assert view.read_artifact(name, verify=True) == artifact_bytes(run_id, name)
        model.verified.add(name)
    phase = view.state.phases.get("work")
    done = phase.completed if phase else 0
    assert done >= model.phase, f"{run_id}: phase progress went back from {model.phase}"
    check.surplus += done - model.phase
    model.phase = done
    status = view.state.status
    if status == "succeeded" and not model.finished:
        check.surplus += 1  # finished, but killed before the acknowledgement
        model.finished = True
    if model.finished:
        assert status == "succeeded", f"{run_id}: acknowledged finished, but {status}"
        summary = view.summary
        assert summary is not None
        counts = {s: n for s, n in model.records.items() if n}
        assert summary.stream_counts == counts
        assert summary.artifact_count == len(names)
    else:
        assert status in ("created", "running"), f"{run_id}: {status}"


# A kill between writing state.json and the run's index entry leaves the index one
# write behind; runstore recover brings it up to date.
ONE_WRITE_BEHIND = {("created", "running"), ("running", "succeeded")}


def check_store(
    url: str,
    oracle: Oracle,
    run_ids: set[str] | None,
    walk: Walk,
    figures: Figures,
    prefix: str,
    *,
    index_lag: bool = True,
) -> Check:
    check = Check()
    with runstore.open(url, heartbeat_interval=0) as store:
        listed = {r.run_id: r for r in store.list_runs(sut_name="crash")}
        assert set(oracle.runs) <= set(listed), f"not listed: {set(oracle.runs) - set(listed)}"
        unacknowledged = set(listed) - set(oracle.runs)
        for run_id in sorted((set(listed) if run_ids is None else run_ids) | unacknowledged):
            check_run(store, oracle, run_id, check)
            state = store.get_run(run_id).state
            statuses = (listed[run_id].status, state.status)
            if statuses[0] != statuses[1]:
                assert index_lag and statuses in ONE_WRITE_BEHIND, f"{run_id}: index {statuses}"
                figures.add("crash.index_one_write_behind_after_a_kill")
    assert check.surplus <= 1, f"{check.surplus} unacknowledged operations survived one kill"
    assert walk.problems == [], walk.problems
    for name, torn in check.torn.items():  # the reader reports what is really there
        assert walk.torn_tails.get(f"{prefix}{name}") == torn, name
    figures.add("crash.records_checked", check.records)
    figures.add("crash.torn_tails_seen", len(check.torn))
    return check


def index_ok(root: Path) -> None:
    db = sqlite3.connect(f"file:{root / '.runstore' / 'index.sqlite3'}?mode=ro", uri=True)
    with contextlib.closing(db):
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def crash_trials(
    url: str,
    tmp_path: Path,
    trials: int,
    figures: Figures,
    backend: str,
    *,
    s3: S3Server | None,
    durabilities: tuple[str, ...],
    root: Path | None = None,
    prefix: str = "",
) -> None:
    server = ForkServer(url, tmp_path / "writer.log", s3=s3 is not None)
    max_acks = 150 if s3 is None else 40  # an S3 acknowledgement is a PUT: ~20x slower
    oracle = Oracle()
    rng = random.Random(f"crash-{backend}")

    def walk() -> Walk:
        if root is not None:
            index_ok(root)
            return walk_local(root)
        assert s3 is not None
        return walk_s3(s3, prefix)

    try:
        kills = 0
        for trial in range(trials):
            oracle.touched.clear()
            kill = (
                ("acks", rng.randint(0, max_acks))
                if rng.random() < 0.6
                else ("time", rng.random() / 2)
            )
            durability = durabilities[trial % len(durabilities)]
            killed = run_writer(server, oracle, seed=trial, durability=durability, kill=kill)
            kills += killed
            live = {r for r, m in oracle.runs.items() if not m.finished}
            check_store(url, oracle, oracle.touched | live, walk(), figures, prefix)
        run_writer(
            server,
            oracle,
            seed=trials,
            durability=durabilities[0],
            kill=("never", 0),
            final_actions=100 if s3 is None else 30,
        )
        with runstore.open(url, heartbeat_interval=0) as store:  # what an operator runs
            store.portal.call(recover_runs(store.aio))
        final = check_store(url, oracle, None, walk(), figures, prefix, index_lag=False)
        assert final.torn == {}, f"torn tails the writers left: {final.torn}"
        assert all(m.finished for m in oracle.runs.values())
        with runstore.open(url, heartbeat_interval=0) as store:
            for run_id in sorted(oracle.runs):
                problems = store.portal.call(verify_run(store.aio, run_id))
                assert problems == [], problems
    finally:
        server.close()
    figures.add(f"crash.{backend}.trials", trials)
    figures.add(f"crash.{backend}.kills", kills)
    figures.add(f"crash.{backend}.runs", len(oracle.runs))
    figures.add(f"crash.{backend}.acknowledged_records", oracle.acks["rec"])
    figures.add(f"crash.{backend}.acknowledged_artifacts", oracle.acks["art"])
    figures.add(f"crash.{backend}.acknowledged_state_writes", oracle.acks["phase"])
    figures.add(f"crash.{backend}.failures", 0)


def test_sigkill_at_random_points_loses_nothing_acknowledged_on_a_local_store(
    root: Path, tmp_path: Path, scale: Scale, figures: Figures
) -> None:
    runstore.open(str(root)).close()
    crash_trials(
        str(root),
        tmp_path,
        scale.trials,
        figures,
        "local",
        s3=None,
        durabilities=("flush", "fsync"),
        root=root,
    )
    figures.add("crash.local.temp_files_left_by_kills", len(temp_leftovers(root)))


@pytest.mark.s3
def test_sigkill_at_random_points_loses_nothing_acknowledged_on_s3(
    s3: S3Server, tmp_path: Path, scale: Scale, figures: Figures
) -> None:
    url = s3.url("crash", connect_timeout=5, read_timeout=30)
    crash_trials(
        url,
        tmp_path,
        scale.s3_trials,
        figures,
        "s3",
        s3=s3,
        durabilities=("record",),
        prefix="crash/",
    )
