"""Arrow tables of runs and of their streams, across every run of a store.

``instances_df(store, where="metadata.project = 'demo'")`` reads the
``instances`` stream of each run the filter selects (the ``where`` language of
``list_runs``) into one :class:`pyarrow.Table`: one row per record, with
``run_id`` and ``instance_id`` on every row and nested fields flattened by
:mod:`~runstore.analysis.flatten`'s rule. ``table.to_pandas()`` and
``polars.from_arrow(table)`` turn it into a DataFrame.

Everything is read through the public API (``list_runs``, ``get_run``,
``read_lines``, ``artifacts``), so every backend works, third-party ones
included. Memory stays bounded by the result: a run's records go from the
stream's lines into Arrow a block of about :data:`BLOCK_BYTES` at a time,
never as a store's worth of Python dicts.

Runs come oldest first (``created_at``); within a run, records come in the
order they were appended.
"""

from __future__ import annotations

import asyncio
import fnmatch
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from runstore.aio import AsyncStore
from runstore.analysis.flatten import Columns, flatten, lines_table, records_table
from runstore.model.errors import CorruptError, InvalidInputError, NotFoundError
from runstore.model.records import LineDecoder, ReadErrors, read_errors
from runstore.model.run import ArtifactRef, RunRecord
from runstore.reading import readable_artifacts
from runstore.spi.layout import METRICS_STREAM
from runstore.store import RunView, Store
from runstore.store import open as open_store

__all__ = [
    "BLOCK_BYTES",
    "TABLES",
    "DamagedLinesWarning",
    "StoreLike",
    "artifacts_df",
    "assertions_df",
    "instances_df",
    "logs_df",
    "metrics_df",
    "run_records",
    "runs_df",
    "steps_df",
    "stream_df",
    "table",
]

StoreLike = Store | str | None
"""A :class:`~runstore.Store`, or a config string to open
(``None``: ``$RUNSTORE_URL`` or ``./runs``)."""

BLOCK_BYTES: Final = 4 << 20
"""Bytes of a stream's lines turned into Arrow at a time."""

TABLES: Final = ("runs", "instances", "steps", "assertions", "logs", "metrics", "artifacts")
"""The tables this module builds, by name (the views of :func:`runstore.analysis.sql`)."""

_PAGE: Final = 500
_AHEAD: Final = 2
_STRING: Final = pa.string()
_TIME: Final = pa.timestamp("us", tz="UTC")
_INT: Final = pa.int64()
_FLOAT: Final = pa.float64()
_STRINGS: Final = pa.list_(pa.string())

_RUN_COLUMNS: Final = {
    "run_id": _STRING,
    "status": _STRING,
    "created_at": _TIME,
    "updated_at": _TIME,
    "finished_at": _TIME,
    "sut_name": _STRING,
    "scenario_ids": _STRINGS,
    "tags": _STRINGS,
    "seed": _INT,
    "instance_count": _INT,
    "pass_count": _INT,
    "fail_count": _INT,
    "error_count": _INT,
    "skip_count": _INT,
    "pass_rate": _FLOAT,
    "duration_ms": _INT,
}
"""The columns of ``runs`` that every table has: a run index record's fields."""

_STREAM_COLUMNS: Final[dict[str, dict[str, Any]]] = {
    "instances": {"status": _STRING, "scenario_id": _STRING},
    "steps": {"step_name": _STRING},
    "assertions": {"name": _STRING, "passed": pa.bool_()},
    "logs": {"ts": _TIME, "level": _STRING, "message": _STRING},
    METRICS_STREAM: {"name": _STRING, "value": _FLOAT, "step": _INT, "ts": _TIME},
}
"""Columns a standard stream's table has even when no record wrote them (SQL can name them)."""

_ARTIFACT_COLUMNS: Final = {
    "name": _STRING,
    "kind": _STRING,
    "sha256": _STRING,
    "size": _INT,
    "media_type": _STRING,
    "created_at": _TIME,
    "uri": _STRING,
}

_TIME_COLUMNS: Final = frozenset({"ts", "created_at"})
"""Columns of stream tables stored as ISO 8601 text, read as UTC timestamps when all parse."""


class DamagedLinesWarning(UserWarning):
    """Lines that were not JSON were skipped (``errors="skip"``); the message says where."""


