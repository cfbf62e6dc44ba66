"""The PostgreSQL backend passes the conformance kit, state machine included."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import runstore
from runstore.testing import StoreConformance, check_registration
from runstore_postgres.testing import PostgresServer


class TestPostgresBackend(StoreConformance):
    @pytest.fixture
    def store(self, postgres_url: str) -> Iterator[runstore.Store]:
        with runstore.open(postgres_url) as store:
            yield store

    @pytest.fixture
    def store_factory(self, postgres_server: PostgresServer) -> Callable[[], runstore.Store]:
        postgres_server.start()
        return lambda: runstore.open(postgres_server.url(schema=postgres_server.fresh_schema()))


class TestPostgresBatchDurability(StoreConformance):
    """The same behaviours with group commit (``batch``): reads see what was appended
    once the kit flushes or finishes, as with object stores."""

    @pytest.fixture
    def store(self, postgres_url: str) -> Iterator[runstore.Store]:
        with runstore.open(postgres_url, durability="batch") as store:
            yield store


def test_entry_point_registers_postgres_backend() -> None:
    spec = check_registration("runstore-postgres", "postgres")
    assert spec.schemes == ("postgresql", "postgres")
