"""The key-value example passes the whole conformance kit, across processes too."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import runstore
from runstore.testing import StoreConformance, check_registration


class TestSQLiteKVBackend(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[runstore.Store]:
        with runstore.open(f"sqlitekv://{tmp_path}/runs.db") as store:
            yield store

    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> Callable[[], runstore.Store]:
        names = itertools.count()
        return lambda: runstore.open(f"sqlitekv://{tmp_path}/machine{next(names)}.db")


def test_entry_point_registers_the_sqlitekv_backend() -> None:
    spec = check_registration("runstore-sqlitekv", "sqlitekv")
    assert spec.schemes == ("sqlitekv",)


def test_options_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(runstore.InvalidInputError) as info:
        runstore.open(f"sqlitekv://{tmp_path}/runs.db?timeout=5")
    assert info.value.details == {"options": ["timeout"]}
    assert not (tmp_path / "runs.db").exists()


def test_a_url_without_a_file_is_refused() -> None:
    with pytest.raises(runstore.InvalidInputError, match=r"sqlitekv:///path/to/runs\.db"):
        runstore.open("sqlitekv://")


def test_a_durability_it_cannot_honour_is_unsupported(tmp_path: Path) -> None:
    with runstore.open(f"sqlitekv://{tmp_path}/runs.db", durability="fsync") as store:
        run = store.create_run(run_id="run_1")
        with pytest.raises(runstore.UnsupportedError):
            run.append("steps", {"n": 1})
