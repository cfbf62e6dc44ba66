"""pytest fixtures: a real PostgreSQL server (``initdb`` + ``pg_ctl`` on 127.0.0.1) for tests.

Installing runstore-postgres registers this module with pytest (entry point
``pytest11``, plugin name ``runstore_postgres``; ``-p no:runstore_postgres``
turns it off). The server binaries are looked up by
:func:`~runstore_postgres.testing.find_server_binaries`; without them the
tests that use these fixtures are skipped with one reason naming what to install.

``postgres_server`` (session)
    The :class:`~runstore_postgres.testing.PostgresServer`, started at its first
    use on a temporary directory and a free port, removed at the end of the
    session. It runs with ``fsync=off`` (quick tests; durability against power
    loss is not what tests check). Stop and start it to simulate an outage.
``postgres_url``
    The URL of a fresh, empty store on that server (running, started again if a
    test stopped it): each test gets a schema of its own (``?schema=...``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runstore_postgres.testing import PostgresServer, ServerNotFound

__all__ = ["postgres_server", "postgres_url"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (skips the test when none can be started)."""
    try:
        server = PostgresServer(settings={"fsync": "off"})
    except ServerNotFound as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty store (a schema of its own) on the session's server."""
    postgres_server.start()  # again, if a test stopped it
    return postgres_server.url(schema=postgres_server.fresh_schema())
