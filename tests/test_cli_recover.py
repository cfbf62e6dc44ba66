"""``runstore recover`` and ``runstore tail -f`` on a live run, on a local and an S3 store."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from click.testing import Result

import runstore

if TYPE_CHECKING:
    from conftest import CliStore


def _report(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def _abandon(store: CliStore, run_id: str) -> None:
    """A run whose writer died: records and an artifact stored, never finished."""
    with runstore.open(store.url, heartbeat_interval=0) as opened:
        run = opened.create_run(run_id)
        run.append("instances", {"instance_id": "i1", "status": "passed"})
        run.append("instances", {"instance_id": "i2", "status": "failed"})
        run.put_artifact("i1/out.json", b"{}")
        run.flush()
        opened.portal.call(run.aio.core.release())  # as if the process died: nothing finished


def _actions(result: Result) -> dict[str, str]:
    return {r["run_id"]: r["action"] for r in _report(result)["runs"]}


def test_recover_marks_a_dead_run_crashed_and_rebuilds_its_summary(cli_store: CliStore) -> None:
    _abandon(cli_store, "run_dead")
    time.sleep(1.1)
    assert _actions(cli_store.invoke("recover", "--stale-after", "1s", "--json")) == {
        "run_dead": "marked_crashed"
    }
    shown = _report(cli_store.invoke("show", "run_dead", "--json"))
    assert shown["state"]["status"] == "crashed"
    assert (shown["summary"]["pass_count"], shown["summary"]["fail_count"]) == (1, 1)
    assert shown["summary"]["artifact_count"] == 1
    assert cli_store.invoke("verify", "run_dead").exit_code == 0
    assert _report(cli_store.invoke("recover", "--stale-after", "1s", "--json"))["runs"] == []


def test_a_run_with_a_fresh_heartbeat_is_left_alive(local_store: CliStore) -> None:
    _abandon(local_store, "run_fresh")
    result = local_store.invoke("recover")
    assert result.exit_code == 0, result.output
    assert "alive" in result.stdout
    assert "marked 0 runs crashed" in result.stdout
    shown = _report(local_store.invoke("show", "run_fresh", "--json"))
    assert shown["state"]["status"] == "running"


def test_dry_run_reports_and_changes_nothing(local_store: CliStore) -> None:
    _abandon(local_store, "run_dead")
    time.sleep(1.1)
    report = _report(local_store.invoke("recover", "--stale-after", "1s", "--dry-run", "--json"))
    assert report["dry_run"] is True
    assert [r["action"] for r in report["runs"]] == ["marked_crashed"]
    shown = _report(local_store.invoke("show", "run_dead", "--json"))
    assert shown["state"]["status"] == "running"


def test_a_torn_last_line_is_repaired_and_reported(local_store: CliStore) -> None:
    _abandon(local_store, "run_torn")
    assert local_store.root is not None
    with (local_store.root / "run_torn" / "instances.jsonl").open("ab") as stream:
        stream.write(b'{"instance_id": "i3", "sta')  # the writer died mid-record
    time.sleep(1.1)
    report = _report(local_store.invoke("recover", "--stale-after", "1s", "--json"))
    assert report["runs"][0]["torn_bytes"] == {"instances": 26}
    assert local_store.read("run_torn/instances.jsonl").endswith(b"}\n")
    assert local_store.invoke("verify", "run_torn").exit_code == 0


def test_only_the_named_runs_are_looked_at(local_store: CliStore, small_runs: Any) -> None:
    _abandon(local_store, "run_dead")
    _abandon(local_store, "run_other")
    small_runs(local_store, "run_done")
    time.sleep(1.1)
    actions = _actions(
        local_store.invoke("recover", "run_dead", "run_done", "--stale-after", "1s", "--json")
    )
    assert actions == {"run_dead": "marked_crashed", "run_done": "skipped"}
    assert _report(local_store.invoke("show", "run_other", "--json"))["state"]["status"] == (
        "running"
    )


def test_stale_after_zero_takes_every_live_run_for_dead(local_store: CliStore) -> None:
    _abandon(local_store, "run_just_now")
    actions = _actions(local_store.invoke("recover", "--stale-after", "0s", "--json"))
    assert actions == {"run_just_now": "marked_crashed"}


def test_a_malformed_age_is_a_usage_error(local_store: CliStore) -> None:
    result = local_store.invoke("recover", "--stale-after", "soon")
    assert result.exit_code == 2
    assert "invalid age" in result.stderr


# -- tail -f on a live run --------------------------------------------------------------


def test_tail_follow_prints_every_record_of_a_live_run_until_it_finishes(
    cli_store: CliStore,
) -> None:
    created = threading.Event()

    def writer() -> None:
        with runstore.open(cli_store.url) as store:
            run = store.create_run("live")
            run.append("steps", {"n": 0})
            run.flush()
            created.set()
            for n in range(1, 6):
                time.sleep(0.1)
                run.append("steps", {"n": n})
                run.flush()
            run.finish()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert created.wait(30)
        result = cli_store.invoke("tail", "live", "steps", "-f", "--poll-interval", "0.05")
    finally:
        thread.join()
    assert result.exit_code == 0, result.output
    assert [orjson.loads(line)["n"] for line in result.stdout.splitlines()] == list(range(6))


def test_tail_follow_in_another_process_sees_records_as_they_are_stored(
    cli_store: CliStore,
) -> None:
    script = shutil.which("runstore", path=str(Path(sys.executable).parent))
    assert script is not None
    with runstore.open(cli_store.url) as store:
        run = store.create_run("live")
        run.append("steps", {"n": 0})
        run.flush()
        tail = subprocess.Popen(
            [script, "--store", cli_store.url, "tail", "live", "steps", "-f", "--json", "-n", "5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert tail.stdout is not None
            assert orjson.loads(tail.stdout.readline()) == {"n": 0}
            run.append("steps", {"n": 1})
            run.flush()
            assert orjson.loads(tail.stdout.readline()) == {"n": 1}  # while the run is live
            assert tail.poll() is None
            run.append("steps", {"n": 2})
            run.finish()
            rest, err = tail.communicate(timeout=60)
        finally:
            if tail.poll() is None:
                tail.kill()
                tail.wait()
    assert tail.returncode == 0, err
    assert [orjson.loads(line) for line in rest.splitlines()] == [{"n": 2}]
