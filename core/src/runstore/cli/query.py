"""``runstore query "SELECT ..."``: SQL over every run of a store.

A thin layer over :func:`runstore.analysis.sql` (DuckDB over Arrow tables
read through the public API, so any backend works), registered through
:data:`runstore.cli.app.LAZY_COMMANDS` so that only this command imports
pyarrow and DuckDB. It follows the conventions of :mod:`runstore.cli.app`:
a query DuckDB rejects is an error (exit 1, one line, or ``{"error": ...}``
with ``--json``); ``--json`` with ``--csv`` is a usage error (exit 2).
"""

from __future__ import annotations

import csv
import math
import sys
import warnings
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import click
import orjson
from rich.table import Table
from rich.text import Text

from runstore.cli.app import CliContext, json_option, pass_cli
from runstore.model.errors import UnsupportedError

__all__ = ["cell_text", "json_value", "query"]


def json_value(value: Any) -> Any:
    """What orjson cannot write itself (decimals, durations, bytes) as text."""
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def cell_text(value: Any, *, exact: bool = True) -> str:
    """One value as a CSV cell (``exact``: floats in full) or a terminal table cell."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if exact or not math.isfinite(value) else f"{value:.6g}"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | timedelta | int):
        return str(value)
    return orjson.dumps(value, default=json_value).decode()


def _rows(result: Any) -> list[tuple[Any, ...]]:
    """The result's rows as tuples (by position: SQL allows two columns of one name)."""
    return list(zip(*(column.to_pylist() for column in result.columns), strict=True))


def _terminal_table(
    names: Sequence[str], types: Sequence[Any], rows: list[tuple[Any, ...]]
) -> Table:
    table = Table(show_edge=False, header_style="bold")
    for name, type_ in zip(names, types, strict=True):
        numeric = str(type_).startswith(("int", "uint", "double", "float", "decimal"))
        table.add_column(name, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(
            *[
                Text("null", style="dim") if v is None else Text(cell_text(v, exact=False))
                for v in row
            ]
        )
    return table


@click.command("query")
@click.argument("sql_text", metavar="SQL")
@click.option(
    "--where",
    metavar="FILTER",
    help="Only runs matching FILTER (as in 'runstore ls --where'): the views hold their rows.",
)
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (a header line, then the rows).")
@click.option(
    "--skip-damaged",
    is_flag=True,
    help="Skip stream lines that are not JSON (a warning says where) instead of failing.",
)
@json_option(help='Print {"columns": [...], "rows": [{...}]} instead of a table.')
@pass_cli
def query(
    cli_ctx: CliContext, *, sql_text: str, where: str | None, as_csv: bool, skip_damaged: bool
) -> None:
    """Run one SQL SELECT (DuckDB) over the runs of the store.

    The views are runs (one row per run: status, times, sut_name, tags, the
    summary's counts, metadata.KEY, metrics.NAME), instances, steps,
    assertions, logs, metrics and artifacts (one row per record, with run_id
    and instance_id). Nested fields are flattened into columns named by
    their path, which SQL quotes: "observation.latency_ms". Only the views
    the query names are read. 'DESCRIBE steps' lists a view's columns.

    \b
    Examples:
      runstore query "SELECT status, count(*) FROM instances GROUP BY ALL"
      runstore query "SELECT run_id, pass_rate FROM runs ORDER BY created_at" --csv
      runstore query "SELECT step_name, max(\\"observation.latency_ms\\") FROM steps
                      GROUP BY ALL" --where "metadata.project = 'demo'" --json
    """
    if cli_ctx.json and as_csv:
        raise click.UsageError("--json and --csv cannot be used together")
    try:
        from runstore.analysis import sql
        from runstore.analysis.sql_query import statement_check
    except ImportError as exc:
        raise UnsupportedError(
            "runstore query needs pyarrow and duckdb: pip install 'runstore[analysis]'",
            details={"missing": getattr(exc, "name", None) or str(exc)},
        ) from None
    statement_check(sql_text)  # a malformed query is reported before the store is opened
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sql(
            sql_text, cli_ctx.store, where=where, errors="skip" if skip_damaged else "raise"
        )
    for warning in caught:
        cli_ctx.err.print(Text(f"warning: {warning.message}", style="yellow"))
    names: list[str] = result.column_names
    rows = _rows(result)
    if cli_ctx.json:
        records = [dict(zip(names, row, strict=True)) for row in rows]
        click.echo(
            orjson.dumps(
                {"columns": names, "rows": records},
                default=json_value,
                option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
            ).decode()
        )
    elif as_csv:
        out = sys.stdout
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([cell_text(value) for value in row] for row in rows)
        out.flush()
    else:
        cli_ctx.out.print(_terminal_table(names, result.schema.types, rows))
        cli_ctx.err.print(Text(f"{len(rows)} row{'' if len(rows) == 1 else 's'}", style="dim"))
