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


def test_entry_point_registers_postgres_backend() -> None:
    spec = check_registration("runstore-postgres", "postgres")
    assert spec.schemes == ("postgresql", "postgres")