@contextmanager
def opened(store: StoreLike) -> Iterator[Store]:
    """``store`` itself, or the store its config string names, closed afterwards."""
    if isinstance(store, Store):
        yield store
        return
    if store is not None and not isinstance(store, str):
        raise InvalidInputError(
            f"store must be a runstore.Store or a config string, got {type(store).__name__}",
            details={"type": type(store).__name__},
        )
    with open_store(store) as own:
        yield own


def run_records(store: Store, where: str | None = None) -> Iterator[RunRecord]:
    """The index records of the runs ``where`` selects, oldest first, a page at a time."""
    token: str | None = None
    while True:
        page = store.list_runs(where=where, order_by="created_at", limit=_PAGE, page_token=token)
        yield from page
        token = page.next_page_token
        if token is None:
            return


# -- the tables ------------------------------------------------------------------------


def runs_df(
    store: StoreLike = None, *, where: str | None = None, columns: Sequence[str] | None = None
) -> Any:
    """One row per run: its index record (status, times, sut, tags, results), flattened.

    ``metadata`` and ``metrics`` become ``metadata.<key>`` and
    ``metrics.<name>`` columns; ``tags`` and ``scenario_ids`` are lists.

    :param store: a :class:`~runstore.Store` or a config string.
    :param where: which runs, in the filter language of ``list_runs``.
    :param columns: the columns to keep: names, or patterns such as
        ``"metadata.*"`` (``run_id`` is always kept).
    """
    with opened(store) as opened_store:
        return _runs(opened_store, run_records(opened_store, where), columns)


def instances_df(
    store: StoreLike = None,
    *,
    where: str | None = None,
    columns: Sequence[str] | None = None,
    errors: ReadErrors = "raise",
) -> Any:
    """One row per record of the ``instances`` streams: see :func:`stream_df`."""
    return stream_df(store, "instances", where=where, columns=columns, errors=errors)


def steps_df(
    store: StoreLike = None,
    *,
    where: str | None = None,
    columns: Sequence[str] | None = None,
    errors: ReadErrors = "raise",
) -> Any:
    """One row per record of the ``steps`` streams: see :func:`stream_df`."""
    return stream_df(store, "steps", where=where, columns=columns, errors=errors)


def assertions_df(
    store: StoreLike = None,
    *,
    where: str | None = None,
    columns: Sequence[str] | None = None,
    errors: ReadErrors = "raise",
) -> Any:
    """One row per record of the ``assertions`` streams: see :func:`stream_df`."""
    return stream_df(store, "assertions", where=where, columns=columns, errors=errors)


def logs_df(
    store: StoreLike = None,
    *,
    where: str | None = None,
    columns: Sequence[str] | None = None,
    errors: ReadErrors = "raise",
) -> Any:
    """One row per log line (``logs`` streams; ``ts`` a UTC timestamp): see :func:`stream_df`."""
    return stream_df(store, "logs", where=where, columns=columns, errors=errors)


def metrics_df(
    store: StoreLike = None,
    *,
    where: str | None = None,
    columns: Sequence[str] | None = None,
    errors: ReadErrors = "raise",
) -> Any:
    """One row per ``run.log_metric`` (name, value, step, ts); see :func:`stream_df`."""
    return stream_df(store, METRICS_STREAM, where=where, columns=columns, errors=errors)


def stream_df(
    store: StoreLike,
    stream: str,
    *,
    where: str | None = None,
    columns: Sequence[str] | None = None,
    errors: ReadErrors = "raise",
) -> Any:
    """One row per record of ``stream`` (a standard or your own) in every run ``where`` selects.

    Every row has ``run_id`` (the run's, whatever the record says) and
    ``instance_id`` (null where the record has none); the record's fields
    follow, flattened (:mod:`~runstore.analysis.flatten`). A run without the
    stream adds no rows.

    :param store: a :class:`~runstore.Store` or a config string.
    :param stream: the stream's name (``steps``, ``phase_outputs``).
    :param where: which runs, in the filter language of ``list_runs``.
    :param columns: the columns to keep: names, or patterns such as
        ``"observation.*"``; ``run_id`` and ``instance_id`` are always kept.
        A name that no record has is an
        :class:`~runstore.model.errors.InvalidInputError` naming the columns there are.
    :param errors: a line that is not JSON raises
        :class:`~runstore.model.errors.CorruptError` naming its run and line
        (``"raise"``), or is skipped with a :class:`DamagedLinesWarning` (``"skip"``).
    """
    errors = read_errors(errors)
    with opened(store) as opened_store:
        return _stream(opened_store, run_records(opened_store, where), stream, columns, errors)


