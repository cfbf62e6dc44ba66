"""``runstore recover``: runs whose writer died are found, marked crashed, repaired, once.

Two real writer processes: one is killed with SIGKILL in the middle of its
run (and its last line is torn, as a kill in the middle of a write leaves
it), the other stays alive and keeps its heartbeat fresh. After the dead
one's heartbeat has expired, ``runstore recover`` (the CLI, ``--json``):

* in a dry run reports what it would do and changes nothing;
* marks the dead run ``crashed``, cuts its torn tail off, rebuilds its
  summary from what is stored (``verify_run`` is clean afterwards);
* leaves the live run alone: its writer finishes it normally afterwards;
* run a second time changes nothing (the dead run's files are identical).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import PYTHON, Figures, snapshot, subprocess_env

import runstore
from runstore.ops.maintenance import recover_runs, verify_run
from runstore.spi.layout import parse_segment_name, segment_path
from runstore_fsspec.testing import S3Server

STALE = 3.0
TORN = b'{"n": 999, "instance_id": "torn", "status": "pas'

WRITER = """
    import sys, runstore
    url, run_id, durability = sys.argv[1:]
    options = {} if durability == "default" else {"durability": durability}
    store = runstore.open(url, heartbeat_interval=0.1, **options)
    run = store.create_run(run_id=run_id, sut_name="recover")
    for n in range(40):
        run.append("instances", {"n": n, "instance_id": f"i{n}",
                                 "status": "passed" if n % 4 else "failed"})
        run.append("steps", {"n": n, "instance_id": f"i{n}", "step_name": "login"})
    run.put_artifact("i0/request.json", b'{"method": "GET"}')
    run.flush()
    print("ready", flush=True)
    if sys.stdin.readline().strip() == "finish":
        run.append("steps", {"n": 40, "instance_id": "i40", "step_name": "logout"})
        run.finish()
        store.close()
        print("done", flush=True)
"""


@dataclass
class Target:
    url: str
    durability: str
    tear: Callable[[str], None]
    files: Callable[[str], dict[str, Any]]


def start_writer(target: Target, run_id: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [PYTHON, "-c", textwrap.dedent(WRITER), target.url, run_id, target.durability],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", proc.communicate()[1]
    return proc


def recover_cli(url: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [PYTHON, "-m", "runstore", "recover", "--stale-after", f"{STALE:.0f}s", "--json", *args],
        capture_output=True,
        text=True,
        env=subprocess_env(RUNSTORE_URL=url),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def actions(result: dict[str, Any]) -> dict[str, tuple[str, dict[str, int]]]:
    return {r["run_id"]: (r["action"], r["torn_bytes"]) for r in result["runs"]}


def local_target(root: Path) -> Target:
    def tear(run_id: str) -> None:
        with (root / run_id / "steps.jsonl").open("ab") as handle:
            handle.write(TORN)

    def files(run_id: str) -> dict[str, Any]:
        return snapshot(root / run_id)

    return Target(str(root), "default", tear, files)


def s3_target(s3: S3Server) -> Target:
    client = s3.client()

    def tear(run_id: str) -> None:  # a torn segment after the last one
        prefix = f"recover/{run_id}/.segments/steps/"
        listed = client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])
        end = 0
        for item in listed:
            start = parse_segment_name(item["Key"])
            assert start is not None
            end = max(end, start + item["Size"])
        key = "recover/" + segment_path(run_id, "steps", end)
        client.put_object(Bucket=s3.bucket, Key=key, Body=TORN)

    def files(run_id: str) -> dict[str, Any]:
        return dict(s3.objects(f"recover/{run_id}/"))

    return Target(s3.url("recover"), "default", tear, files)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def target(request: pytest.FixtureRequest, root: Path) -> Target:
    if request.param == "local":
        return local_target(root)
    s3: S3Server = request.getfixturevalue("s3")
    return s3_target(s3)


def test_recover_marks_the_dead_run_crashed_repairs_it_and_changes_nothing_twice(
    target: Target, figures: Figures
) -> None:
    dead = start_writer(target, "run_dead")
    alive = start_writer(target, "run_alive")
    dead.send_signal(signal.SIGKILL)
    dead.communicate(timeout=60)
    assert dead.returncode == -signal.SIGKILL
    target.tear("run_dead")
    time.sleep(STALE + 0.5)

    before = target.files("run_dead")
    dry = recover_cli(target.url, "--dry-run")
    assert actions(dry) == {
        "run_dead": ("marked_crashed", {"steps": len(TORN)}),
        "run_alive": ("alive", {}),
    }
    assert target.files("run_dead") == before, "a dry run changed files"

    first = recover_cli(target.url)
    assert actions(first) == {
        "run_dead": ("marked_crashed", {"steps": len(TORN)}),
        "run_alive": ("alive", {}),
    }
    after = target.files("run_dead")
    second = recover_cli(target.url)
    assert actions(second) == {"run_alive": ("alive", {})}
    assert target.files("run_dead") == after, "recovering twice changed the dead run"

    with runstore.open(target.url, heartbeat_interval=0) as store:
        view = store.get_run("run_dead")
        assert view.state.status == "crashed"
        steps = list(view.read("steps"))
        assert [r["n"] for r in steps] == list(range(40))
        assert view.torn_tails["steps"] == 0
        assert view.summary is not None
        assert view.summary.stream_counts == {"instances": 40, "steps": 40}
        assert (view.summary.pass_count, view.summary.fail_count) == (30, 10)
        assert view.summary.artifact_count == 1
        assert store.portal.call(verify_run(store.aio, "run_dead")) == []
        assert store.get_run("run_alive").state.status == "running"

    out, err = alive.communicate("finish\n", timeout=120)
    assert out.split()[-1:] == ["done"], err
    with runstore.open(target.url, heartbeat_interval=0) as store:
        view = store.get_run("run_alive")
        assert view.state.status == "succeeded"
        assert len(list(view.read("steps"))) == 41
        assert store.portal.call(verify_run(store.aio, "run_alive")) == []
    figures.add("recover.runs_killed", 1)
    figures.add("recover.runs_marked_crashed", 1)
    figures.add("recover.live_runs_left_alone", 1)


def test_recover_brings_an_index_entry_a_crash_left_behind_up_to_date(
    root: Path, figures: Figures
) -> None:
    with (
        runstore.open(str(root), heartbeat_interval=0) as store,
        store.create_run(run_id="run_done") as run,
    ):
        run.append("steps", {"n": 0})
    # what a kill between replacing state.json and updating the index leaves behind
    index = sqlite3.connect(root / ".runstore" / "index.sqlite3")
    with contextlib.closing(index), index:
        index.execute(
            "UPDATE runs SET status = 'running', "
            "record = CAST(json_set(CAST(record AS TEXT), '$.status', 'running') AS BLOB)"
        )
    with runstore.open(str(root), heartbeat_interval=0) as store:
        assert [r.status for r in store.list_runs()] == ["running"]
        (result,) = store.portal.call(recover_runs(store.aio))
        assert (result.run_id, result.action) == ("run_done", "skipped")
        assert [r.status for r in store.list_runs()] == ["succeeded"]
        assert store.portal.call(recover_runs(store.aio)) == []
        assert store.get_run("run_done").state.status == "succeeded"
    figures.add("recover.lagging_index_entries_refreshed", 1)
