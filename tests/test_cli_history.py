"""``runstore flaky``, ``slowest`` and ``broken``: one suite's history, on local and S3 stores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from click.testing import CliRunner

import runstore
from runstore.cli.app import cli
from runstore.model.run import RunStatus

if TYPE_CHECKING:
    from conftest import CliStore


def add_runs(store: CliStore, *rows: dict[str, Any], status: RunStatus = "succeeded") -> None:
    """One finished run of suite shop per row: instance id -> status, or (status, duration)."""
    with runstore.open(store.url) as opened:
        for row in rows:
            run = opened.create_run(sut_name="shop")
            for instance_id, value in row.items():
                outcome, duration = value if isinstance(value, tuple) else (value, 1.0)
                record = {"instance_id": instance_id, "status": outcome, "duration_ms": duration}
                if outcome == "failed":
                    record["traceback"] = f"Traceback ...\nAssertionError: {instance_id} broke"
                run.append("instances", record)
            run.finish(status)


def test_flaky_prints_each_flipping_instance_with_its_history(cli_store: CliStore) -> None:
    add_runs(
        cli_store,
        {"inst_a": "passed", "inst_b": "passed"},
        {"inst_a": "failed", "inst_b": "passed"},
        {"inst_a": "passed", "inst_b": "skipped"},
    )
    result = cli_store.invoke("flaky")
    assert result.exit_code == 0, result.output
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["flips", "runs", "fails", "history", "instance"],
        ["2", "3", "1", "PFP", "inst_a"],
    ]
    assert result.stderr.startswith("shop: 3 finished runs read (")


def test_flaky_json_names_the_suite_and_the_runs_read(local_store: CliStore) -> None:
    add_runs(local_store, {"inst_a": "passed"}, {"inst_a": "failed"}, {"inst_a": "failed"})
    result = local_store.invoke("flaky", "--json", "--last", "2")
    assert result.exit_code == 0, result.output
    document = orjson.loads(result.stdout)
    assert document["sut_name"] == "shop" and len(document["runs"]) == 2
    assert document["instances"] == []
    every = orjson.loads(local_store.invoke("flaky", "--json").stdout)
    assert every["instances"] == [
        {"instance_id": "inst_a", "flips": 1, "judged_runs": 3, "failures": 2, "history": "PFF"}
    ]
    assert local_store.invoke("flaky", "--min-flips", "2").stdout == "no flaky instances\n"


def test_where_and_sut_choose_the_runs(local_store: CliStore) -> None:
    add_runs(local_store, {"inst_a": "passed"})
    add_runs(local_store, {"inst_a": "failed"}, status="failed")
    assert "inst_a" in local_store.invoke("flaky").stdout
    result = local_store.invoke("flaky", "--where", "status = 'succeeded'")
    assert (result.exit_code, result.stdout) == (0, "no flaky instances\n")
    assert local_store.invoke("flaky", "--sut", "nothing").stdout == "no finished runs\n"


def test_slowest_lists_growth_over_the_earlier_median(cli_store: CliStore) -> None:
    add_runs(
        cli_store,
        {"inst_a": ("passed", 10.0), "inst_b": ("passed", 5.0)},
        {"inst_a": ("passed", 12.0), "inst_b": ("passed", 5.0)},
        {"inst_a": ("passed", 40.0), "inst_b": ("passed", 4.0)},
    )
    result = cli_store.invoke("slowest")
    assert result.exit_code == 0, result.output
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["growth", "ms", "latest", "ms", "median", "ms", "instance"],
        ["29.0", "40.0", "11.0", "inst_a"],
    ]
    document = orjson.loads(cli_store.invoke("slowest", "--json").stdout)
    assert [row["instance_id"] for row in document["instances"]] == ["inst_a"]


def test_broken_exits_1_and_names_what_broke_since_the_last_green_run(
    cli_store: CliStore,
) -> None:
    add_runs(cli_store, {"inst_a": "passed", "inst_b": "passed"})
    add_runs(cli_store, {"inst_a": "failed", "inst_b": "passed"}, status="failed")
    result = cli_store.invoke("broken")
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0].endswith(": 1 broke")
    assert lines[1:] == ["  failed  (was passed)  inst_a", "          AssertionError: inst_a broke"]
    document = orjson.loads(cli_store.invoke("broken", "--json").stdout)
    assert [row["instance_id"] for row in document["instances"]] == ["inst_a"]
    assert document["green"] is not None and document["newest"] != document["green"]


def test_broken_exits_0_when_the_newest_run_is_green(local_store: CliStore) -> None:
    add_runs(local_store, {"inst_a": "failed"}, status="failed")
    add_runs(local_store, {"inst_a": "passed"})
    result = local_store.invoke("broken")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(": 0 broke\n")


def test_a_malformed_filter_is_an_error_with_exit_1(local_store: CliStore) -> None:
    add_runs(local_store, {"inst_a": "passed"})
    result = local_store.invoke("flaky", "--where", "nonsense")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid filter at position 1")
    as_json = local_store.invoke("slowest", "--where", "nonsense", "--json")
    assert orjson.loads(as_json.stdout)["error"]["code"] == "invalid_input"


@pytest.mark.parametrize("args", [["flaky", "--last", "0"], ["slowest", "--top", "0"]])
def test_counts_below_1_are_usage_errors(local_store: CliStore, args: list[str]) -> None:
    add_runs(local_store, {"inst_a": "passed"})
    assert local_store.invoke(*args).exit_code == 2


@pytest.mark.parametrize("command", ["flaky", "slowest", "broken"])
def test_a_missing_store_is_an_error_and_creates_nothing(tmp_path: Path, command: str) -> None:
    result = CliRunner().invoke(cli, ["--store", str(tmp_path / "runz"), command])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no store at")
    assert list(tmp_path.iterdir()) == []
