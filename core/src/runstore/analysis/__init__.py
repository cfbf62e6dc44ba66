"""Analysis across runs: Arrow tables of every run and stream, and SQL over them.

Needs the ``analysis`` extra (``pip install 'runstore[analysis]'``: pyarrow
and DuckDB)::

    from runstore.analysis import instances_df, sql

    table = instances_df("runs", where="metadata.project = 'demo'")
    table.to_pandas().groupby("status").size()
    sql("SELECT status, count(*) FROM instances GROUP BY ALL", store="runs")

* :mod:`~.frames`: ``runs_df``, ``instances_df``, ``steps_df``,
  ``assertions_df``, ``logs_df``, ``metrics_df``, ``artifacts_df`` and
  ``stream_df`` for your own streams;
* :mod:`~.flatten`: how nested fields become columns;
* :mod:`~.sql_query`: ``sql``, DuckDB over those tables as views.

Everything reads through the public API, so any backend works.
"""

from __future__ import annotations

try:
    import pyarrow  # type: ignore[import-untyped]  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "runstore.analysis needs pyarrow and duckdb: pip install 'runstore[analysis]'"
    ) from exc

from runstore.analysis.frames import (
    TABLES,
    DamagedLinesWarning,
    artifacts_df,
    assertions_df,
    instances_df,
    logs_df,
    metrics_df,
    runs_df,
    steps_df,
    stream_df,
)
from runstore.analysis.sql_query import connect, sql

__all__ = [
    "TABLES",
    "DamagedLinesWarning",
    "artifacts_df",
    "assertions_df",
    "connect",
    "instances_df",
    "logs_df",
    "metrics_df",
    "runs_df",
    "sql",
    "steps_df",
    "stream_df",
]
