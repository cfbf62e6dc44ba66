from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import runstore


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def store(root: Path) -> Iterator[runstore.Store]:
    with runstore.open(str(root)) as store:
        yield store
