"""runstore-postgres: the PostgreSQL backend (``postgresql://`` and ``postgres://`` URLs).

The entry point (:mod:`runstore_postgres.plugin`) registers it; psycopg is
imported when a store is opened. Test fixtures: :mod:`runstore_postgres.pytest_plugin`.
"""

from __future__ import annotations

__all__: list[str] = []
