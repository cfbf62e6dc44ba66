"""The reference backend passes its own conformance kit."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

import runstore
from runstore.spi.backends import Capabilities
from runstore.testing import StoreConformance

_names = itertools.count()


class TestMemoryBackend(StoreConformance):
    capabilities = Capabilities(persistent=False)

    @pytest.fixture
    def store(self) -> Iterator[runstore.Store]:
        with runstore.open(f"memory://conformance-{next(_names)}") as store:
            yield store

    @pytest.fixture
    def store_factory(self) -> Callable[[], runstore.Store]:
        return lambda: runstore.open(f"memory://machine-{next(_names)}")
