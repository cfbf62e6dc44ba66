"""``runstore diff``, end to end on a local and an S3 store, and across the two."""

from __future__ import annotations

from collections.abc import Callable
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


def _wheres(report: Any) -> list[str]:
    return [d["where"] for d in report["differences"]]


def test_two_runs_with_the_same_seed_are_identical(cli_store: CliStore, small_runs: Runs) -> None:
    small_runs(cli_store, "run_a", "run_b", seed=5)
    result = cli_store.invoke("diff", "run_a", "run_b")
    assert result.exit_code == 0, result.output
    assert "run_a and run_b are identical" in result.stdout


def test_runs_with_different_seeds_differ_with_exit_1(
    cli_store: CliStore, small_runs: Runs
) -> None:
    small_runs(cli_store, "run_a", seed=1)
    small_runs(cli_store, "run_b", seed=2)
    report = _report(cli_store.invoke("diff", "run_a", "run_b", "--json"), 1)
    assert report["identical"] is False
    wheres = _wheres(report)
    assert "manifest.json" in wheres
    assert "artifacts/report.json" in wheres
    assert "instances.jsonl line 1" in wheres


def test_the_readable_list_names_each_differing_field(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a", seed=1)
    small_runs(local_store, "run_b", seed=2)
    result = local_store.invoke("diff", "run_a", "run_b")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert "manifest.json: seed: 1 != 2" in lines
    assert 'instances.jsonl line 1: status: "passed" != "failed"' in lines
    assert any(line.startswith("artifacts/report.json: content differs (sha256 ") for line in lines)
    assert lines[-1].startswith("run_a and run_b differ: ")


def test_a_stream_or_artifact_only_one_run_has_is_named(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a")
    with runstore.open(local_store.url) as store:
        run = store.create_run("run_b", sut_name="shop", seed=1)
        run.log("info", "started", seed=1)
        run.finish()
    result = local_store.invoke("diff", "run_a", "run_b")
    assert result.exit_code == 1
    assert "steps.jsonl: only in RUN_A" in result.stdout
    assert "artifacts/inst_001/request.json: only in RUN_A" in result.stdout


def test_a_run_in_another_store_is_compared_with_store_b(
    cli_store: CliStore, local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(cli_store, "run_a", seed=3)
    small_runs(local_store, "run_b", seed=3)
    small_runs(local_store, "run_c", seed=4)
    same = cli_store.invoke("diff", "run_a", "run_b", "--store-b", local_store.url, "--json")
    report = _report(same, 0)
    assert report["identical"] is True
    assert report["run_b"] == {"store": local_store.url, "run_id": "run_b"}
    different = cli_store.invoke("diff", "run_a", "run_c", "--store-b", local_store.url)
    assert different.exit_code == 1


def test_limit_stops_after_that_many_differences(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a", seed=1)
    small_runs(local_store, "run_b", seed=2)
    report = _report(local_store.invoke("diff", "run_a", "run_b", "--limit", "2", "--json"), 1)
    assert len(report["differences"]) == 2
    assert report["truncated"] is True


def test_an_unknown_run_is_an_error_not_a_difference(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a")
    result = local_store.invoke("diff", "run_a", "run_nope", "--json")
    assert result.exit_code == 1
    assert orjson.loads(result.stdout)["error"]["code"] == "not_found"


def test_diff_needs_two_runs(local_store: CliStore) -> None:
    assert local_store.invoke("diff", "run_a").exit_code == 2
