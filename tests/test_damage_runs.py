"""Damage stays in one run: store-wide commands report a damaged run and go on.

A run is damaged behind runstore's back: its ``state.json`` replaced by
garbage (local and S3), its directory swapped for a symbolic link to a copy
outside the store (local), a garbage line in its ``artifacts.jsonl``
(memory). ``verify``, ``gc``, ``cp`` and ``recover`` report that run as a
typed error naming its path and the cause, do their work on every other run,
and exit 1 at the end.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from click.testing import Result

import runstore
import runstore.aio
from runstore.model.errors import CorruptError, RunstoreError
from runstore.model.run import utcnow
from runstore.ops.maintenance import recover_runs
from runstore.ops.transfer import acopy_runs

if TYPE_CHECKING:
    from conftest import CliStore

Runs = Callable[..., None]
GARBAGE = b"{not json\n"


def _json(result: Result) -> Any:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return orjson.loads(result.stdout)


def _damaged(report: Any) -> dict[str, Any]:
    return {d["details"]["run_id"]: d for d in report["damaged"]}


def _garbage_state(store: CliStore, small_runs: Runs) -> None:
    small_runs(store, "run_a", "run_b", "run_c")
    store.overwrite("run_b/state.json", GARBAGE)


def _symlinked(store: CliStore, run_id: str, tmp_path: Path) -> Path:
    """Move the run's directory out of the store and leave a symbolic link in its place."""
    assert store.root is not None
    outside = tmp_path / f"outside-{run_id}"
    shutil.move(store.root / run_id, outside)
    (store.root / run_id).symlink_to(outside, target_is_directory=True)
    return outside


def _check_reported(error: Any, store: CliStore, run_id: str, code: str) -> None:
    assert error["code"] == code
    details = error["details"]
    assert details["path"].endswith(f"/{run_id}")
    if store.root is not None:
        assert details["path"] == str(store.root.resolve() / run_id)
    assert details["cause"]
    assert run_id in error["message"]
    assert details["path"] in error["message"]


# -- a garbage state.json (local and S3) ---------------------------------------------------


def test_gc_deletes_the_other_runs_and_reports_a_run_whose_state_is_garbage(
    cli_store: CliStore, small_runs: Runs
) -> None:
    _garbage_state(cli_store, small_runs)
    report = _json(cli_store.invoke("gc", "--keep-last", "0", "--json"))
    assert sorted(r["run_id"] for r in report["runs"]) == ["run_a", "run_c"]
    (error,) = report["damaged"]
    _check_reported(error, cli_store, "run_b", "corrupt")
    assert "state.json" in error["details"]["cause"]
    assert cli_store.exists("run_b/manifest.json")
    assert not cli_store.exists("run_a/manifest.json")


def test_gc_prints_the_damaged_run_on_stderr(cli_store: CliStore, small_runs: Runs) -> None:
    _garbage_state(cli_store, small_runs)
    result = cli_store.invoke("gc", "--keep-last", "0")
    assert result.exit_code == 1, result.output
    assert "deleted 2 runs" in result.stdout
    assert "run 'run_b' at " in result.stderr
    assert "is damaged" in result.stderr


def test_cp_copies_the_other_runs_and_reports_a_run_whose_state_is_garbage(
    cli_store: CliStore, small_runs: Runs, tmp_path: Path
) -> None:
    _garbage_state(cli_store, small_runs)
    backup = tmp_path / "backup"
    report = _json(cli_store.invoke("cp", str(backup), "--json"))
    assert sorted(report["copied"]) == ["run_a", "run_c"]
    (error,) = report["damaged"]
    _check_reported(error, cli_store, "run_b", "corrupt")
    with runstore.open(str(backup)) as copy:
        assert sorted(r.run_id for r in copy.list_runs()) == ["run_a", "run_c"]


def test_cp_of_a_damaged_run_named_on_the_command_line_reports_it(
    cli_store: CliStore, small_runs: Runs, tmp_path: Path
) -> None:
    _garbage_state(cli_store, small_runs)
    report = _json(cli_store.invoke("cp", str(tmp_path / "backup"), "run_b", "run_c", "--json"))
    assert report["copied"] == ["run_c"]
    assert list(_damaged(report)) == ["run_b"]


def test_verify_names_the_damaged_file_its_path_and_cause(
    cli_store: CliStore, small_runs: Runs
) -> None:
    _garbage_state(cli_store, small_runs)
    report = _json(cli_store.invoke("verify", "--json"))
    runs = {r["run_id"]: r for r in report["runs"]}
    assert [run_id for run_id, r in runs.items() if not r["ok"]] == ["run_b"]
    (problem,) = runs["run_b"]["problems"]
    assert problem["where"] == "state.json"
    assert problem["code"] == "corrupt"
    assert "run 'run_b' at " in problem["message"]


# -- a run directory swapped for a symbolic link (local) -----------------------------------


def test_verify_checks_every_other_run_past_a_symlinked_run(
    local_store: CliStore, small_runs: Runs, tmp_path: Path
) -> None:
    small_runs(local_store, "run_a", "run_b", "run_c")
    _symlinked(local_store, "run_b", tmp_path)
    report = _json(local_store.invoke("verify", "--json"))
    assert {r["run_id"]: r["ok"] for r in report["runs"]} == {
        "run_a": True,
        "run_b": False,
        "run_c": True,
    }
    (problem,) = next(r for r in report["runs"] if r["run_id"] == "run_b")["problems"]
    assert problem["code"] == "corrupt"
    assert "symbolic link" in problem["message"]


