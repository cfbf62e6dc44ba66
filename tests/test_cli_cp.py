"""``runstore cp``: copy runs between stores (local <-> S3), verified and resumable."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from click.testing import CliRunner, Result

import runstore
from runstore.cli.app import cli
from runstore.model.errors import InvalidInputError
from runstore.ops.transfer import copy_runs

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
        same = local_store.invoke("diff", run_id, run_id, "--store-b", cli_store.url, "--exact")
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


# -- concurrency ---------------------------------------------------------------------


def _many_artifacts(url: str, run_id: str, count: int) -> None:
    with runstore.open(url) as store, store.create_run(run_id) as run:
        for n in range(count):
            run.put_artifact(f"inst_{n:03d}/request.json", orjson.dumps({"n": n}))


class _Gate:
    """Wraps a backend's ``put``: holds each upload until ``opened_at`` are in flight at once.

    Sequential copies never get there and fail on the timeout; the peak shows
    the bound was kept.
    """

    def __init__(self, backend: Any, opened_at: int) -> None:
        self.put = backend.put
        self.opened_at = opened_at
        self.in_flight = 0
        self.peak = 0
        self.open: asyncio.Event | None = None

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.open is None:
            self.open = asyncio.Event()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.in_flight >= self.opened_at:
                self.open.set()
            await asyncio.wait_for(self.open.wait(), timeout=60)
            return await self.put(*args, **kwargs)
        finally:
            self.in_flight -= 1


def test_cp_copies_artifacts_concurrently_within_the_bound(
    local_store: CliStore, tmp_path: Path
) -> None:
    _many_artifacts(local_store.url, "run_many", 20)
    with runstore.open(local_store.url) as source, runstore.open(str(tmp_path / "copy")) as target:
        gate = _Gate(target.aio.artifact_backend, opened_at=4)
        target.aio.artifact_backend.put = gate  # type: ignore[method-assign]
        report = copy_runs(source, target, concurrency=4)
    assert report.copied == ["run_many"]
    assert gate.peak == 4
    done = CliRunner().invoke(cli, ["--store", str(tmp_path / "copy"), "verify", "--json"])
    assert orjson.loads(done.stdout)["ok"] is True


def test_cp_with_jobs_1_copies_one_artifact_at_a_time(
    local_store: CliStore, tmp_path: Path
) -> None:
    _many_artifacts(local_store.url, "run_many", 5)
    with runstore.open(local_store.url) as source, runstore.open(str(tmp_path / "copy")) as target:
        gate = _Gate(target.aio.artifact_backend, opened_at=1)
        target.aio.artifact_backend.put = gate  # type: ignore[method-assign]
        copy_runs(source, target, concurrency=1)
    assert gate.peak == 1


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, True])
def test_a_concurrency_below_one_is_invalid_input_and_copies_nothing(
    local_store: CliStore, tmp_path: Path, concurrency: Any
) -> None:
    _many_artifacts(local_store.url, "run_many", 1)
    with runstore.open(local_store.url) as source, runstore.open(str(tmp_path / "copy")) as target:
        with pytest.raises(InvalidInputError, match="concurrency"):
            copy_runs(source, target, concurrency=concurrency)
        assert target.list_runs() == []


def test_cp_jobs_0_is_a_usage_error(local_store: CliStore, tmp_path: Path) -> None:
    _many_artifacts(local_store.url, "run_many", 1)
    result = local_store.invoke("cp", str(tmp_path / "copy"), "--jobs", "0")
    assert result.exit_code == 2
    assert "--jobs" in result.stderr
    assert not (tmp_path / "copy").exists()


def test_cp_lists_the_runs_in_id_order_however_they_interleave(
    local_store: CliStore, tmp_path: Path
) -> None:
    for run_id in ("run_c", "run_a", "run_b", "run_d", "run_e"):
        _many_artifacts(local_store.url, run_id, 3)
    report = _report(local_store.invoke("cp", str(tmp_path / "copy"), "--json", "-j", "8"))
    assert report["copied"] == ["run_a", "run_b", "run_c", "run_d", "run_e"]
