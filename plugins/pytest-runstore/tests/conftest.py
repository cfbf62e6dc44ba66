"""Fixtures for pytest-runstore's tests: inner pytest sessions and their stored runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import runstore


@pytest.fixture(autouse=True)
def _no_recording_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The outer session may itself be recorded; inner sessions decide for themselves.
    monkeypatch.delenv("PYTEST_RUNSTORE_URL", raising=False)
    monkeypatch.delenv("RUNSTORE_URL", raising=False)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def open_store(store_path: Path) -> Iterator[Callable[[], runstore.Store]]:
    opened: list[runstore.Store] = []

    def _open() -> runstore.Store:
        store = runstore.open(str(store_path))
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def only_run(open_store: Callable[[], runstore.Store]) -> Callable[[], runstore.RunView]:
    """The one run the inner session stored."""

    def _only() -> runstore.RunView:
        store = open_store()
        records = list(store.list_runs())
        assert len(records) == 1, [r.run_id for r in records]
        return store.get_run(records[0].run_id)

    return _only
