"""``runstore cp``: copy runs between stores (local <-> S3), verified and resumable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from click.testing import Result

import runstore

if TYPE_CHECKING:
    from conftest import CliStore

Runs = Callable[..., None]


def _report(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def test_cp_copies_every_run_and_the_copies_verify_and_match(
    cli_store: CliStore, local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(cli_store, "run_a", seed=1)
    small_runs(cli_store, "run_b", seed=2, status="failed")
    report = _report(cli_store.invoke("cp", local_store.url, "--json"))
    assert sorted(report["copied"]) == ["run_a", "run_b"]
    assert report["bytes"] > 0
    assert local_store.invoke("verify").exit_code == 0
    for run_id in ("run_a", "run_b"):
        same = local_store.invoke("diff", run_id, run_id, "--store-b", cli_store.url)
        assert same.exit_code == 0, same.output
    listed = _report(local_store.invoke("ls", "--json"))
    assert {r["run_id"]: r["status"] for r in listed} == {"run_a": "succeeded", "run_b": "failed"}


def test_cp_to_s3_and_back(cli_store: CliStore, local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a", seed=3)
    assert _report(local_store.invoke("cp", cli_store.url, "--json"))["copied"] == ["run_a"]
    assert cli_store.invoke("verify", "run_a").exit_code == 0
    assert cli_store.read("run_a/artifacts/report.json") == local_store.read(
        "run_a/artifacts/report.json"
    )


def test_a_second_cp_skips_what_is_already_there(
    local_store: CliStore, small_runs: Runs, tmp_path: Path
) -> None:
    small_runs(local_store, "run_a", "run_b")
    backup = str(tmp_path / "backup")
    assert _report(local_store.invoke("cp", backup, "run_a", "--json"))["copied"] == ["run_a"]
    again = _report(local_store.invoke("cp", backup, "--json"))
    assert (again["copied"], again["skipped"]) == (["run_b"], ["run_a"])
    result = local_store.invoke("cp", backup)
    assert "skipped  run_a (already there)" in result.stdout
    assert "0 runs copied" in result.stdout


def test_a_live_run_is_left_alone_and_reported(local_store: CliStore, tmp_path: Path) -> None:
    with runstore.open(local_store.url) as store:
        run = store.create_run("run_live")
        run.append("steps", {"n": 1})
        report = _report(local_store.invoke("cp", str(tmp_path / "backup"), "--json"))
        run.finish()
    assert (report["copied"], report["live"]) == ([], ["run_live"])


def test_an_unknown_run_is_an_error_and_nothing_is_copied(
    local_store: CliStore, small_runs: Runs, tmp_path: Path
) -> None:
    small_runs(local_store, "run_a")
    result = local_store.invoke("cp", str(tmp_path / "backup"), "run_a", "run_nope", "--json")
    assert result.exit_code == 1
    assert orjson.loads(result.stdout)["error"]["code"] == "not_found"
    assert not (tmp_path / "backup" / "run_a").exists()


def test_another_run_under_the_same_id_is_a_conflict(
    local_store: CliStore, small_runs: Runs, tmp_path: Path
) -> None:
    small_runs(local_store, "run_a", seed=1)
    other = tmp_path / "other"
    with runstore.open(str(other)) as store:
        store.create_run("run_a", sut_name="someone else").finish()
    result = local_store.invoke("cp", str(other))
    assert result.exit_code == 1
    assert "different run" in result.stderr