def artifacts_df(
    store: StoreLike = None,
    *,
    where: str | None = None,
    columns: Sequence[str] | None = None,
    errors: ReadErrors = "raise",
) -> Any:
    """One row per stored artifact: its reference (name, kind, sha256, size, uri, ``metadata.*``).

    ``instance_id`` is the artifact's ``metadata.instance_id`` if it has one,
    else the first folder of its name (``inst_001/step_001_request.json``
    belongs to ``inst_001``, as in replay bundles), else null.
    """
    errors = read_errors(errors)
    with opened(store) as opened_store:
        return _artifacts(opened_store, run_records(opened_store, where), columns, errors)


def table(
    store: Store,
    name: str,
    records: Sequence[RunRecord],
    *,
    columns: Sequence[str] | None = None,
    errors: ReadErrors = "raise",
) -> Any:
    """The table ``name`` (one of :data:`TABLES`, or a stream) over runs already listed."""
    if name == "runs":
        return _runs(store, iter(records), columns)
    if name == "artifacts":
        return _artifacts(store, iter(records), columns, errors)
    return _stream(store, iter(records), name, columns, errors)


# -- building them ---------------------------------------------------------------------


def _runs(store: Store, records: Iterator[RunRecord], columns: Sequence[str] | None) -> Any:
    out = Columns(["run_id"], _RUN_COLUMNS, _selection(columns))
    page: list[dict[str, Any]] = []
    for record in records:
        page.append(flatten(record.model_dump()))
        if len(page) == _PAGE:
            out.add(records_table(page, _RUN_COLUMNS))
            page = []
    if page:
        out.add(records_table(page, _RUN_COLUMNS))
    return _finish(out, columns)


def _stream(
    store: Store,
    records: Iterator[RunRecord],
    stream: str,
    columns: Sequence[str] | None,
    errors: ReadErrors,
) -> Any:
    out = Columns(["run_id", "instance_id"], _STREAM_COLUMNS.get(stream, {}), _selection(columns))
    skipped: list[str] = []
    run_ids = [record.run_id for record in records]
    for run_id, lines, first in store.portal.iterate(_blocks(store.aio, run_ids, stream)):
        table = lines_table(lines)
        if table is None:
            table = _parse_slowly(
                lines, first, run_id=run_id, stream=stream, errors=errors, skipped=skipped
            )
        out.add(_with_run_id(table, run_id))
    if skipped:
        warnings.warn(
            DamagedLinesWarning(
                f"skipped {len(skipped)} damaged lines of {stream}.jsonl: {', '.join(skipped[:10])}"
                f"{' ...' if len(skipped) > 10 else ''}; 'runstore verify' lists them"
            ),
            stacklevel=3,
        )
    return _as_times(_finish(out, columns))


def _artifacts(
    store: Store, records: Iterator[RunRecord], columns: Sequence[str] | None, errors: ReadErrors
) -> Any:
    out = Columns(["run_id", "instance_id"], _ARTIFACT_COLUMNS, _selection(columns))
    for record in records:
        view = _view(store, record.run_id)
        if view is None:
            continue
        if errors == "skip":
            refs, damaged = store.portal.call(readable_artifacts(view.aio))
            if damaged.total:
                warnings.warn(
                    DamagedLinesWarning(
                        f"skipped {damaged.total} damaged lines of artifacts.jsonl of run "
                        f"{view.run_id!r}; 'runstore verify' lists them"
                    ),
                    stacklevel=3,
                )
        else:
            refs = view.artifacts()
        rows = [_artifact_row(ref) for ref in refs]
        if rows:
            out.add(records_table(rows, {**_ARTIFACT_COLUMNS, "run_id": _STRING}))
    return _finish(out, columns)


def _artifact_row(ref: ArtifactRef) -> dict[str, Any]:
    row = flatten(ref.model_dump())
    owner = (ref.metadata or {}).get("instance_id")
    if not isinstance(owner, str):
        folder, slash, _ = ref.name.partition("/")
        owner = folder if slash else None
    return {"run_id": ref.run_id, "instance_id": owner, **row}


