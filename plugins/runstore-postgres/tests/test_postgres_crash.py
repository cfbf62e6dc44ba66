"""A writer killed with SIGKILL mid-run on postgres: nothing acknowledged is lost.

Under ``record`` durability (the default) an append returns after its commit,
so every record the writer acknowledged is stored; its advisory locks go with
its connection; ``runstore recover`` marks the run crashed, and the run can be
resumed and finished afterwards.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

import runstore
from runstore_postgres.testing import PostgresServer

PATIENCE = 60.0

_WRITER = """
import os, sys, runstore
def ack(*parts):
    os.write(1, (" ".join(map(str, parts)) + "\\n").encode())  # one write(2): never torn
store = runstore.open(sys.argv[1], heartbeat_interval=0.05)
run = store.create_run(run_id="run_crash", sut_name="crash")
n = 0
while True:
    run.append("steps", {"n": n, "pad": "x" * 100})
    ack("rec", "steps", n)
    run.append("instances", {"instance_id": f"inst_{n}", "status": "passed"})
    ack("rec", "instances", n)
    if n % 10 == 0:
        run.put_artifact(f"out/{n}.bin", str(n).encode() * 1000)
        ack("art", n)
    n += 1
"""


def _sql(server: PostgresServer, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(server.url(), autocommit=True) as conn:
        return conn.execute(statement.encode()).fetchall()


def _cli(url: str, *args: str) -> dict[str, Any]:
    runstore_cli = str(Path(sys.executable).with_name("runstore"))
    done = subprocess.run(
        [runstore_cli, "--store", url, *args, "--json"],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_a_killed_writer_loses_no_acknowledged_record_and_recover_marks_its_run(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    acked: dict[str, list[int]] = {"steps": [], "instances": []}
    artifacts: list[int] = []
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, postgres_url], stdout=subprocess.PIPE, text=True
    ) as writer:
        assert writer.stdout is not None
        for line in writer.stdout:
            kind, *rest = line.split()
            if kind == "rec":
                acked[rest[0]].append(int(rest[1]))
            else:
                artifacts.append(int(rest[0]))
            if len(acked["steps"]) >= 150:  # mid-run: the writer goes on appending
                writer.send_signal(signal.SIGKILL)
                break
        writer.stdout.read()  # acknowledgements sent before the kill landed
        assert writer.wait() == -signal.SIGKILL
    killed_at = time.monotonic()

    # Its session advisory locks (one per stream) die with its connection.
    deadline = time.monotonic() + PATIENCE
    while _sql(postgres_server, "SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"):
        assert time.monotonic() < deadline, "advisory locks of the killed writer still held"
        time.sleep(0.05)

    with runstore.open(postgres_url) as store:
        view = store.get_run("run_crash")
        assert view.state.status == "running"
        for stream, numbers in acked.items():
            stored = [
                r["n"] if stream == "steps" else int(r["instance_id"][5:])
                for r in view.read(stream)
            ]
            assert stored[: len(numbers)] == numbers, stream  # every acknowledged one, in order
            assert len(stored) <= len(numbers) + 1, stream  # at most the one being acked
        names = {ref.name: ref for ref in view.artifacts()}
        for n in artifacts:
            data = str(n).encode() * 1000
            assert names[f"out/{n}.bin"].sha256 == hashlib.sha256(data).hexdigest()
            assert b"".join(view.open_artifact(f"out/{n}.bin", verify=True)) == data

    time.sleep(max(0.0, killed_at + 1.2 - time.monotonic()))  # its heartbeat is now 1 s old
    report = _cli(postgres_url, "recover", "--stale-after", "1s")
    assert [(r["run_id"], r["action"]) for r in report["runs"]] == [
        ("run_crash", "marked_crashed")
    ], report

    with runstore.open(postgres_url) as store:
        view = store.get_run("run_crash")
        assert view.state.status == "crashed"
        assert view.summary is not None
        stored_instances = list(view.read("instances"))
        assert view.summary.instance_count == len(stored_instances)
        run = store.resume_run("run_crash")
        run.append("steps", {"n": "after"})
        run.finish()
        view = store.get_run("run_crash")
        assert view.state.status == "succeeded"
        assert list(view.read("steps"))[-1] == {"n": "after"}
    assert _cli(postgres_url, "verify")["ok"] is True
