"""Filesystems without conditional writes: one writing process at a time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import runstore

WRITE = """
    import json, sys, runstore
    try:
        with runstore.open(sys.argv[1], heartbeat_interval=0) as store:
            store.create_run(run_id=sys.argv[2])
        print(json.dumps({"ok": True}))
    except runstore.RunstoreError as exc:
        print(json.dumps({"ok": False, "code": exc.code, "message": exc.message}))
"""


def other_process(code: str, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"fsspec+file://{tmp_path}/runs"


def test_another_process_is_refused_while_one_writes(url: str) -> None:
    with runstore.open(url, heartbeat_interval=0) as store:
        store.create_run(run_id="run_mine")
        refused = other_process(WRITE, url, "run_theirs")
        assert refused["ok"] is False
        assert refused["code"] == "unsupported"
        assert "another process" in str(refused["message"])
        assert "writer.json" in str(refused["message"])
    assert other_process(WRITE, url, "run_theirs") == {"ok": True}  # released on close


def test_reading_needs_no_lease(url: str) -> None:
    with runstore.open(url, heartbeat_interval=0) as store:
        with store.create_run(run_id="run_read") as run:
            run.append("steps", {"n": 1})
        seen = other_process(
            """
            import json, sys, runstore
            with runstore.open(sys.argv[1]) as store:
                view = store.get_run("run_read")
                print(json.dumps({"runs": [r.run_id for r in store.list_runs()],
                                  "steps": list(view.read("steps"))}))
            """,
            url,
        )
    assert seen == {"runs": ["run_read"], "steps": [{"n": 1}]}


def test_lease_of_a_process_that_died_is_taken_over(url: str) -> None:
    died = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import os, sys, runstore
                store = runstore.open(sys.argv[1], heartbeat_interval=0)
                store.create_run(run_id="run_dead")
                os._exit(9)  # no close: the lease stays behind
                """
            ),
            url,
        ],
        timeout=120,
        check=False,
    )
    assert died.returncode == 9
    with runstore.open(url, heartbeat_interval=0) as store:
        store.create_run(run_id="run_after")
        assert sorted(r.run_id for r in store.list_runs()) == ["run_after", "run_dead"]


def test_stores_of_one_process_share_the_lease(url: str) -> None:
    with (
        runstore.open(url, heartbeat_interval=0) as first,
        runstore.open(url, heartbeat_interval=0) as second,
    ):
        first.create_run(run_id="run_one")
        second.create_run(run_id="run_two")
        with pytest.raises(runstore.AlreadyExistsError):
            second.create_run(run_id="run_one")
    assert not (Path(url.removeprefix("fsspec+file://")) / ".runstore" / "writer.json").exists()