def _view(store: Store, run_id: str) -> RunView | None:
    try:
        return store.get_run(run_id)
    except NotFoundError:  # deleted since it was listed
        return None


async def _blocks(
    store: AsyncStore, run_ids: list[str], stream: str
) -> AsyncIterator[tuple[str, list[bytes], int]]:
    """Each run's complete lines of ``stream`` in blocks of about :data:`BLOCK_BYTES`.

    Yields ``(run_id, lines, number of the first line)``. The next blocks are
    read while the caller parses this one (up to :data:`_AHEAD` blocks ahead),
    so reading and parsing overlap and memory holds a few blocks at most.
    """
    queue: asyncio.Queue[tuple[str, list[bytes], int] | BaseException | None] = asyncio.Queue(
        maxsize=_AHEAD
    )

    async def produce() -> None:
        try:
            for run_id in run_ids:
                try:
                    view = await store.get_run(run_id)
                except NotFoundError:  # deleted since it was listed
                    continue
                decoder = LineDecoder(stream)
                lines: list[bytes] = []
                size, first = 0, 1
                async for chunk in view.follow_chunks(stream, decoder):
                    lines += decoder.feed(chunk)
                    size += len(chunk)
                    if size >= BLOCK_BYTES and lines:
                        await queue.put((run_id, lines, first))
                        first += len(lines)
                        lines, size = [], 0
                if lines:
                    await queue.put((run_id, lines, first))
            await queue.put(None)
        except Exception as exc:  # the consumer raises it (cancellation is not caught)
            await queue.put(exc)

    producer = asyncio.create_task(produce())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        producer.cancel()


def _parse_slowly(
    lines: list[bytes],
    first: int,
    *,
    run_id: str,
    stream: str,
    errors: ReadErrors,
    skipped: list[str],
) -> Any:
    rows: list[dict[str, Any]] = []
    for index, line in enumerate(lines):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            where = f"{stream}.jsonl line {first + index} of run {run_id!r}"
            if errors == "raise":
                raise CorruptError(
                    f"{where} is not valid JSON ({exc}); pass errors='skip' to skip damaged "
                    "lines, or run 'runstore verify' to see every one",
                    details={"run_id": run_id, "stream": stream, "line": first + index},
                ) from None
            skipped.append(f"run {run_id} line {first + index}")
            continue
        rows.append(flatten(record))
    return records_table(rows)


def _with_run_id(block: Any, run_id: str) -> Any:
    """``block`` with a first column ``run_id``: the run's, whatever a record says."""
    if "run_id" in block.column_names:
        block = block.drop_columns(["run_id"])
    return block.add_column(0, "run_id", pa.array([run_id] * block.num_rows, _STRING))


def _selection(columns: Sequence[str] | None) -> Callable[[str], bool] | None:
    if columns is None:
        return None
    if isinstance(columns, str):
        raise InvalidInputError(
            f"columns must be a list of names, got the string {columns!r}; "
            f"write columns=[{columns!r}]",
            details={"columns": columns},
        )
    patterns = list(columns)
    return lambda name: any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _finish(out: Columns, columns: Sequence[str] | None) -> Any:
    result = out.table()
    if columns is None:
        return result
    names = result.column_names
    missing = [c for c in columns if not _is_pattern(c) and c not in names]
    if missing:
        available = list(dict.fromkeys([*out.leading, *out.standard, *out.seen]))
        raise InvalidInputError(
            f"no column {', '.join(map(repr, missing))}; the columns there are: "
            f"{', '.join(available)}",
            details={"missing": missing, "columns": available},
        )
    order = list(out.leading)
    for pattern in columns:
        order += [n for n in names if n not in order and fnmatch.fnmatchcase(n, pattern)]
    return result.select(order)


def _is_pattern(name: str) -> bool:
    return any(char in name for char in "*?[")


def _as_times(result: Any) -> Any:
    """ISO 8601 text in the time columns as UTC timestamps, when every value parses."""
    for name in _TIME_COLUMNS & set(result.column_names):
        index = result.column_names.index(name)
        column = result.column(index)
        if not pa.types.is_string(column.type):
            continue
        try:
            times = pc.cast(column, _TIME)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        result = result.set_column(index, name, times)
    return result
