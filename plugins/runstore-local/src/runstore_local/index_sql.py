"""The run index's tables, and run-index queries compiled to SQL over them.

Schema version :data:`SCHEMA_VERSION` (``PRAGMA user_version``; an index of
another version is dropped and rebuilt from the run directories):

``runs``
    One row a run: ``run_id``, ``status``, ``sut_name``, the times as
    microseconds since the epoch in UTC (``created_us``, ``updated_us``,
    ``finished_us``), the summary numbers, ``inexact`` and the record's JSON.
``run_tags``
    ``(run_id, tag)``, indexed by tag.
``run_metadata``
    ``(run_id, key, pos, type, value)``, indexed by ``(key, type, value)``.
    The row at ``pos`` -1 is the value itself: ``type`` ``n`` (a number),
    ``s`` (a string), ``b`` (a bool, ``value`` 0 or 1), ``l`` (a list, whose
    elements follow at ``pos`` 0, 1, ... with their own type; null elements
    are left out) or ``z`` (null: absent, like a missing key). So ``[]`` is
    present with no element and ``null`` is absent, as the reference has it.
``run_metrics``
    ``(run_id, name, value)``, indexed by ``(name, value)``; a value that is
    not finite is left out (absent).

``folder_state``
    One row: the signature of the store directory (device, inode, mtime in
    nanoseconds, link count) when the ``runs`` table last matched the run
    directories in it; a listing trusts the table while the directory's
    signature is the same (see :mod:`runstore_local.folders`).
``unindexed``
    The run folders the table lacks at that point: being copied in (no
    manifest or state yet), or damaged (``code`` and ``message`` of the
    error reading them), each with its own signature.

``inexact`` marks a run holding a number SQLite cannot hold exactly (an
integer outside the signed 64-bit range): while any run is marked, queries
are answered by the reference in Python.

:class:`Query` is SQLite's dialect of :class:`runstore.spi.sql.SQLCompiler`: the
elements of ``tags``, ``metrics.*`` and ``metadata.*`` are rows of the side
tables (a type mismatch is a constant 0 or a ``type`` column that differs),
times are microseconds and ``LIKE`` is :func:`like`, the reference's pattern
matching registered as a SQL function (SQLite's own ``LIKE`` ignores ASCII case).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar, Final

from runstore.model import query as q
from runstore.model.run import RunRecord
from runstore.spi import sql

__all__ = [
    "DROP",
    "LIKE_FUNCTION",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Query",
    "RunRows",
    "like",
    "micros",
    "run_rows",
    "select",
]

SCHEMA_VERSION: Final = 3

SCHEMA: Final = (
    """CREATE TABLE runs (
        run_id         TEXT PRIMARY KEY,
        status         TEXT NOT NULL,
        sut_name       TEXT,
        created_us     INTEGER NOT NULL,
        updated_us     INTEGER NOT NULL,
        finished_us    INTEGER,
        instance_count INTEGER,
        pass_count     INTEGER,
        fail_count     INTEGER,
        error_count    INTEGER,
        skip_count     INTEGER,
        pass_rate      REAL,
        duration_ms    INTEGER,
        inexact        INTEGER NOT NULL,
        record         BLOB NOT NULL
    )""",
    "CREATE INDEX runs_created ON runs (created_us DESC, run_id DESC)",
    "CREATE INDEX runs_status ON runs (status, created_us DESC)",
    "CREATE INDEX runs_inexact ON runs (run_id) WHERE inexact",
    """CREATE TABLE run_tags (
        run_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (run_id, tag)
    ) WITHOUT ROWID""",
    "CREATE INDEX run_tags_tag ON run_tags (tag)",
    # value has no declared type: it keeps each value's own storage class.
    """CREATE TABLE run_metadata (
        run_id TEXT NOT NULL, key TEXT NOT NULL, pos INTEGER NOT NULL,
        type   TEXT NOT NULL, value,
        PRIMARY KEY (run_id, key, pos)
    ) WITHOUT ROWID""",
    "CREATE INDEX run_metadata_value ON run_metadata (key, type, value)",
    """CREATE TABLE run_metrics (
        run_id TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL,
        PRIMARY KEY (run_id, name)
    ) WITHOUT ROWID""",
    "CREATE INDEX run_metrics_value ON run_metrics (name, value)",
    """CREATE TABLE folder_state (
        id INTEGER PRIMARY KEY CHECK (id = 1), signature TEXT NOT NULL
    )""",
    """CREATE TABLE unindexed (
        run_id TEXT PRIMARY KEY, signature TEXT NOT NULL, code TEXT, message TEXT
    )""",
    # Highest N per id prefix (run_20240115_ for run_20240115_042), kept by a
    # trigger, so generating a run id is one lookup however many runs exist.
    # It outlives schema changes: it remembers the ids of deleted runs too.
    "CREATE TABLE IF NOT EXISTS id_counters (prefix TEXT PRIMARY KEY, highest INTEGER NOT NULL)",
    """CREATE TRIGGER runs_id_counter AFTER INSERT ON runs
    WHEN rtrim(NEW.run_id, '0123456789') != NEW.run_id
    BEGIN
        INSERT INTO id_counters VALUES (
            rtrim(NEW.run_id, '0123456789'),
            CAST(substr(NEW.run_id, length(rtrim(NEW.run_id, '0123456789')) + 1) AS INTEGER)
        ) ON CONFLICT (prefix) DO UPDATE SET highest = max(highest, excluded.highest);
    END""",
)
DROP: Final = tuple(
    f"DROP TABLE IF EXISTS {table}"
    for table in ("runs", "run_tags", "run_metadata", "run_metrics", "folder_state", "unindexed")
)

# -- rows ---------------------------------------------------------------------

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_INT64: Final = range(-(2**63), 2**63)
_TYPE_TAGS: Final = {bool: "b", int: "n", float: "n", str: "s"}


def micros(moment: datetime) -> int:
    """Microseconds since the epoch; a time without a timezone is UTC."""
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass
class RunRows:
    """The rows one record is stored as."""

    run: tuple[object, ...]
    tags: list[tuple[str, str]] = field(default_factory=list)
    metadata: list[tuple[str, str, int, str, object]] = field(default_factory=list)
    metrics: list[tuple[str, str, float]] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The run's id."""
        return str(self.run[0])


