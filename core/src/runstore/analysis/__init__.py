"""Analysis across runs: Arrow tables of every run and stream, SQL over them, and
instance-by-instance comparison of two runs.

The tables and SQL need the ``analysis`` extra (``pip install
'runstore[analysis]'``: pyarrow and DuckDB)::

    from runstore.analysis import instances_df, sql

    table = instances_df("runs", where="metadata.project = 'demo'")
    table.to_pandas().groupby("status").size()
    sql("SELECT status, count(*) FROM instances GROUP BY ALL", store="runs")

* :mod:`~.frames`: ``runs_df``, ``instances_df``, ``steps_df``,
  ``assertions_df``, ``logs_df``, ``metrics_df``, ``artifacts_df`` and
  ``stream_df`` for your own streams;
* :mod:`~.flatten`: how nested fields become columns;
* :mod:`~.sql_query`: ``sql`` and ``connect``, DuckDB over those tables as views;
* :mod:`~.compare`: ``compare_runs``, regressions and fixes between two runs
  (no extra needed);
* :mod:`~.history`: ``flaky_instances``, ``slower_instances`` and
  ``broken_since_green`` across the recent runs of one suite (no extra needed).

Everything reads through the public API, so any backend works. The Arrow
names are imported on first use, so ``compare_runs`` and the history work
without the extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from runstore.analysis.compare import Comparison, InstanceChange, compare_runs
from runstore.analysis.history import (
    Breakage,
    BrokenInstance,
    FlakyInstance,
    InstanceHistory,
    SlowerInstance,
    broken_since_green,
    flaky_instances,
    instance_history,
    recent_runs,
    slower_instances,
)

if TYPE_CHECKING:
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
    "Breakage",
    "BrokenInstance",
    "Comparison",
    "DamagedLinesWarning",
    "FlakyInstance",
    "InstanceChange",
    "InstanceHistory",
    "SlowerInstance",
    "artifacts_df",
    "assertions_df",
    "broken_since_green",
    "compare_runs",
    "connect",
    "flaky_instances",
    "instance_history",
    "instances_df",
    "logs_df",
    "metrics_df",
    "recent_runs",
    "runs_df",
    "slower_instances",
    "sql",
    "steps_df",
    "stream_df",
]

_NEEDS_ARROW: Final = {
    **dict.fromkeys(
        [
            "TABLES",
            "DamagedLinesWarning",
            "artifacts_df",
            "assertions_df",
            "instances_df",
            "logs_df",
            "metrics_df",
            "runs_df",
            "steps_df",
            "stream_df",
        ],
        "frames",
    ),
    "connect": "sql_query",
    "sql": "sql_query",
}


def __getattr__(name: str) -> Any:
    module = _NEEDS_ARROW.get(name)
    if module is None:
        raise AttributeError(f"module 'runstore.analysis' has no attribute {name!r}")
    try:
        found = importlib.import_module(f"runstore.analysis.{module}")
    except ImportError as exc:
        raise ImportError(
            f"runstore.analysis.{name} needs pyarrow and duckdb: pip install 'runstore[analysis]'"
        ) from exc
    return getattr(found, name)
