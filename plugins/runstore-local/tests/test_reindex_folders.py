"""The local index follows the run folders; ``reindex`` rebuilds it explicitly.

Users of plain JSONL trees copy run folders into a store and delete them by
hand. The next listing notices (the store directory's signature changed) and
reconciles only the difference; while the directory is unchanged a listing
trusts the index without looking at the folders.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

import runstore
from runstore.cli.app import cli
from runstore.model.errors import CorruptError, RunstoreError
from runstore.ops.maintenance import reindex
from runstore_local.backend import LocalBackend


def _ids(store: runstore.Store) -> list[str]:
    return sorted(r.run_id for r in store.list_runs())


def _finished(root: Path, *run_ids: str) -> None:
    with runstore.open(str(root)) as store:
        for run_id in run_ids:
            with store.create_run(run_id, sut_name="shop") as run:
                run.append("steps", {"n": 1})


def _age(root: Path) -> None:
    """Date the store directory a minute back: its signature has settled for sure."""
    then = root.stat().st_mtime_ns - 60 * 10**9
    os.utime(root, ns=(then, then))


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Path, Path]:
    """A store with run_a and run_b, and another with run_x to copy folders from."""
    store, other = tmp_path / "runs", tmp_path / "other"
    _finished(store, "run_a", "run_b")
    _finished(other, "run_x")
    return store, other


def test_a_run_folder_copied_in_by_hand_is_listed_at_once(stores: tuple[Path, Path]) -> None:
    root, other = stores
    with runstore.open(str(root)) as store:
        assert _ids(store) == ["run_a", "run_b"]
        shutil.copytree(other / "run_x", root / "run_x")
        assert _ids(store) == ["run_a", "run_b", "run_x"]
        (record,) = store.list_runs(sut_name="shop", status="succeeded", where="run_id = 'run_x'")
        assert record.run_id == "run_x"


def test_a_run_folder_deleted_by_hand_leaves_the_listing_at_once(
    stores: tuple[Path, Path],
) -> None:
    root, _ = stores
    with runstore.open(str(root)) as store:
        assert _ids(store) == ["run_a", "run_b"]
        shutil.rmtree(root / "run_a")
        assert _ids(store) == ["run_b"]


def test_a_store_opened_later_sees_the_folders_changed_meanwhile(
    stores: tuple[Path, Path],
) -> None:
    root, other = stores
    with runstore.open(str(root)) as store:
        assert _ids(store) == ["run_a", "run_b"]
    _age(root)
    with runstore.open(str(root)) as store:
        assert _ids(store) == ["run_a", "run_b"]  # the settled signature is recorded
    shutil.copytree(other / "run_x", root / "run_x")
    shutil.rmtree(root / "run_b")
    with runstore.open(str(root)) as store:
        assert _ids(store) == ["run_a", "run_x"]


def test_an_unchanged_store_directory_is_trusted_without_reading_it(
    stores: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, other = stores
    reconciled: list[int] = []
    original = LocalBackend._reconcile  # the cost under test

    def counting(self: LocalBackend, *args: object) -> None:
        reconciled.append(1)
        original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalBackend, "_reconcile", counting)
    _age(root)
    with runstore.open(str(root)) as store:
        for _ in range(3):
            assert _ids(store) == ["run_a", "run_b"]
        assert len(reconciled) == 1  # once: the directory changed since the index was built
        shutil.copytree(other / "run_x", root / "run_x")
        _age(root)
        for _ in range(3):
            assert _ids(store) == ["run_a", "run_b", "run_x"]
        assert len(reconciled) == 2


def test_runs_created_through_the_api_meanwhile_stay_listed(stores: tuple[Path, Path]) -> None:
    root, _ = stores
    with runstore.open(str(root)) as first, runstore.open(str(root)) as second:
        assert _ids(first) == ["run_a", "run_b"]
        second.create_run("run_c").finish()
        assert _ids(first) == ["run_a", "run_b", "run_c"]
        first.delete_run("run_a")
        assert _ids(second) == ["run_b", "run_c"]


def test_files_and_folders_that_are_not_runs_are_not_listed(stores: tuple[Path, Path]) -> None:
    root, _ = stores
    (root / "notes.txt").write_text("mine")
    (root / "Scratch").mkdir()
    (root / "run_empty").mkdir()  # a run being created (or whose creation was cut short)
    with runstore.open(str(root)) as store:
        assert _ids(store) == ["run_a", "run_b"]


def test_a_damaged_folder_copied_in_is_not_listed_and_reindex_reports_it(
    stores: tuple[Path, Path],
) -> None:
    root, other = stores
    shutil.copytree(other / "run_x", root / "run_x")
    (root / "run_x" / "state.json").write_bytes(b"{not json")
    found: list[RunstoreError] = []

    async def rebuild() -> int:
        async with runstore.aio.open(str(root)) as store:
            assert sorted(r.run_id for r in await store.list_runs()) == ["run_a", "run_b"]
            return await reindex(store, on_damage=found.append)

    assert asyncio.run(rebuild()) == 2
    (error,) = found
    assert isinstance(error, CorruptError)
    assert error.details["run_id"] == "run_x"
    assert error.details["path"] == str(root / "run_x")
    assert "state.json" in error.details["cause"]


def test_reindex_rebuilds_an_index_whose_rows_were_lost(stores: tuple[Path, Path]) -> None:
    root, _ = stores
    _age(root)
    with runstore.open(str(root)) as store:
        assert _ids(store) == ["run_a", "run_b"]
        backend = store.aio.state_backend
        assert isinstance(backend, LocalBackend)
        backend._index.delete("run_a")  # lose a row behind its back
        assert _ids(store) == ["run_b"]  # the folders did not change: the index is trusted
        assert store.portal.call(reindex(store.aio)) == 2
        assert _ids(store) == ["run_a", "run_b"]


def test_runstore_reindex_prints_the_count(stores: tuple[Path, Path]) -> None:
    root, _ = stores
    result = CliRunner().invoke(cli, ["--store", str(root), "reindex", "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout) == {"store": str(root), "runs": 2, "damaged": []}
    human = CliRunner().invoke(cli, ["--store", str(root), "reindex"])
    assert human.exit_code == 0, human.output
    assert human.stdout.strip() == f"reindexed {root}: 2 runs"


def test_runstore_reindex_reports_a_damaged_run_and_exits_1(
    stores: tuple[Path, Path], tmp_path: Path
) -> None:
    root, _ = stores
    outside = tmp_path / "moved-away"
    shutil.move(root / "run_b", outside)
    (root / "run_b").symlink_to(outside, target_is_directory=True)
    result = CliRunner().invoke(cli, ["--store", str(root), "reindex", "--json"])
    assert result.exit_code == 1, result.output
    report = orjson.loads(result.stdout)
    assert report["runs"] == 1
    (error,) = report["damaged"]
    assert error["code"] == "corrupt"
    assert error["details"]["path"] == str(root / "run_b")
    assert "symbolic link" in error["details"]["cause"]
    human = CliRunner().invoke(cli, ["--store", str(root), "reindex"])
    assert human.exit_code == 1
    assert f"damaged: run 'run_b' at {root / 'run_b'} is damaged" in human.stderr


def test_a_folder_listed_while_it_was_being_copied_in_is_listed_once_complete(
    stores: tuple[Path, Path],
) -> None:
    root, other = stores
    with runstore.open(str(root)) as store:
        (root / "run_x").mkdir()  # cp -r has made the folder, not its files yet
        assert _ids(store) == ["run_a", "run_b"]
        _age(root)
        assert _ids(store) == ["run_a", "run_b"]
        for item in sorted((other / "run_x").iterdir()):
            if item.is_file():
                shutil.copy2(item, root / "run_x" / item.name)
        assert _ids(store) == ["run_a", "run_b", "run_x"]


def test_a_damaged_folder_is_listed_once_repaired(stores: tuple[Path, Path]) -> None:
    root, other = stores
    shutil.copytree(other / "run_x", root / "run_x")
    good = (root / "run_x" / "state.json").read_bytes()
    (root / "run_x" / "state.json").write_bytes(b"{not json")
    with runstore.open(str(root)) as store:
        assert _ids(store) == ["run_a", "run_b"]
        _age(root)
        assert _ids(store) == ["run_a", "run_b"]
        (root / "run_x" / "state.json").write_bytes(good)
        assert _ids(store) == ["run_a", "run_b", "run_x"]


def test_ls_lists_the_other_runs_and_reports_a_damaged_folder_copied_in(
    stores: tuple[Path, Path],
) -> None:
    root, other = stores
    shutil.copytree(other / "run_x", root / "run_x")
    (root / "run_x" / "manifest.json").write_bytes(b"garbage")
    result = CliRunner().invoke(cli, ["--store", str(root), "ls", "--json"])
    assert result.exit_code == 1, result.output
    assert sorted(r["run_id"] for r in orjson.loads(result.stdout)) == ["run_a", "run_b"]
    assert f"damaged: run 'run_x' at {root / 'run_x'} is damaged: " in result.stderr
    assert "manifest.json" in result.stderr
    again = CliRunner().invoke(cli, ["--store", str(root), "ls"])  # another process: the same
    assert again.exit_code == 1
    assert "run_a" in again.stdout
    assert "damaged: run 'run_x'" in again.stderr
