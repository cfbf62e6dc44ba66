"""Schema migrations: the numbered SQL files of :mod:`runstore_postgres.migrations`.

``NNNN_name.sql`` is schema version ``NNNN``. :func:`migrate` applies the
versions a store lacks, in order, in one transaction that also records them in
``runstore_schema_version``; an advisory lock makes concurrent openers wait for
each other, so a schema is migrated once. A store whose version is newer than
the code is refused (:class:`~runstore.model.errors.UnsupportedError`) and left
as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from runstore.model.errors import UnsupportedError

__all__ = ["LATEST", "MIGRATIONS", "Migration", "migrate", "schema_version"]

VERSION_TABLE: Final = "runstore_schema_version"
# pg_advisory_xact_lock key shared by every runstore-postgres store: "runstore" in ASCII.
_LOCK: Final = 0x72756E73746F7265
_NAME: Final = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def _load() -> tuple[Migration, ...]:
    folder = resources.files("runstore_postgres.migrations")
    found = []
    for item in folder.iterdir():
        match = _NAME.fullmatch(item.name)
        if match:
            found.append(Migration(int(match[1]), item.name, item.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations are not numbered 1, 2, ...: {[m.name for m in found]}")
    return tuple(found)


MIGRATIONS: Final = _load()
LATEST: Final = MIGRATIONS[-1].version


async def schema_version(conn: psycopg.AsyncConnection[TupleRow], schema: str) -> int:
    """The version of ``schema`` (0 when it holds no runstore tables)."""
    cur = await conn.execute("SELECT to_regclass(%s)", (f'"{schema}".{VERSION_TABLE}',))
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return 0
    table = sql.Identifier(schema, VERSION_TABLE)
    cur = await conn.execute(sql.SQL("SELECT max(version) FROM {}").format(table))
    row = await cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _refuse(schema: str, found: int) -> UnsupportedError:
    return UnsupportedError(
        f"the PostgreSQL store in schema {schema!r} is at schema version {found}, newer than "
        f"this runstore-postgres understands (up to {LATEST}); upgrade it "
        "(pip install -U runstore-postgres) - the store was left unchanged",
        details={"schema": schema, "found": found, "supported": LATEST},
    )


async def migrate(
    conn: psycopg.AsyncConnection[TupleRow], schema: str, migrations: tuple[Migration, ...] = ()
) -> int:
    """Bring ``schema`` up to the latest version; return the versions applied.

    ``conn`` is in autocommit mode; the work is one transaction.
    """
    migrations = migrations or MIGRATIONS
    latest = migrations[-1].version
    found = await schema_version(conn, schema)
    if found == latest:
        return 0
    if found > latest:
        raise _refuse(schema, found)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(sql.Identifier(VERSION_TABLE))
        )
        found = await schema_version(conn, schema)  # again: another opener may have done it
        if found > latest:
            raise _refuse(schema, found)
        pending = [m for m in migrations if m.version > found]
        for migration in pending:
            await conn.execute(migration.sql.encode())
            await conn.execute(
                sql.SQL("INSERT INTO {} (version, name) VALUES (%s, %s)").format(
                    sql.Identifier(VERSION_TABLE)
                ),
                (migration.version, migration.name),
            )
    return len(pending)
