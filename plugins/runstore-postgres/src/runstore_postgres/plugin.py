"""Entry point ``postgres`` of group ``runstore.plugins``: hook implementations only.

psycopg and the backend module are imported when a store is opened, not when
runstore discovers its plugins.
"""

from __future__ import annotations

from collections.abc import Callable

from runstore import BackendSpec, Target, hookimpl

__all__ = ["runstore_register_backends"]


def _factory(target: Target) -> object:
    from runstore_postgres.backend import PostgresBackend

    return PostgresBackend.from_target(target)


@hookimpl
def runstore_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="postgres",
            factory=_factory,
            schemes=("postgresql", "postgres"),
            description="PostgreSQL: one shared, queryable store for many hosts (libpq URLs)",
            distribution="runstore-postgres",
        )
    )
