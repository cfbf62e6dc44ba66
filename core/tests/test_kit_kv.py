"""The key-value adapter passes the conformance kit on the simplest store, a dict."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

import runstore
from runstore.spi import BackendSpec, KVBackend, MemoryKV, hookimpl
from runstore.testing import StoreConformance

_names = itertools.count()


class _KVPlugin:
    @hookimpl
    def runstore_register_backends(self, register: Callable[[BackendSpec], None]) -> None:
        register(
            BackendSpec(
                name="memkv", factory=lambda target: KVBackend(MemoryKV()), schemes=("memkv",)
            )
        )


def _open() -> runstore.Store:
    return runstore.open(f"memkv://store-{next(_names)}", plugins=[_KVPlugin()])


class TestKVAdapterOnADict(StoreConformance):
    @pytest.fixture
    def store(self) -> Iterator[runstore.Store]:
        with _open() as store:
            yield store

    @pytest.fixture
    def store_factory(self) -> Callable[[], runstore.Store]:
        return _open
