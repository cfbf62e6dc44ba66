"""The README's usage example runs as written, and closes the store it opens."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import runstore
from runstore.aio import AsyncStore

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def open_stores(monkeypatch: pytest.MonkeyPatch) -> dict[int, AsyncStore]:
    """Every store built and not yet closed (the sync ``Store`` wraps an ``AsyncStore``)."""
    opened: dict[int, AsyncStore] = {}
    built, aclose = AsyncStore.__init__, AsyncStore.aclose

    def tracked_init(self: AsyncStore, *args: object, **kwargs: object) -> None:
        built(self, *args, **kwargs)  # type: ignore[arg-type]
        opened[id(self)] = self

    async def tracked_aclose(self: AsyncStore) -> None:
        await aclose(self)
        opened.pop(id(self), None)

    monkeypatch.setattr(AsyncStore, "__init__", tracked_init)
    monkeypatch.setattr(AsyncStore, "aclose", tracked_aclose)
    return opened


def test_readme_usage_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_stores: dict[int, AsyncStore]
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNSTORE_URL", raising=False)
    namespace: dict[str, object] = {}
    try:
        exec(compile(blocks[0], str(README), "exec"), namespace)
        assert os.path.isdir(tmp_path / "runs")
        assert open_stores == {}, "the README's example leaves its store open: use `with`"
    finally:
        if open_stores:
            for value in namespace.values():
                if isinstance(value, runstore.Store):
                    value.close()


def test_a_store_left_open_is_seen(open_stores: dict[int, AsyncStore]) -> None:
    store = runstore.open("memory://left-open")
    assert list(open_stores.values()) == [store.aio]
    store.close()
    assert open_stores == {}
