"""The local backend passes the conformance kit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import runstore
from runstore.testing import StoreConformance, check_registration


class TestLocalBackend(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[runstore.Store]:
        with runstore.open(str(tmp_path / "runs")) as store:
            yield store


class TestLocalBackendFileUrl(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[runstore.Store]:
        with runstore.open(f"file://{tmp_path}/runs") as store:
            yield store


def test_entry_point_registers_local_backend() -> None:
    spec = check_registration("runstore-local", "local")
    assert spec.schemes == ("file",)