def test_gc_never_deletes_through_a_symlinked_run_and_deletes_the_others(
    local_store: CliStore, small_runs: Runs, tmp_path: Path
) -> None:
    small_runs(local_store, "run_a", "run_b", "run_c")
    outside = _symlinked(local_store, "run_b", tmp_path)
    report = _json(local_store.invoke("gc", "--keep-last", "0", "--json"))
    assert sorted(r["run_id"] for r in report["runs"]) == ["run_a", "run_c"]
    (error,) = report["damaged"]
    _check_reported(error, local_store, "run_b", "corrupt")
    assert "symbolic link" in error["details"]["cause"]
    assert (outside / "manifest.json").exists()


def test_gc_with_max_bytes_measures_the_others_past_a_symlinked_live_run(
    local_store: CliStore, small_runs: Runs, tmp_path: Path
) -> None:
    small_runs(local_store, "run_a", "run_b")
    with runstore.open(local_store.url) as store:
        store.create_run("run_live").append("steps", {"n": 1})
    _symlinked(local_store, "run_live", tmp_path)
    report = _json(local_store.invoke("gc", "--max-bytes", "1", "--json"))
    assert sorted(r["run_id"] for r in report["runs"]) == ["run_a", "run_b"]
    assert list(_damaged(report)) == ["run_live"]


def test_cp_copies_every_other_run_past_a_symlinked_run(
    local_store: CliStore, small_runs: Runs, tmp_path: Path
) -> None:
    small_runs(local_store, "run_a", "run_b", "run_c")
    _symlinked(local_store, "run_b", tmp_path)
    report = _json(local_store.invoke("cp", str(tmp_path / "backup"), "--json"))
    assert sorted(report["copied"]) == ["run_a", "run_c"]
    _check_reported(report["damaged"][0], local_store, "run_b", "corrupt")


def test_recover_looks_at_every_other_live_run_past_a_symlinked_live_run(
    local_store: CliStore, tmp_path: Path
) -> None:
    with runstore.open(local_store.url) as store:
        for run_id in ("run_a", "run_b", "run_c"):
            store.create_run(run_id).append("steps", {"n": 1})
    _symlinked(local_store, "run_b", tmp_path)
    report = _json(local_store.invoke("recover", "--dry-run", "--json"))
    assert sorted(r["run_id"] for r in report["runs"]) == ["run_a", "run_c"]
    _check_reported(report["damaged"][0], local_store, "run_b", "corrupt")


def test_recover_marks_the_dead_runs_crashed_past_a_symlinked_live_run(
    local_store: CliStore, tmp_path: Path
) -> None:
    with runstore.open(local_store.url) as store:
        for run_id in ("run_a", "run_b", "run_c"):
            store.create_run(run_id).append("steps", {"n": 1})
    _symlinked(local_store, "run_b", tmp_path)
    found: list[RunstoreError] = []

    async def recover() -> list[str]:
        async with runstore.aio.open(local_store.url) as store:
            later = utcnow() + timedelta(hours=1)
            done = await recover_runs(store, now=later, on_damage=found.append)
            return sorted(r.run_id for r in done if r.action == "marked_crashed")

    assert asyncio.run(recover()) == ["run_a", "run_c"]
    assert [(e.code, e.details["run_id"]) for e in found] == [("corrupt", "run_b")]


# -- a garbage line in artifacts.jsonl (memory) --------------------------------------------


async def _memory_runs(store: runstore.aio.AsyncStore) -> None:
    for run_id in ("run_a", "run_b", "run_c"):
        async with await store.create_run(run_id) as run:
            await run.put_artifact("x.json", b"{}")
    writer = await store.log_backend.open_writer("run_b", "artifacts")
    writer.write(GARBAGE)
    await writer.commit()
    await writer.close()


def test_cp_between_memory_stores_reports_the_damaged_run_and_copies_the_others() -> None:
    found: list[RunstoreError] = []

    async def copy() -> list[str]:
        async with (
            runstore.aio.open("memory://damage-src") as src,
            runstore.aio.open("memory://damage-dst") as dst,
        ):
            await _memory_runs(src)
            report = await acopy_runs(src, dst, on_damage=found.append)
            assert [e.details["run_id"] for e in report.damaged] == ["run_b"]
            return sorted(r.run_id for r in await dst.list_runs(status="succeeded"))

    assert asyncio.run(copy()) == ["run_a", "run_c"]
    (error,) = found
    assert isinstance(error, CorruptError)
    assert error.details["path"] == "memory://damage-src/run_b"


def test_without_a_handler_the_damage_is_raised_after_the_other_runs_are_done() -> None:
    async def copy() -> list[str]:
        async with (
            runstore.aio.open("memory://damage-raise") as src,
            runstore.aio.open("memory://damage-raise-dst") as dst,
        ):
            await _memory_runs(src)
            with pytest.raises(CorruptError, match="run 'run_b' at memory://damage-raise/run_b"):
                await acopy_runs(src, dst)
            return sorted(r.run_id for r in await dst.list_runs(status="succeeded"))

    assert asyncio.run(copy()) == ["run_a", "run_c"]
