"""``runstore compare``: two runs instance by instance, on a local and an S3 store."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from conftest import CliStore

Runs = Callable[..., None]

# write_small_run (conftest): inst_001 and inst_002, passed unless (seed + n) % 3 == 0:
# seed 1: inst_001 passed, inst_002 failed; seed 2: inst_001 failed, inst_002 passed.


def test_runs_of_one_seed_compare_equal_with_exit_0(cli_store: CliStore, small_runs: Runs) -> None:
    small_runs(cli_store, "run_a", "run_b", seed=1)
    result = cli_store.invoke("compare", "run_a", "run_b")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "run_a -> run_b: 0 regressions, 0 fixes, 0 changed, 0 new, 0 missing, 2 unchanged"
    )
    assert lines[-1] == "every stream holds the same records (in any order, times aside)"


def test_a_regression_is_listed_first_with_exit_1(cli_store: CliStore, small_runs: Runs) -> None:
    small_runs(cli_store, "run_a", seed=1)
    small_runs(cli_store, "run_b", seed=2)
    result = cli_store.invoke("compare", "run_a", "run_b")
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[1:6] == [
        "regressions:",
        "  inst_001: passed -> failed",
        "    assertion ok: passed -> failed",
        "fixes:",
        "  inst_002: failed -> passed",
    ]


def test_json_reports_the_changes(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a", seed=1)
    small_runs(local_store, "run_b", seed=2)
    result = local_store.invoke("compare", "run_a", "run_b", "--json")
    assert result.exit_code == 1
    report = orjson.loads(result.stdout)
    assert report["counts"]["regressions"] == 1
    assert report["regressions"][0]["instance_id"] == "inst_001"
    assert report["streams"]["instances"] is False


def test_fixes_without_regressions_exit_0(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a", seed=2)  # inst_001 failed, inst_002 passed
    small_runs(local_store, "run_b", seed=3)  # both passed
    result = local_store.invoke("compare", "run_a", "run_b")
    assert result.exit_code == 0, result.output
    assert "  inst_001: failed -> passed" in result.stdout.splitlines()


def test_run_b_may_come_from_another_store(
    local_store: CliStore, cli_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a", seed=1)
    small_runs(cli_store, "run_b", seed=1)
    result = local_store.invoke("compare", "run_a", "run_b", "--store-b", cli_store.url)
    assert result.exit_code == 0, result.output


def test_an_unknown_run_is_an_error(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a")
    result = local_store.invoke("compare", "run_a", "nope")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "nope" in result.stderr
