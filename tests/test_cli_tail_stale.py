"""`runstore tail -f` stops with exit status 1 once the run's writer has stopped beating."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

import runstore
from runstore.cli.app import cli


def test_tail_follow_stops_when_the_heartbeat_goes_stale(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    with runstore.open(str(root), heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_stale")
        run.log("info", "one")
        # A writer that dies without finishing: it keeps the run (never releases it).
        result = CliRunner().invoke(
            cli,
            ["--store", str(root), "tail", "run_stale", "logs", "-f", "--stale-after", "1s"],
        )
        assert result.exit_code == 1, result.output
        assert '"one"' in result.output or "one" in result.output
        assert "writer stopped" in result.output and "runstore" in result.output
        run.finish()


def test_tail_follow_of_a_finished_run_exits_0(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    with runstore.open(str(root)) as store, store.create_run(run_id="run_done") as run:
        run.log("info", "one")
    result = CliRunner().invoke(
        cli, ["--store", str(root), "tail", "run_done", "logs", "-f", "--stale-after", "1s"]
    )
    assert result.exit_code == 0, result.output
    assert "writer stopped" not in result.output


def test_stale_after_refuses_a_malformed_age(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--store", str(tmp_path), "tail", "run_x", "logs", "-f", "--stale-after", "soon"]
    )
    assert result.exit_code == 2 and "stale-after" in result.output
