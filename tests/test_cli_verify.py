"""``runstore verify``, end to end on a local and an S3 store."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from click.testing import Result

import runstore

if TYPE_CHECKING:
    from conftest import CliStore

Runs = Callable[..., None]


def _report(result: Result, code: int) -> Any:
    assert result.exit_code == code, result.output
    return orjson.loads(result.stdout)


def _problems(report: Any, run_id: str) -> list[str]:
    (run,) = [r for r in report["runs"] if r["run_id"] == run_id]
    return [f"{p['where']}: {p['message']}" for p in run["problems"]]


def test_intact_runs_verify_with_exit_0(cli_store: CliStore, small_runs: Runs) -> None:
    small_runs(cli_store, "run_a", "run_b")
    report = _report(cli_store.invoke("verify", "--json"), 0)
    assert report["ok"] is True
    assert report["checked"] == 2
    assert {r["run_id"] for r in report["runs"]} == {"run_a", "run_b"}
    result = cli_store.invoke("verify")
    assert "2 runs verified, no problems" in result.stdout


def test_a_tampered_artifact_fails_verification_naming_it(
    cli_store: CliStore, small_runs: Runs
) -> None:
    small_runs(cli_store, "run_a", "run_b")
    cli_store.overwrite("run_a/artifacts/inst_002/request.json", b'{"forged": true}\n')
    report = _report(cli_store.invoke("verify", "--json"), 1)
    assert report["ok"] is False
    assert report["failed"] == 1
    (problem,) = _problems(report, "run_a")
    assert problem.startswith("artifacts/inst_002/request.json: sha256/size")
    assert _problems(report, "run_b") == []


def test_the_human_report_lists_each_problem_under_its_run(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a")
    local_store.overwrite("run_a/artifacts/report.json", b"{}")
    result = local_store.invoke("verify")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "FAIL  run_a"
    assert lines[1].startswith("      artifacts/report.json: sha256/size")
    assert "1 of 1 runs have problems (1 in all)" in result.stdout


def test_a_damaged_stream_line_is_reported_with_its_line_number(
    cli_store: CliStore, small_runs: Runs
) -> None:
    small_runs(cli_store, "run_a")
    lines = cli_store.read("run_a/steps.jsonl").splitlines(keepends=True)
    lines[1] = b'{"instance_id": "inst_002", "step_na\n'
    cli_store.overwrite("run_a/steps.jsonl", b"".join(lines))
    problems = _problems(_report(cli_store.invoke("verify", "--json"), 1), "run_a")
    assert any(p.startswith("steps.jsonl:") and "line 2" in p for p in problems), problems


def test_a_summary_that_disagrees_with_the_streams_is_reported(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a")
    summary = orjson.loads(local_store.read("run_a/summary.json"))
    summary["pass_count"] += 1
    local_store.overwrite("run_a/summary.json", orjson.dumps(summary))
    problems = _problems(_report(local_store.invoke("verify", "--json"), 1), "run_a")
    assert len(problems) == 1
    assert problems[0].startswith("summary.json: pass/fail")


def test_only_the_named_runs_are_verified(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a", "run_b")
    local_store.overwrite("run_b/artifacts/report.json", b"{}")
    report = _report(local_store.invoke("verify", "run_a", "--json"), 0)
    assert [r["run_id"] for r in report["runs"]] == ["run_a"]


def test_a_named_run_that_does_not_exist_is_not_found_with_the_closest_ids(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a")
    error = _report(local_store.invoke("verify", "run_a", "run_nope", "--json"), 1)["error"]
    assert error["code"] == "not_found"
    assert error["details"]["suggestions"] == ["run_a"]


def test_a_live_run_verifies_while_it_is_written(cli_store: CliStore) -> None:
    with runstore.open(cli_store.url) as opened:
        run = opened.create_run("live")
        run.append("steps", {"n": 1})
        run.put_artifact("a.txt", b"a")
        run.flush()
        report = _report(cli_store.invoke("verify", "--json"), 0)
        run.finish()
    assert report["runs"] == [{"run_id": "live", "ok": True, "problems": []}]


def test_an_empty_store_has_nothing_to_verify(local_store: CliStore) -> None:
    runstore.open(local_store.url).close()
    result = local_store.invoke("verify")
    assert result.exit_code == 0, result.output
    assert "no runs to verify" in result.stdout


def test_the_console_script_exits_1_and_reports_on_stdout(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a")
    local_store.overwrite("run_a/artifacts/report.json", b"{}")
    script = shutil.which("runstore", path=str(Path(sys.executable).parent))
    assert script is not None
    done = subprocess.run(
        [script, "--store", local_store.url, "verify"], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert b"FAIL  run_a" in done.stdout
    assert b"Traceback" not in done.stderr


def _stderr_on_a_terminal(*args: str) -> tuple[int, bytes]:
    """Run the console script with stderr on a pseudo-terminal; returns (status, stderr)."""
    script = shutil.which("runstore", path=str(Path(sys.executable).parent))
    assert script is not None
    main, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [script, *args],
            stdout=subprocess.PIPE,
            stderr=terminal,
            env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
            timeout=60,
            check=False,
        )
        os.close(terminal)
        terminal = -1
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(main)
        if terminal >= 0:
            os.close(terminal)
    return done.returncode, b"".join(chunks)


def test_verifying_many_runs_shows_a_progress_bar_at_a_terminal(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a", "run_b", "run_c")
    status, err = _stderr_on_a_terminal("--store", local_store.url, "verify")
    assert status == 0
    assert b"verifying" in err
    assert b"/3" in err  # runs done out of 3
    status, err = _stderr_on_a_terminal("--store", local_store.url, "verify", "--json")
    assert status == 0
    assert b"verifying" not in err  # scripts get JSON only
