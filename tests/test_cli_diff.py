"""``runstore diff``, end to end on a local and an S3 store, and across the two.

By default instance by instance (as ``runstore compare``), exit 1 on a
regression; ``--exact`` is the line-by-line comparison, exit 1 on any difference.
"""

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


def test_exact_runs_with_different_seeds_differ_with_exit_1(
    cli_store: CliStore, small_runs: Runs
) -> None:
    small_runs(cli_store, "run_a", seed=1)
    small_runs(cli_store, "run_b", seed=2)
    report = _report(cli_store.invoke("diff", "run_a", "run_b", "--exact", "--json"), 1)
    assert report["identical"] is False
    assert report["mode"] == "exact"
    wheres = _wheres(report)
    assert "manifest.json" in wheres
    assert "artifacts/report.json" in wheres
    assert "instances.jsonl line 1" in wheres


def test_exact_the_readable_list_names_each_differing_field(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a", seed=1)
    small_runs(local_store, "run_b", seed=2)
    result = local_store.invoke("diff", "run_a", "run_b", "--exact")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert "manifest.json: seed: 1 != 2" in lines
    assert 'instances.jsonl line 1: status: "passed" != "failed"' in lines
    assert any(line.startswith("artifacts/report.json: content differs (sha256 ") for line in lines)
    assert lines[-1].startswith("run_a and run_b differ: ")


def test_exact_names_a_stream_or_artifact_only_one_run_has(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a")
    with runstore.open(local_store.url) as store:
        run = store.create_run("run_b", sut_name="shop", seed=1)
        run.log("info", "started", seed=1)
        run.finish()
    result = local_store.invoke("diff", "run_a", "run_b", "--exact")
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
    assert different.exit_code == 1, different.output  # seed 4 fails inst_002
    assert "regressions:\n  inst_002: passed -> failed\n" in different.stdout
    exact = cli_store.invoke("diff", "run_a", "run_c", "--store-b", local_store.url, "--exact")
    assert exact.exit_code == 1


def test_exact_limit_stops_after_that_many_differences(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a", seed=1)
    small_runs(local_store, "run_b", seed=2)
    args = ("diff", "run_a", "run_b", "--exact", "--limit", "2", "--json")
    report = _report(local_store.invoke(*args), 1)
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


def test_an_unknown_run_is_an_error_with_exact_too(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a")
    result = local_store.invoke("diff", "run_nope", "run_a", "--exact", "--json")
    assert result.exit_code == 1
    assert orjson.loads(result.stdout)["error"]["code"] == "not_found"


# -- instance by instance (the default) ----------------------------------------------


def test_a_regression_is_named_by_instance_and_exits_1(
    cli_store: CliStore, small_runs: Runs
) -> None:
    small_runs(cli_store, "run_a", seed=1)  # inst_001 passes, inst_002 fails
    small_runs(cli_store, "run_b", seed=2)  # inst_001 fails, inst_002 passes
    report = _report(cli_store.invoke("diff", "run_a", "run_b", "--json"), 1)
    assert report["mode"] == "instances"
    assert report["identical"] is False
    assert report["run_a"] == {"store": cli_store.url, "run_id": "run_a"}
    assert [c["instance_id"] for c in report["regressions"]] == ["inst_001"]
    assert [c["instance_id"] for c in report["fixes"]] == ["inst_002"]
    assert report["regressions"][0]["assertions"] == [
        {"name": "ok", "step": None, "passed_a": True, "passed_b": False}
    ]
    assert report["counts"] == {
        "regressions": 1,
        "fixes": 1,
        "changed": 0,
        "new": 0,
        "missing": 0,
        "unchanged": 0,
    }


def test_the_readable_report_puts_regressions_first(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a", seed=1)
    small_runs(local_store, "run_b", seed=2)
    result = local_store.invoke("diff", "run_a", "run_b")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "run_a -> run_b: 1 regressions, 1 fixes, 0 changed, 0 new, 0 missing, 0 unchanged"
    )
    assert lines[1:7] == [
        "regressions:",
        "  inst_001: passed -> failed",
        "    assertion ok: passed -> failed",
        "fixes:",
        "  inst_002: failed -> passed",
        "    assertion ok: failed -> passed",
    ]


def _write(store: runstore.Store, run_id: str, outcomes: dict[str, str]) -> None:
    with store.create_run(run_id, seed=7) as run:
        for instance, status in outcomes.items():
            run.append("steps", {"instance_id": instance, "step_name": "go", "status": status})
            run.append("instances", {"instance_id": instance, "status": status})


def test_equal_runs_written_in_another_order_are_identical_but_not_exactly(
    local_store: CliStore,
) -> None:
    with runstore.open(local_store.url) as store:
        _write(store, "forward", {"i1": "passed", "i2": "failed", "i3": "passed"})
        _write(store, "backward", {"i3": "passed", "i2": "failed", "i1": "passed"})
    same = local_store.invoke("diff", "forward", "backward")
    assert same.exit_code == 0, same.output
    assert "forward and backward are identical instance by instance" in same.stdout
    assert _report(local_store.invoke("diff", "forward", "backward", "--json"), 0)["identical"]
    assert local_store.invoke("diff", "forward", "backward", "--exact").exit_code == 1


def test_new_missing_and_changed_instances_do_not_fail_the_gate(local_store: CliStore) -> None:
    with runstore.open(local_store.url) as store:
        _write(store, "before", {"i1": "passed", "i2": "passed", "i3": "failed"})
        _write(store, "after", {"i1": "skipped", "i3": "error", "i4": "passed"})
    report = _report(local_store.invoke("diff", "before", "after", "--json"), 0)
    assert [c["instance_id"] for c in report["changed"]] == ["i1", "i3"]
    assert [c["instance_id"] for c in report["new"]] == ["i4"]
    assert [c["instance_id"] for c in report["missing"]] == ["i2"]
    assert report["identical"] is False


def test_steps_compares_each_instances_steps_field_by_field(local_store: CliStore) -> None:
    with runstore.open(local_store.url) as store:
        for run_id, total in (("a", 10), ("b", 12)):
            with store.create_run(run_id) as run:
                run.append("steps", {"instance_id": "i1", "step_name": "pay", "total": total})
                run.append("instances", {"instance_id": "i1", "status": "passed"})
    plain = _report(local_store.invoke("diff", "a", "b", "--json"), 0)
    assert plain["changed"] == []
    assert plain["streams"]["steps"] is False
    report = _report(local_store.invoke("diff", "a", "b", "--steps", "--json"), 0)
    (change,) = report["changed"]
    assert change["steps"] == [
        {"index": 1, "step_name": "pay", "fields": {"total": {"a": 10, "b": 12}}}
    ]
    text = local_store.invoke("diff", "a", "b", "--steps").stdout
    assert "    step 1 pay: total: 10 -> 12" in text


def test_steps_and_exact_together_are_a_usage_error(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a")
    result = local_store.invoke("diff", "run_a", "run_a", "--steps", "--exact")
    assert result.exit_code == 2
    assert "pick one" in result.stderr


def test_diff_and_compare_agree(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a", seed=1)
    small_runs(local_store, "run_b", seed=2)
    diffed = _report(local_store.invoke("diff", "run_a", "run_b", "--json"), 1)
    compared = _report(local_store.invoke("compare", "run_a", "run_b", "--json"), 1)
    for key in ("regressions", "fixes", "changed", "new", "missing", "counts", "streams"):
        assert diffed[key] == compared[key], key
