"""SQL over runs: DuckDB on the Arrow tables of :mod:`~runstore.analysis.frames`.

``sql("SELECT status, count(*) FROM instances GROUP BY ALL", store="runs")``
runs one ``SELECT`` with the tables registered as views named ``runs``,
``instances``, ``steps``, ``assertions``, ``logs``, ``metrics`` and
``artifacts`` (:data:`~runstore.analysis.frames.TABLES`), over the runs
``where`` selects, and returns a :class:`pyarrow.Table`.

Why Arrow and not DuckDB's own file readers: ``read_json`` works on local
files only; S3 needs the ``httpfs`` extension, which DuckDB cannot download
at run time here, and third-party backends have no files. runstore reads
every backend through its public API and hands DuckDB Arrow tables. Only the
views a query names are built, each once.

The database is in memory and locked down: no file or network access, no
extension installed or loaded, configuration locked, and only ``SELECT``
statements (``DESCRIBE`` and ``SUMMARIZE`` count as ``SELECT``). A query
DuckDB rejects is an :class:`~runstore.model.errors.InvalidInputError` with
DuckDB's message. Column names with a dot (flattened fields) are quoted in
SQL: ``SELECT "observation.latency_ms" FROM steps``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any, Final

import duckdb

from runstore.analysis.frames import TABLES, StoreLike, opened, run_records, table
from runstore.model.errors import InvalidInputError
from runstore.model.records import ReadErrors, read_errors
from runstore.store import Store

__all__ = ["CONFIG", "connect", "referenced_views", "sql"]

CONFIG: Final[dict[str, str | bool | int | float | list[str]]] = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
"""DuckDB settings of every connection: no files, no network, no extensions."""

_VIEW_NAMES: Final = re.compile(r"\b(" + "|".join(TABLES) + r")\b", flags=re.IGNORECASE)


def referenced_views(query: str) -> list[str]:
    """The views of :data:`~runstore.analysis.frames.TABLES` that ``query`` names (maybe more)."""
    return sorted({m.lower() for m in _VIEW_NAMES.findall(query)})


def sql(
    query: str,
    store: StoreLike = None,
    *,
    where: str | None = None,
    errors: ReadErrors = "raise",
) -> Any:
    """Run one ``SELECT`` over the views of the runs ``where`` selects; a :class:`pyarrow.Table`.

    :param query: one SQL ``SELECT`` statement (DuckDB's dialect).
    :param store: a :class:`~runstore.Store` or a config string.
    :param where: which runs the views hold, in the filter language of ``list_runs``.
    :param errors: what a line that is not JSON does, as in
        :func:`~runstore.analysis.frames.stream_df`.
    """
    statement_check(query)
    with connect(store, where=where, views=referenced_views(query), errors=errors) as con:
        return execute(con, query)


@contextmanager
def connect(
    store: StoreLike = None,
    *,
    where: str | None = None,
    views: Collection[str] = TABLES,
    errors: ReadErrors = "raise",
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection with ``views`` registered over the runs ``where`` selects.

    For several queries over the same tables: ``with connect("runs") as con:
    con.sql("...").to_arrow_table()``. The connection is closed on exit.
    """
    errors = read_errors(errors)
    unknown = sorted(set(views) - set(TABLES))
    if unknown:
        raise InvalidInputError(
            f"no view named {', '.join(map(repr, unknown))}; the views are: {', '.join(TABLES)}",
            details={"unknown": unknown, "views": list(TABLES)},
        )
    with opened(store) as opened_store:
        con = database()
        try:
            register(con, opened_store, where=where, views=views, errors=errors)
            yield con
        finally:
            con.close()


def database() -> duckdb.DuckDBPyConnection:
    """An empty in-memory DuckDB database with :data:`CONFIG`."""
    return duckdb.connect(":memory:", config=CONFIG)


def register(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    *,
    where: str | None,
    views: Collection[str],
    errors: ReadErrors,
) -> None:
    """Build the tables ``views`` names over the runs ``where`` selects and register them."""
    if not views:
        return
    records = list(run_records(store, where))
    for name in TABLES:
        if name in views:
            con.register(name, table(store, name, records, errors=errors))


def statement_check(query: str) -> None:
    """Raise :class:`InvalidInputError` unless ``query`` is exactly one ``SELECT``."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidInputError(
            "the query is empty; write one SELECT, e.g. "
            "SELECT status, count(*) FROM instances GROUP BY ALL",
            details={"query": query if isinstance(query, str) else repr(query)},
        )
    try:
        statements = database().extract_statements(query)
    except duckdb.Error as exc:
        raise _sql_error(query, exc) from None
    kinds = [statement.type.name for statement in statements]
    if kinds != ["SELECT"]:
        raise InvalidInputError(
            f"runstore runs exactly one SELECT statement, got {', '.join(kinds) or 'none'}; "
            "the views are read-only",
            details={"query": query, "statements": kinds},
        )


def execute(con: duckdb.DuckDBPyConnection, query: str) -> Any:
    """Run ``query`` on ``con``; DuckDB's errors as :class:`InvalidInputError`."""
    statement_check(query)
    try:
        relation = con.sql(query)
        # to_arrow_table since DuckDB 1.4, which deprecates fetch_arrow_table
        fetch = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
        return fetch()
    except duckdb.Error as exc:
        raise _sql_error(query, exc) from None


def _sql_error(query: str, exc: duckdb.Error) -> InvalidInputError:
    message = str(exc).strip()
    hint = ""
    if isinstance(exc, duckdb.CatalogException):
        hint = f"; the views are: {', '.join(TABLES)}"
    elif isinstance(exc, duckdb.BinderException):
        hint = '; quote column names that hold a dot: "metadata.project"'
    first = message.splitlines()[0] if message else type(exc).__name__
    return InvalidInputError(
        f"SQL error: {first}{hint}",
        details={"query": query, "error": type(exc).__name__, "duckdb": message},
    )
