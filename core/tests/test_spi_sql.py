"""The shared SQL compiler: a dialect of a few hooks answers queries as the reference does.

The dialect here is what a third-party author would write for a ``runs`` table
keeping ``tags``, ``metadata`` and ``metrics`` as JSON text (SQLite's JSON
functions); the first-party dialects are tested with their backends.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from runstore.model import query as q
from runstore.model.run import RunRecord
from runstore.model.selection import SortValue
from runstore.spi import RunQuery, SQLCompiler, sort_values

T0 = datetime(2024, 1, 15, tzinfo=UTC)
_TYPES = {"n": "('integer', 'real')", "s": "('text')", "b": "('true', 'false')"}


def micros(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def like(value: object, pattern: str, case_insensitive: int) -> int:
    parts = re.findall(r"\\.|%|_|[^\\%_]+", pattern, re.DOTALL)
    regex = "".join({"%": ".*", "_": "."}.get(p) or re.escape(p.removeprefix("\\")) for p in parts)
    flags = re.DOTALL | (re.IGNORECASE if case_insensitive else 0)
    return int(isinstance(value, str) and re.fullmatch(regex, value, flags) is not None)


class JSONDialect(SQLCompiler):
    """``tags``, ``metadata`` and ``metrics`` as JSON text, times as microseconds."""

    true, false = "1", "0"

    def bind(self, value: object) -> str:
        return super().bind(micros(value) if isinstance(value, datetime) else value)

    def like(self, value: str, op: str, pattern: str) -> str:
        return f"reference_like({value}, {self.bind(pattern)}, {int(op == 'ILIKE')})"

    def _path(self, field: q.Field) -> str:
        return self.bind("$." + json.dumps(field.key))

    def present(self, field: q.Field) -> str:
        if field.kind == "tags":
            return self.true
        types = (
            _TYPES["n"]
            if field.kind == "metrics"
            else "('integer', 'real', 'text', 'true', 'false', 'array')"
        )
        return f"coalesce(json_type(runs.{field.kind}, {self._path(field)}) IN {types}, 0)"

    def any_element(
        self, field: q.Field, op: str, values: Mapping[str, Sequence[q.Value]]
    ) -> str | None:
        tests = [
            f"(e.type IN {_TYPES[kind]} AND {self.test('e.value', op, group)})"
            for kind, group in values.items()
        ]
        path = "" if field.kind == "tags" else f", {self._path(field)}"
        elements = f"json_each(runs.{field.kind}{path})"
        return (
            f"EXISTS (SELECT 1 FROM {elements} AS e WHERE {' OR '.join(tests)})" if tests else None
        )


def rec(run_id: str, minutes: int, **fields: object) -> RunRecord:
    stamp = T0 + timedelta(minutes=minutes)
    return RunRecord.model_validate(
        {"run_id": run_id, "status": "succeeded", "created_at": stamp, "updated_at": stamp} | fields
    )


RECORDS = [
    rec("r0", 0),
    rec("r1", 1, metadata={"x": 1}, tags=["a"], sut_name="shop", pass_rate=0.5),
    rec("r2", 1, metadata={"x": 1.0, "y": "Fr"}, tags=["a", "b"], metrics={"m": 2.0}),
    rec("r3", 3, metadata={"x": True}, status="failed", finished_at=T0, pass_count=3),
    rec("r4", 4, metadata={"x": "1"}, sut_name="Shop-2", metrics={"m": -1.5}),
    rec("r5", 5, metadata={"x": []}, tags=["c"], pass_rate=0.9),
    rec("r6", 6, metadata={"x": [None]}, finished_at=T0 + timedelta(hours=1)),
    rec("r7", 7, metadata={"x": ["de", "fr", None]}, status="failed", pass_count=0),
    rec("r8", 8, metadata={"x": [1, "fr", False]}, tags=["b"], metrics={"m": 0.0}),
    rec("r9", 9, metadata={"x": None}, sut_name="100%", pass_rate=1.0),
]
_COLUMNS = ("run_id", "status", "sut_name", "created_at", "updated_at", "finished_at")
_SUMMARY = q.SUMMARY_FIELDS


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:")
    db.create_function("reference_like", 3, like, deterministic=True)
    names = (*_COLUMNS, *_SUMMARY, "tags", "metadata", "metrics", "record")
    db.execute(f"CREATE TABLE runs ({', '.join(names)})")
    for r in RECORDS:
        times = [
            None if t is None else micros(t) for t in (r.created_at, r.updated_at, r.finished_at)
        ]
        row = [r.run_id, r.status, r.sut_name, *times, *(getattr(r, f) for f in _SUMMARY)]
        row += [json.dumps(v) for v in (r.tags, r.metadata, r.metrics)] + [r.model_dump_json()]
        db.execute(f"INSERT INTO runs VALUES ({', '.join('?' * len(row))})", row)
    yield db
    db.close()


def fetch(
    db: sqlite3.Connection, sql: JSONDialect, conditions: Sequence[str], order: str
) -> list[str]:
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = db.execute(f"SELECT run_id FROM runs{where} ORDER BY {order}", sql.params)
    return [str(row[0]) for row in rows]


FILTERS = [
    "metadata.x = 1",
    "metadata.x != 1",
    "NOT metadata.x = 1",
    "metadata.x IN (1, 'fr', TRUE)",
    "metadata.x NOT IN ('de', 1)",
    "metadata.x IS NULL",
    "metadata.x IS NOT NULL",
    "metadata.x > 'e'",
    "metadata.x >= 1",
    "metadata.x = FALSE",
    "metadata.x > FALSE",
    "metadata.x LIKE '%'",
    "metadata.x NOT LIKE 'f%'",
    "metadata.y ILIKE 'fr'",
    "tags CONTAINS 'a'",
    "tags != 'a'",
    "tags IN ('b', 'c')",
    "tags < 'b'",
    "tags LIKE '_'",
    "metrics.m > 0",
    "metrics.m != 0",
    "metrics.m IS NULL",
    "metrics.m = 'x'",
    "sut_name LIKE 'shop%'",
    "sut_name ILIKE 'shop%'",
    "sut_name LIKE '100\\%'",
    "sut_name != 'shop'",
    "sut_name IS NULL",
    "status IN ('failed', 1)",
    "created_at >= '2024-01-15T00:04:00'",
    "finished_at < '2024-01-15T00:30:00'",
    "summary.pass_rate >= 0.9 OR summary.pass_count = 0",
    "summary.pass_count = TRUE",
    "NOT (status = 'failed' OR metadata.x = 'fr') AND run_id > 'r2'",
]


@pytest.mark.parametrize("where", FILTERS)
def test_a_dialect_of_a_few_hooks_filters_as_the_reference(
    db: sqlite3.Connection, where: str
) -> None:
    sql, query = JSONDialect(), RunQuery(where=where)
    assert query.where is not None
    found = fetch(db, sql, [sql.where(query.where)], "run_id")
    assert found == sorted(r.run_id for r in RECORDS if query.matches(r))


def test_the_classic_filters_are_conditions(db: sqlite3.Connection) -> None:
    sql, query = JSONDialect(), RunQuery(status="succeeded", tags=["a", "b"], created_after=T0)
    conditions = sql.classic(query.status, None, query.tags, query.created_after, None)
    assert fetch(db, sql, conditions, "run_id") == ["r2"]
    sql = JSONDialect()
    assert fetch(db, sql, sql.classic(frozenset(), None, None, None, None), "run_id") == []


@pytest.mark.parametrize(
    "order_by", ["-created_at", "run_id", "summary.pass_rate", "-finished_at, sut_name"]
)
def test_order_and_after_page_as_the_reference(db: sqlite3.Connection, order_by: str) -> None:
    query = RunQuery(order_by=order_by)
    terms = JSONDialect.order(query.order_by)
    assert terms is not None
    pages: list[str] = []
    cursor: tuple[SortValue, ...] | None = None
    while True:
        sql = JSONDialect()
        conditions = []
        if cursor is not None:
            after = sql.after(query.order_by, cursor)
            assert after is not None
            conditions.append(after)
        page = fetch(db, sql, conditions, f"{terms} LIMIT 3")
        if not page:
            break
        pages += page
        cursor = sort_values(next(r for r in RECORDS if r.run_id == page[-1]), query.order_by)
    assert pages == [r.run_id for r in query.apply(RECORDS)]


def test_a_dialect_must_say_how_it_spells_like_and_where_elements_are() -> None:
    class Incomplete(SQLCompiler):
        pass

    with pytest.raises(TypeError, match="any_element, like, present"):
        Incomplete()  # type: ignore[abstract]
