"""Fixtures shared by the core tests."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

_names = itertools.count()


@pytest.fixture(params=["memory", "local"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store on each of the two embedded backends.

    A module that needs another store defines its own ``url``, which wins.
    """
    if request.param == "memory":
        return f"memory://{request.module.__name__}-{os.getpid()}-{next(_names)}"
    return str(tmp_path / "runs")
