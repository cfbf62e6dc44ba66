"""Run-index queries compiled to parameterised PostgreSQL over the ``runs`` table.

:meth:`Compiler.where` turns a filter (:mod:`runstore.model.query`) into a SQL
condition that holds exactly when :func:`runstore.model.selection.matches`
does. Every predicate is ``true`` or ``false``, never ``NULL`` (a nullable
column is tested ``IS NOT NULL`` first), so ``AND``, ``OR`` and ``NOT`` stay
two-valued; a type mismatch is the constant ``false``.

* Plain fields are columns (text in the ``C`` collation: code point order;
  times as ``timestamptz``; summary numbers). ``LIKE`` is PostgreSQL's, whose
  pattern syntax (``%``, ``_``, backslash escape, whole value) is the
  reference's.
* ``metadata.<key>``: ``=``, ``IN`` and ``!=``/``NOT IN`` are JSONB containment
  (``metadata @> {"key": v}`` or ``{"key": [v]}``, which the GIN index on
  ``metadata`` answers; JSONB compares numbers by value and values by type, as
  the reference does); ordering comparisons and ``LIKE`` look at each element
  of the value with its JSON type.
* ``tags``: array containment and overlap (GIN index on ``tags``).
* ``metrics.<name>``: the number in the ``metrics`` JSONB.

Numbers from the filter are bound as exact decimals (a float as its shortest
``repr``, which is how JSON stored it), so ``metadata.x = 0.1`` finds the 0.1
that was written. ``ILIKE`` is not pushed down: PostgreSQL's case folding
depends on the server's locale, the reference's is Python's (the backend
answers such a filter with :meth:`runstore.spi.RunQuery.apply`).

Values are always bound as parameters (``%s``); the only identifiers in the
text are the fixed column names above.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

from psycopg.types.json import Jsonb

from runstore.model import query as q
from runstore.model.selection import SortValue

__all__ = ["Compiler", "NotExpressible", "has_ilike", "select"]


class NotExpressible(Exception):
    """The query holds a value PostgreSQL text cannot carry (a NUL character)."""


@dataclass(frozen=True)
class _Column:
    name: str
    type: str  # s (text), n (number) or t (timestamptz)
    nullable: bool


_COLUMNS: Final = {
    "run_id": _Column("run_id", "s", False),
    "status": _Column("status", "s", False),
    "sut_name": _Column("sut_name", "s", True),
    "created_at": _Column("created_at", "t", False),
    "updated_at": _Column("updated_at", "t", False),
    "finished_at": _Column("finished_at", "t", True),
    **{f"summary.{name}": _Column(name, "n", True) for name in q.SUMMARY_FIELDS},
}
_OPS: Final = {"=": "=", "!=": "=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def _column(f: q.Field) -> _Column | None:
    if f.kind == "summary":
        return _COLUMNS.get(f"summary.{f.key}")
    return _COLUMNS.get(f.kind) if f.key is None else None


def _type(value: object) -> str | None:
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int | float):
        return "n"
    if isinstance(value, str):
        return "s"
    return "t" if isinstance(value, datetime) else None


def has_ilike(expr: q.Expr | None) -> bool:
    """Whether ``expr`` uses ``ILIKE`` (answered by the reference, see the module doc)."""
    if expr is None:
        return False
    if isinstance(expr, q.Not):
        return has_ilike(expr.operand)
    if isinstance(expr, q.And | q.Or):
        return any(has_ilike(item) for item in expr.items)
    return isinstance(expr, q.Like) and expr.case_insensitive


@dataclass
class Compiler:
    """SQL conditions on ``runs`` and their named parameters, built up by the methods."""

    params: dict[str, object] = field(default_factory=dict)

    def bind(self, value: object, cast: str = "") -> str:
        """A placeholder for ``value`` (refusing what PostgreSQL text cannot hold)."""
        if isinstance(value, str) and "\x00" in value:
            raise NotExpressible(value)
        if isinstance(value, list) and any(isinstance(v, str) and "\x00" in v for v in value):
            raise NotExpressible(value)
        if isinstance(value, float):
            value = Decimal(repr(value))  # what JSON holds for this float, exactly
        elif isinstance(value, datetime) and value.utcoffset() is None:
            value = value.replace(tzinfo=UTC)
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"%({name})s{cast}"

    # -- filters ------------------------------------------------------------------

    def where(self, expr: q.Expr) -> str:
        """The condition that holds exactly when ``expr`` matches (never ``NULL``)."""
        if isinstance(expr, q.Not):
            return f"NOT ({self.where(expr.operand)})"
        if isinstance(expr, q.And | q.Or):
            word = " AND " if isinstance(expr, q.And) else " OR "
            return "(" + word.join(self.where(item) for item in expr.items) + ")"
        present = self._present(expr.field)
        if isinstance(expr, q.IsNull):
            return present if expr.negated else f"NOT {present}"
        positive = self._positive(expr)
        if isinstance(expr, q.Compare):
            negated = expr.op == "!="
        else:
            negated = not isinstance(expr, q.Contains) and expr.negated
        return f"({present} AND NOT {positive})" if negated else positive

    def _present(self, f: q.Field) -> str:
        column = _column(f)
        if column is not None:
            return f"(runs.{column.name} IS NOT NULL)" if column.nullable else "true"
        if f.kind == "tags":
            return "true"
        if f.kind == "metrics":
            return f"coalesce(jsonb_typeof(runs.metrics -> {self.bind(f.key)}) = 'number', false)"
        return f"coalesce(jsonb_typeof(runs.metadata -> {self.bind(f.key)}) <> 'null', false)"

    def _positive(self, expr: q.Compare | q.In | q.Like | q.Contains) -> str:
        """Whether any element of the field satisfies the positive predicate."""
        values: list[q.Value]
        if isinstance(expr, q.Like):
            op, values = "LIKE", [expr.pattern]
        elif isinstance(expr, q.In):
            op, values = "IN", list(expr.values)
        else:
            op, values = (_OPS[expr.op] if isinstance(expr, q.Compare) else "="), [expr.value]
        if op != "LIKE" and op not in ("=", "IN"):
            values = [v for v in values if _type(v) != "b"]  # a bool is only ever equal
        if op in ("=", "IN"):
            op = "="
        column = _column(expr.field)
        if column is not None:
            return self._on_column(column, op, values)
        kind = expr.field.kind
        if kind == "tags":
            return self._on_tags(op, values)
        if kind == "metrics":
            return self._on_metric(expr.field.key or "", op, values)
        return self._on_metadata(expr.field.key or "", op, values)

    def _on_column(self, column: _Column, op: str, values: Sequence[q.Value]) -> str:
        name = f"runs.{column.name}"
        if op == "LIKE":
            test = f"{name} LIKE {self.bind(values[0])}" if column.type == "s" else None
        else:
            kept = [v for v in values if _type(v) == column.type]
            if not kept:
                test = None
            elif len(kept) == 1:
                test = f"{name} {op} {self.bind(kept[0])}"
            else:
                test = f"{name} IN ({', '.join(map(self.bind, kept))})"
        if test is None:
            return "false"
        return f"({name} IS NOT NULL AND {test})" if column.nullable else f"({test})"

    def _on_tags(self, op: str, values: Sequence[q.Value]) -> str:
        strings = [v for v in values if isinstance(v, str)]
        if not strings:
            return "false"
        if op == "=":
            if len(strings) == 1:
                return f"(runs.tags @> ARRAY[{self.bind(strings[0])}]::text[])"
            return f"(runs.tags && {self.bind(strings, '::text[]')})"
        test = f"t {op} {self.bind(strings[0])}"
        return f"EXISTS (SELECT 1 FROM unnest(runs.tags) AS t WHERE {test})"  # noqa: S608 - bound

    def _on_metric(self, key: str, op: str, values: Sequence[q.Value]) -> str:
        numbers = [v for v in values if _type(v) == "n"]
        if op == "LIKE" or not numbers:
            return "false"
        value = f"(runs.metrics -> {self.bind(key)})"
        tests = [f"{value}::numeric {op} {self.bind(v, '::numeric')}" for v in numbers]
        typed = f"jsonb_typeof({value}) = 'number'"
        return f"coalesce(CASE WHEN {typed} THEN ({' OR '.join(tests)}) END, false)"

    def _on_metadata(self, key: str, op: str, values: Sequence[q.Value]) -> str:
        if op == "=":  # containment: the GIN index on metadata finds the runs
            docs = []
            for value in values:
                if isinstance(value, str) and "\x00" in value:
                    raise NotExpressible(value)
                docs.append(f"runs.metadata @> {self.bind(Jsonb({key: value}))}")
                docs.append(f"runs.metadata @> {self.bind(Jsonb({key: [value]}))}")
            return "(" + " OR ".join(docs) + ")" if docs else "false"
        tests = []
        for value in values:
            kind = _type(value)
            if op == "LIKE" and kind == "s":
                tests.append(
                    f"(jsonb_typeof(e) = 'string' AND (e #>> '{{}}') LIKE {self.bind(value)})"
                )
            elif kind == "s":
                tests.append(
                    f"(jsonb_typeof(e) = 'string' AND (e #>> '{{}}') COLLATE \"C\" {op} "
                    f"{self.bind(value)})"
                )
            elif kind == "n" and op != "LIKE":
                bound = self.bind(value, "::numeric")
                # CASE, not AND: SQL does not promise to test the type before the cast.
                tests.append(
                    f"CASE WHEN jsonb_typeof(e) = 'number' THEN e::numeric {op} {bound} END"
                )
        if not tests:
            return "false"
        value_sql = f"(runs.metadata -> {self.bind(key)})"
        elements = (
            f"jsonb_array_elements(CASE jsonb_typeof({value_sql}) WHEN 'array' THEN {value_sql} "
            f"ELSE jsonb_build_array({value_sql}) END)"
        )
        # Only fixed column names in the text; every value is bound.
        return f"EXISTS (SELECT 1 FROM {elements} AS e WHERE {' OR '.join(tests)})"  # noqa: S608

    # -- the classic filters -------------------------------------------------------

    def classic(
        self,
        status: frozenset[str] | None,
        sut_name: str | None,
        tags: frozenset[str] | None,
        created_after: datetime | None,
        created_before: datetime | None,
    ) -> list[str]:
        conditions = []
        if status is not None:
            conditions.append(f"runs.status = ANY({self.bind(sorted(status), '::text[]')})")
        if sut_name is not None:
            conditions.append(f"runs.sut_name = {self.bind(sut_name)}")
        if created_after is not None:
            conditions.append(f"runs.created_at >= {self.bind(created_after)}")
        if created_before is not None:
            conditions.append(f"runs.created_at < {self.bind(created_before)}")
        if tags:
            conditions.append(f"runs.tags @> {self.bind(sorted(tags), '::text[]')}")
        return conditions

    # -- order and pages ---------------------------------------------------------

    @staticmethod
    def order(order: Sequence[q.OrderKey]) -> str | None:
        """``ORDER BY`` terms for ``order`` (complete), or ``None`` unless every key is a column."""
        terms = []
        for key, column in zip(order, _columns(order), strict=False):
            if column is None:
                return None
            nulls = " NULLS LAST" if column.nullable else ""
            terms.append(f"runs.{column.name} {'DESC' if key.descending else 'ASC'}{nulls}")
        return ", ".join(terms)

    def after(self, order: Sequence[q.OrderKey], cursor: Sequence[SortValue]) -> str | None:
        """The rows strictly after the row with sort values ``cursor`` (absent last in both
        directions); ``None`` when a value is not of its column's type (then Python pages)."""
        columns = _columns(order)
        keys = list(zip(order, columns, cursor, strict=False))
        for _, column, value in keys:
            if column is None or (value is not None and _type(value) != column.type):
                return None
        if all(c is not None and not c.nullable and v is not None for _, c, v in keys) and (
            len({key.descending for key, _, _ in keys}) == 1
        ):  # one row comparison, which an index on the same keys serves
            names = ", ".join(f"runs.{c.name}" for _, c, _ in keys if c)
            values = ", ".join(self.bind(v) for _, _, v in keys)
            return f"(({names}) {'<' if order[0].descending else '>'} ({values}))"
        branches, equal = [], []
        for key, column, value in keys:
            assert column is not None  # checked above
            name = f"runs.{column.name}"
            if value is None:  # absent sorts last: nothing is after it on this key
                equal.append(f"{name} IS NULL")
                continue
            bound = self.bind(value)
            beyond = f"{name} {'<' if key.descending else '>'} {bound}"
            if column.nullable:
                beyond = f"({name} IS NULL OR {beyond})"
            branches.append("(" + " AND ".join([*equal, beyond]) + ")")
            equal.append(f"{name} = {bound}")
        return "(" + " OR ".join(branches) + ")" if branches else "false"


def _columns(order: Sequence[q.OrderKey]) -> list[_Column | None]:
    """The column of each key up to and including ``run_id`` (later keys never decide)."""
    columns = []
    for key in order:
        columns.append(_column(key.field))
        if key.field.kind == "run_id":
            break
    return columns


def select(conditions: Sequence[str], order: str | None, limit: int | None, offset: int) -> str:
    """The ``SELECT`` of the records meeting ``conditions``, in ``order`` (``ORDER BY``
    terms), with ``limit`` + 1 rows after ``offset`` (the extra row says a next page exists)."""
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    text = f"SELECT runs.record FROM runs{where}"  # noqa: S608 - conditions bind every value
    if order is None:
        return text
    text += f" ORDER BY {order}"
    if limit is not None:
        text += f" LIMIT {int(limit) + 1}"
    if offset:
        text += f" OFFSET {int(offset)}"
    return text