class _Flag:
    inexact = False

    def number(self, value: int | None) -> int | None:
        if value is None or value in _INT64:
            return value
        self.inexact = True
        return None

    def element(self, value: object) -> tuple[str, object] | None:
        """``(type, stored value)`` of a metadata scalar; ``None`` when it is absent."""
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return None
        tag = _TYPE_TAGS.get(type(value))
        if tag is None or (tag == "n" and isinstance(value, int) and value not in _INT64):
            self.inexact = True
            return "?", None
        return tag, (1 if value else 0) if tag == "b" else value


def run_rows(record: RunRecord, data: bytes) -> RunRows:
    """The rows of ``record``, whose JSON is ``data``."""
    flag, run_id = _Flag(), record.run_id
    rows = RunRows(())
    rows.tags = [(run_id, tag) for tag in dict.fromkeys(record.tags)]
    for key, value in record.metadata.items():
        if not isinstance(value, list):
            rows.metadata.append((run_id, key, -1, *(flag.element(value) or ("z", None))))
            continue
        rows.metadata.append((run_id, key, -1, "l", None))
        for pos, item in enumerate(value):
            if (element := flag.element(item)) is not None:
                rows.metadata.append((run_id, key, pos, *element))
    rows.metrics = [
        (run_id, name, value) for name, value in record.metrics.items() if math.isfinite(value)
    ]
    rate = record.pass_rate
    rows.run = (
        run_id,
        record.status,
        record.sut_name,
        micros(record.created_at),
        micros(record.updated_at),
        None if record.finished_at is None else micros(record.finished_at),
        flag.number(record.instance_count),
        flag.number(record.pass_count),
        flag.number(record.fail_count),
        flag.number(record.error_count),
        flag.number(record.skip_count),
        rate if rate is not None and math.isfinite(rate) else None,
        flag.number(record.duration_ms),
        int(flag.inexact),
        data,
    )
    return rows


# -- LIKE -----------------------------------------------------------------------

LIKE_FUNCTION: Final = "runstore_like"
"""``runstore_like(value, pattern, case_insensitive)``: 1 when a string matches, else 0."""

_LIKE_PARTS: Final = re.compile(r"\\(.)|(%)|(_)|[^\\%_]+", re.DOTALL)


@functools.lru_cache(maxsize=256)
def _like_regex(pattern: str, case_insensitive: bool) -> re.Pattern[str]:
    def part(match: re.Match[str]) -> str:
        if match[2]:
            return ".*"
        return "." if match[3] else re.escape(match[1] or match[0])

    flags = re.DOTALL | (re.IGNORECASE if case_insensitive else 0)
    return re.compile(_LIKE_PARTS.sub(part, pattern), flags)


def like(value: object, pattern: str, case_insensitive: int) -> int:
    """The reference's LIKE (ILIKE with ``case_insensitive``) on one value, as SQL wants it."""
    if not isinstance(value, str):
        return 0
    return int(_like_regex(pattern, bool(case_insensitive)).fullmatch(value) is not None)


# -- the dialect ----------------------------------------------------------------


