"""The SQLite backend passes the conformance kit, and what is particular to it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import runstore
from runstore.testing import StoreConformance, check_registration


class TestSQLiteBackend(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[runstore.Store]:
        with runstore.open(f"sqlite://{tmp_path}/runs.db") as store:
            yield store

    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> Callable[[], runstore.Store]:
        names = itertools.count()
        return lambda: runstore.open(f"sqlite://{tmp_path}/machine{next(names)}.db")


def test_entry_point_registers_the_sqlite_backend() -> None:
    spec = check_registration("runstore-sqlite", "sqlite")
    assert spec.schemes == ("sqlite",)


def test_runs_outlive_the_store_that_wrote_them(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/runs.db"
    with runstore.open(url) as store, store.create_run(run_id="run_1") as run:
        run.append("steps", {"n": 1})
        run.put_artifact("report.json", b"{}")
    with runstore.open(url) as store:
        view = store.get_run("run_1")
        assert view.state.status == "succeeded"
        assert list(view.read("steps")) == [{"n": 1}]
        assert view.read_artifact("report.json", verify=True) == b"{}"


def test_a_relative_path_is_a_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with runstore.open("sqlite://runs.db") as store:
        store.create_run(run_id="run_1")
    assert (tmp_path / "runs.db").is_file()


def test_artifacts_can_be_routed_to_another_backend(tmp_path: Path) -> None:
    with runstore.open(f"sqlite://{tmp_path}/runs.db", artifacts="memory://big") as store:
        assert store.backend_names == {"state": "sqlite", "logs": "sqlite", "artifacts": "memory"}


def test_a_url_without_a_file_is_refused() -> None:
    with pytest.raises(runstore.InvalidInputError) as info:
        runstore.open("sqlite://")
    assert "sqlite:///path/to/runs.db" in info.value.message


def test_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(runstore.InvalidInputError) as info:
        runstore.open(f"sqlite://{tmp_path}/runs.db?timeout=5")
    assert info.value.details == {"options": ["timeout"]}


def test_durability_it_cannot_honour_is_unsupported(tmp_path: Path) -> None:
    with runstore.open(f"sqlite://{tmp_path}/runs.db", durability="fsync") as store:
        run = store.create_run(run_id="run_1")
        with pytest.raises(runstore.UnsupportedError):
            run.append("steps", {"n": 1})
