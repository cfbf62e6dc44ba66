"""Run-index queries compiled to parameterised PostgreSQL over the ``runs`` table.

:class:`Compiler` is PostgreSQL's dialect of :class:`runstore.spi.sql.SQLCompiler`:

* Plain fields are columns (text in the ``C`` collation: code point order;
  times as ``timestamptz``; summary numbers). ``LIKE`` is PostgreSQL's, whose
  pattern syntax (``%``, ``_``, backslash escape, whole value) is the
  reference's.
* ``metadata.<key>``: ``=`` and ``IN`` are JSONB containment
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

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from psycopg.types.json import Jsonb

from runstore.model import query as q
from runstore.spi import sql
from runstore.spi.sql import NotExpressible

__all__ = ["Compiler", "NotExpressible", "has_ilike", "select"]


def _refuse_nul(value: object) -> None:
    """Raise :class:`NotExpressible` for text PostgreSQL cannot hold (a NUL character)."""
    if any(
        isinstance(v, str) and "\x00" in v for v in (value if isinstance(value, list) else [value])
    ):
        raise NotExpressible(value)


def has_ilike(expr: q.Expr | None) -> bool:
    """Whether ``expr`` uses ``ILIKE`` (answered by the reference, see the module doc)."""
    if expr is None:
        return False
    if isinstance(expr, q.Not):
        return has_ilike(expr.operand)
    if isinstance(expr, q.And | q.Or):
        return any(has_ilike(item) for item in expr.items)
    return isinstance(expr, q.Like) and expr.case_insensitive


class Compiler(sql.SQLCompiler):
    """SQL conditions on ``runs`` and their named parameters, built up by the methods."""

    placeholder = "%({})s"

    def bind(self, value: object, cast: str = "") -> str:
        """A placeholder for ``value`` (refusing what PostgreSQL text cannot hold)."""
        _refuse_nul(value)
        if isinstance(value, float):
            value = Decimal(repr(value))  # what JSON holds for this float, exactly
        elif isinstance(value, datetime) and value.utcoffset() is None:
            value = value.replace(tzinfo=UTC)
        return super().bind(value) + cast

    def like(self, value: str, op: str, pattern: str) -> str:
        if op == "ILIKE":  # the server's case folding is not Python's (see the module doc)
            raise NotExpressible(pattern)
        return f"{value} LIKE {self.bind(pattern)}"

    def present(self, field: q.Field) -> str:
        if field.kind == "tags":
            return self.true
        typed = "= 'number'" if field.kind == "metrics" else "<> 'null'"
        return f"coalesce(jsonb_typeof(runs.{field.kind} -> {self.bind(field.key)}) {typed}, false)"

    def any_element(
        self, field: q.Field, op: str, values: Mapping[str, Sequence[q.Value]]
    ) -> str | None:
        strings, numbers = values.get("s", ()), values.get("n", ())
        if field.kind == "tags":
            if not strings:
                return None
            if op != "=":
                test = self.test("t", op, strings)
                return f"EXISTS (SELECT 1 FROM unnest(runs.tags) AS t WHERE {test})"  # noqa: S608
            if len(strings) == 1:
                return f"(runs.tags @> ARRAY[{self.bind(strings[0])}]::text[])"
            return f"(runs.tags && {self.bind(list(strings), '::text[]')})"
        if field.kind == "metrics":
            if "LIKE" in op or not numbers:
                return None
            value = f"(runs.metrics -> {self.bind(field.key)})"
            tests = " OR ".join(
                f"{value}::numeric {op} {self.bind(v, '::numeric')}" for v in numbers
            )
            return f"coalesce(CASE WHEN jsonb_typeof({value}) = 'number' THEN ({tests}) END, false)"
        return self._on_metadata(field.key or "", op, values)

    def _on_metadata(
        self, key: str, op: str, values: Mapping[str, Sequence[q.Value]]
    ) -> str | None:
        if op == "=":  # containment: the GIN index on metadata finds the runs
            flat = [value for group in values.values() for value in group]
            _refuse_nul([key, *flat])
            docs = [
                f"runs.metadata @> {self.bind(Jsonb(doc))}"
                for v in flat
                for doc in ({key: v}, {key: [v]})
            ]
            return "(" + " OR ".join(docs) + ")" if docs else None
        tests = []
        if "s" in values:
            text = "(e #>> '{}')" + ("" if "LIKE" in op else ' COLLATE "C"')
            tests.append(f"(jsonb_typeof(e) = 'string' AND {self.test(text, op, values['s'])})")
        if "n" in values and "LIKE" not in op:
            bound = self.bind(values["n"][0], "::numeric")
            # CASE, not AND: SQL does not promise to test the type before the cast.
            tests.append(f"CASE WHEN jsonb_typeof(e) = 'number' THEN e::numeric {op} {bound} END")
        if not tests:
            return None
        value = f"(runs.metadata -> {self.bind(key)})"
        elements = (
            f"jsonb_array_elements(CASE jsonb_typeof({value}) WHEN 'array' THEN {value} "
            f"ELSE jsonb_build_array({value}) END)"
        )
        # Only fixed column names in the text; every value is bound.
        return f"EXISTS (SELECT 1 FROM {elements} AS e WHERE {' OR '.join(tests)})"  # noqa: S608


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