@dataclass
class Query(sql.SQLCompiler):
    """SQL conditions on ``runs`` and their named parameters, built up by the methods.

    A condition on a side table is ``runs.run_id IN (SELECT ...)``, which SQLite
    answers from the side table's index (cheap when few runs match), or with
    ``correlated`` an ``EXISTS`` looked up run by run (cheap when SQLite walks the
    runs in the sort order and many match).
    """

    correlated: bool = False
    true: ClassVar[str] = "1"
    false: ClassVar[str] = "0"
    columns: ClassVar[Mapping[str, sql.Column]] = {
        **sql.COLUMNS,
        **{
            name: sql.Column(name[:-3] + "_us", "t", name == "finished_at")
            for name in q.TIME_FIELDS
        },
    }

    def bind(self, value: object) -> str:
        return super().bind(micros(value) if isinstance(value, datetime) else value)

    def like(self, value: str, op: str, pattern: str) -> str:
        return f"{LIKE_FUNCTION}({value}, {self.bind(pattern)}, {int(op == 'ILIKE')})"

    def present(self, field: q.Field) -> str:
        if field.kind == "tags":
            return self.true
        table, keyed, _ = self._elements(field)
        if field.kind == "metrics":
            return self._side(table, keyed)
        # The row of the value itself, when it is present (a list, even [], is).
        type_ = f"{'+' if self.correlated else ''}s.type IN ('n', 's', 'b', 'l')"
        return self._side(table, (*keyed, "s.pos = -1", type_))

    def any_element(
        self, field: q.Field, op: str, values: Mapping[str, Sequence[q.Value]]
    ) -> str | None:
        table, keyed, fixed = self._elements(field)
        # Looked up run by run, only the run id and the key are for an index: SQLite
        # would otherwise scan the whole range of a key's values for every run.
        plus = "+" if self.correlated else ""
        value = f"{plus}s.{'tag' if field.kind == 'tags' else 'value'}"
        tests = []
        for kind, group in values.items():
            if fixed is None:
                tests.append(f"({plus}s.type = '{kind}' AND {self.test(value, op, group)})")
            elif kind == fixed:
                tests.append(self.test(value, op, group))
        return self._side(table, (*keyed, sql.join(tests, " OR "))) if tests else None

    def _elements(self, field: q.Field) -> tuple[str, tuple[str, ...], str | None]:
        """The side table of ``field``'s elements, the conditions on its key, and the
        type of every element (``None``: as the ``type`` column says)."""
        if field.kind == "tags":
            return "run_tags", (), "s"
        if field.kind == "metrics":
            return "run_metrics", (f"s.name = {self.bind(field.key)}",), "n"
        return "run_metadata", (f"s.key = {self.bind(field.key)}",), None

    def tagged(self, tag: str) -> str:
        return self._side("run_tags", (f"s.tag = {self.bind(tag)}",))

    def _side(self, table: str, conditions: Sequence[str]) -> str:
        """Whether the run has a row in the side table ``table`` meeting ``conditions``."""
        # ``table`` is one of the fixed names above; the values in ``conditions`` are bound.
        if self.correlated:
            where = " AND ".join(("s.run_id = runs.run_id", *conditions))
            return f"EXISTS (SELECT 1 FROM {table} AS s WHERE {where})"  # noqa: S608
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return f"runs.run_id IN (SELECT s.run_id FROM {table} AS s{where})"  # noqa: S608

    @classmethod
    def walks_index(cls, order: Sequence[q.OrderKey]) -> bool:
        """Whether ``order`` (complete) is ``created_at`` then ``run_id`` in one direction:
        the ``runs_created`` index's order, forwards or backwards."""
        names = [column.name if column else "" for column in cls.sort_columns(order)]
        return names == ["created_us", "run_id"] and order[0].descending == order[1].descending


def select(
    conditions: Sequence[str],
    order: str | None,
    limit: int | None,
    offset: int,
    *,
    sort_ids: bool,
) -> str:
    """The ``SELECT`` of the records of the runs meeting ``conditions``: in ``order``
    (``ORDER BY`` terms) and with ``limit`` + 1 rows after ``offset`` if given (one
    more row than asked for tells whether a next page exists). ``sort_ids`` sorts the
    row ids, then fetches their records: SQLite's sorter copies whole rows."""
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    records = "SELECT runs.record FROM runs"
    if order is None:
        return records + where
    if limit is None and not offset:
        return f"{records}{where} ORDER BY {order}"
    cut = f"ORDER BY {order} LIMIT {-1 if limit is None else int(limit) + 1} OFFSET {int(offset)}"
    if not sort_ids:
        return f"{records}{where} {cut}"
    ids = f"SELECT runs.rowid FROM runs{where} {cut}"  # noqa: S608 - terms built above
    return f"{records} WHERE runs.rowid IN ({ids}) ORDER BY {order}"
