"""The local backend passes the conformance kit."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import runstore
from runstore.testing import StoreConformance, check_registration


class TestLocalBackend(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[runstore.Store]:
        with runstore.open(str(tmp_path / "runs")) as store:
            yield store

    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> Callable[[], runstore.Store]:
        names = itertools.count()
        return lambda: runstore.open(str(tmp_path / f"machine-{next(names)}"))


class TestLocalBackendFileUrl(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[runstore.Store]:
        with runstore.open(f"file://{tmp_path}/runs") as store:
            yield store


def test_entry_point_registers_local_backend() -> None:
    spec = check_registration("runstore-local", "local")
    assert spec.schemes == ("file",)
