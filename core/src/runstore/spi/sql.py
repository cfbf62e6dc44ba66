"""Run-index queries compiled to SQL: one walk of the filter, a dialect for what differs.

A backend whose run index is a SQL table ``runs`` answers ``where``,
``order_by`` and page tokens (:class:`~runstore.spi.backends.RunQuery`) there
with a subclass of :class:`SQLCompiler`, its *dialect*. The compiler walks the
filter (:mod:`runstore.model.query`) once and builds a condition that holds
exactly when :func:`runstore.model.selection.matches` does: every predicate is
:attr:`~SQLCompiler.true` or :attr:`~SQLCompiler.false`, never ``NULL`` (a
nullable column is tested ``IS NOT NULL`` first), so ``AND``, ``OR`` and
``NOT`` stay two-valued; a type mismatch is the constant false. The plain
fields and ``summary.*`` are :attr:`~SQLCompiler.columns` of ``runs``, which
also serve ``order_by`` (absent values last in both directions) and page
tokens. The dialect says how values are bound, how ``LIKE`` is spelled and
where the elements of ``tags``, ``metrics.*`` and ``metadata.*`` are (side
tables, JSON documents, arrays)::

    class MyDialect(SQLCompiler):
        placeholder = "%({})s"                       # the driver's parameter style
        def like(self, value, op, pattern): ...      # LIKE or ILIKE on a string
        def present(self, field): ...                # tags, metrics.x, metadata.x present
        def any_element(self, field, op, values): ...  # ... and an element matches

Values are always bound; the only identifiers in the text are the dialect's.
What a dialect cannot express raises :class:`NotExpressible`: the backend then
answers the query with :meth:`~runstore.spi.backends.RunQuery.apply`.
``runstore-local`` (SQLite, typed side tables) and ``runstore-postgres``
(JSONB and arrays) are two dialects.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import ClassVar, Final

from runstore.model import query as q
from runstore.model.selection import SortValue

__all__ = ["COLUMNS", "Column", "NotExpressible", "SQLCompiler", "join", "value_type"]


class NotExpressible(Exception):
    """A query the dialect cannot express in SQL: the backend answers it by the reference."""


@dataclasses.dataclass(frozen=True)
class Column:
    """The ``runs`` column holding a field: ``type`` ``s`` (text), ``n`` (a number) or
    ``t`` (a time)."""

    name: str
    type: str
    nullable: bool


COLUMNS: Final[Mapping[str, Column]] = {
    "run_id": Column("run_id", "s", False),
    "status": Column("status", "s", False),
    "sut_name": Column("sut_name", "s", True),
    "created_at": Column("created_at", "t", False),
    "updated_at": Column("updated_at", "t", False),
    "finished_at": Column("finished_at", "t", True),
    **{f"summary.{name}": Column(name, "n", True) for name in q.SUMMARY_FIELDS},
}
"""The column of each plain field and ``summary.<field>``, named as the field."""

_OPS: Final = {"=": "=", "!=": "=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def value_type(value: object) -> str | None:
    """``b``, ``n``, ``s`` or ``t``: a bool, a number, a string or a time."""
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int | float):
        return "n"
    if isinstance(value, str):
        return "s"
    return "t" if isinstance(value, datetime) else None


def join(items: Sequence[str], word: str) -> str:
    """``items`` joined by ``word`` as a balanced tree (SQLite limits expression depth)."""
    if len(items) == 1:
        return items[0]
    middle = len(items) // 2
    return f"({join(items[:middle], word)}{word}{join(items[middle:], word)})"


@dataclasses.dataclass
class SQLCompiler(ABC):
    """SQL conditions on ``runs`` and their named :attr:`params`, built up by the methods.

    A dialect overrides :meth:`like`, :meth:`present` and :meth:`any_element`, and the
    class attributes and :meth:`bind` where its SQL or driver differs.
    """

    true: ClassVar[str] = "true"
    false: ClassVar[str] = "false"
    placeholder: ClassVar[str] = ":{}"
    """A named parameter, ``{}`` its name."""
    columns: ClassVar[Mapping[str, Column]] = COLUMNS
    """The ``runs`` column of each plain field and ``summary.<field>``."""

    params: dict[str, object] = dataclasses.field(default_factory=dict, kw_only=True)

    def bind(self, value: object) -> str:
        """A placeholder for ``value``, which :attr:`params` keeps (a dialect converts
        what its driver or schema holds otherwise: times, floats)."""
        name = f"p{len(self.params)}"
        self.params[name] = value
        return self.placeholder.format(name)

    @abstractmethod
    def like(self, value: str, op: str, pattern: str) -> str:
        """Whether the text ``value`` (SQL) matches ``pattern`` as the reference has it
        (the whole value, ``%``, ``_``, a backslash escapes); ``op`` ``ILIKE``: ignoring
        case as Python's :data:`re.IGNORECASE`."""

    @abstractmethod
    def present(self, field: q.Field) -> str:
        """Whether ``tags``, ``metrics.<name>`` or ``metadata.<key>`` is present (not
        null; a list, even empty, is)."""

    @abstractmethod
    def any_element(
        self, field: q.Field, op: str, values: Mapping[str, Sequence[q.Value]]
    ) -> str | None:
        """Whether an element of ``tags``, ``metrics.<name>`` or ``metadata.<key>`` is
        ``op`` (``=``, ``<``, ``<=``, ``>``, ``>=``, ``LIKE``, ``ILIKE``) a value of its own
        type: ``values`` maps each type (:func:`value_type`; bools only with ``=``, a
        ``LIKE`` pattern is one ``s``) to the filter's values; ``None``: none can be."""

    def tagged(self, tag: str) -> str:
        """Whether the run has the tag ``tag`` (the classic filter)."""
        return self.any_element(q.Field("tags"), "=", {"s": [tag]}) or self.false

    def test(self, value: str, op: str, values: Sequence[q.Value]) -> str:
        """``value op v`` (``LIKE``: :meth:`like`), ``value IN (...)`` for several values."""
        if op in ("LIKE", "ILIKE"):
            return self.like(value, op, str(values[0]))
        if len(values) == 1:
            return f"{value} {op} {self.bind(values[0])}"
        return f"{value} IN ({', '.join(map(self.bind, values))})"

    # -- filters --------------------------------------------------------------

    def where(self, expr: q.Expr) -> str:
        """The condition that holds exactly when ``expr`` matches (never ``NULL``)."""
        if isinstance(expr, q.Not):
            return f"NOT ({self.where(expr.operand)})"
        if isinstance(expr, q.And | q.Or):
            word = " AND " if isinstance(expr, q.And) else " OR "
            return join([self.where(item) for item in expr.items], word)
        if isinstance(expr, q.IsNull):
            present = self._present(expr.field)
            return present if expr.negated else f"NOT ({present})"
        if isinstance(expr, q.Compare):
            negated = expr.op == "!="
        else:
            negated = not isinstance(expr, q.Contains) and expr.negated
        if not negated:
            return self._positive(expr)
        present = self._present(expr.field)
        return f"({present} AND NOT ({self._positive(expr)}))"

    def _present(self, field: q.Field) -> str:
        column = self.column(field)
        if column is None:
            return self.present(field)
        return f"(runs.{column.name} IS NOT NULL)" if column.nullable else self.true

    def _positive(self, expr: q.Compare | q.In | q.Like | q.Contains) -> str:
        """Whether an element of the field satisfies the positive predicate."""
        values: Sequence[q.Value]
        if isinstance(expr, q.Like):
            op, values = ("ILIKE" if expr.case_insensitive else "LIKE"), (expr.pattern,)
        elif isinstance(expr, q.In):
            op, values = "=", expr.values
        else:
            op, values = (_OPS[expr.op] if isinstance(expr, q.Compare) else "="), (expr.value,)
        typed: dict[str, list[q.Value]] = {}
        for value in values:
            kind = value_type(value)
            if kind is not None and (kind != "b" or op == "="):  # a bool is only ever equal
                typed.setdefault(kind, []).append(value)
        column = self.column(expr.field)
        if column is None:
            return self.any_element(expr.field, op, typed) or self.false
        if column.type not in typed:
            return self.false
        test = self.test(f"runs.{column.name}", op, typed[column.type])
        return f"(runs.{column.name} IS NOT NULL AND {test})" if column.nullable else test

    # -- the classic filters --------------------------------------------------

    def classic(
        self,
        status: frozenset[str] | None,
        sut_name: str | None,
        tags: frozenset[str] | None,
        created_after: datetime | None,
        created_before: datetime | None,
    ) -> list[str]:
        """:class:`~runstore.spi.backends.RunQuery`'s classic filters as conditions."""
        created = f"runs.{self.columns['created_at'].name}"
        conditions = []
        if status is not None:
            binds = ", ".join(map(self.bind, sorted(status)))
            conditions.append(f"runs.status IN ({binds})" if status else self.false)
        if sut_name is not None:
            conditions.append(f"runs.{self.columns['sut_name'].name} = {self.bind(sut_name)}")
        if created_after is not None:
            conditions.append(f"{created} >= {self.bind(created_after)}")
        if created_before is not None:
            conditions.append(f"{created} < {self.bind(created_before)}")
        return conditions + [self.tagged(tag) for tag in sorted(tags or ())]

    # -- order and pages ------------------------------------------------------

    @classmethod
    def column(cls, field: q.Field) -> Column | None:
        """The ``runs`` column holding ``field``, if one does."""
        if field.kind == "summary":
            return cls.columns.get(f"summary.{field.key}")
        return cls.columns.get(field.kind) if field.key is None else None

    @classmethod
    def sort_columns(cls, order: Sequence[q.OrderKey]) -> list[Column | None]:
        """The column of each key up to and including ``run_id`` (later keys never decide)."""
        columns = []
        for key in order:
            columns.append(cls.column(key.field))
            if key.field.kind == "run_id":
                break
        return columns

    @classmethod
    def order(cls, order: Sequence[q.OrderKey]) -> str | None:
        """``ORDER BY`` terms for ``order`` (complete), or ``None`` unless every key is a column."""
        terms = []
        for key, column in zip(order, cls.sort_columns(order), strict=False):
            if column is None:
                return None
            nulls = " NULLS LAST" if column.nullable else ""
            terms.append(f"runs.{column.name} {'DESC' if key.descending else 'ASC'}{nulls}")
        return ", ".join(terms)

    def after(self, order: Sequence[q.OrderKey], cursor: Sequence[SortValue]) -> str | None:
        """The rows strictly after the row with sort values ``cursor`` (absent last in both
        directions); ``None`` when a value is not of its column's type (then Python pages)."""
        keys = list(zip(order, self.sort_columns(order), cursor, strict=False))
        for _, column, value in keys:
            if column is None or (value is not None and value_type(value) != column.type):
                return None
        if all(c is not None and not c.nullable and v is not None for _, c, v in keys) and (
            len({key.descending for key, _, _ in keys}) == 1
        ):  # one row value comparison, which an index on the same keys serves
            names = ", ".join(f"runs.{column.name}" for _, column, _ in keys if column)
            values = ", ".join(self.bind(value) for _, _, value in keys)
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
            branches.append(join([*equal, beyond], " AND "))
            equal.append(f"{name} = {bound}")
        return join(branches, " OR ") if branches else self.false
