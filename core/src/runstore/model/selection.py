"""What a run-index query means: which records match, in what order, page by page.

The reference semantics of :mod:`runstore.model.query`: :func:`matches`,
:func:`select` and :func:`paginate` are what backends without pushdown use,
and the contract every backend that pushes a query down to SQL must match.

**Values.** The value of a field in a :class:`~runstore.model.run.RunRecord`
is the attribute of that name (``summary.<field>`` the attribute ``<field>``,
``metrics.<name>`` ``record.metrics.get(name)``, ``metadata.<key>``
``record.metadata.get(key)``). A missing key, ``None`` and a float that is
not finite (JSON stores NaN and infinities as null) are *absent*. A time
without a timezone is UTC. ``tags`` and a metadata value that is a list are
*lists*: a present value whose elements are scalars (a null element counts
as no element); every other present value is a list of one element.

**Predicates.** Each predicate is *positive* or the negation of one:

1. An absent value makes every predicate false except ``IS NULL``, which is
   true exactly when the value is absent (``IS NOT NULL``: present). So
   ``!=``, ``NOT IN``, ``NOT LIKE`` and ``NOT ILIKE`` are false for an absent
   value, and ``metadata.x IS NULL`` is false for ``[]``.
2. A positive predicate (``=``, ``<``, ``<=``, ``>``, ``>=``, ``IN``,
   ``LIKE``, ``ILIKE``, ``CONTAINS``) is true when ANY element satisfies it.
   ``IN`` is ``=`` to any of its values; ``tags CONTAINS 'x'`` is
   ``tags = 'x'``: membership.
3. A negative one (``!=`` and ``<>``, ``NOT IN``, ``NOT LIKE``, ``NOT ILIKE``)
   is true when the value is present and NO element satisfies the positive
   one: ``x != v`` is ``x IS NOT NULL AND NOT (x = v)``.
4. An element satisfies a comparison only if it has the literal's type:
   numbers (int and float, never bool; compared by value, ``1 = 1.0``) with
   numbers, strings with strings (by Unicode code point, a binary collation),
   bools with bools (``=`` only: ``<`` on a bool is false), times with times
   (by instant). A type mismatch is false, never an error: ``metadata.x = '1'``
   is false for ``1``, and hence ``metadata.x != '1'`` is true for it.
5. ``LIKE`` matches a whole string element (a non-string never matches):
   ``%`` any run of characters, ``_`` exactly one character, a backslash the
   next character literally; ``ILIKE`` compares each character ignoring case
   (Unicode simple case folding, as Python's ``re.IGNORECASE``).
6. ``AND``, ``OR`` and ``NOT`` are two-valued boolean logic over these
   results (no SQL ``UNKNOWN``): ``NOT (metadata.x = 1)`` is true for a run
   without ``metadata.x``.

**Order.** Records sort by the keys of the order in turn, each ascending or
descending; ``run_id``, always the last key (:func:`~.query.complete_order`),
makes the order total. An absent value, and a list value (which has no
single place), sorts last in both directions. Values of different types
under one key sort by type: numbers < strings < bools (times appear only
under the time fields); descending reverses the whole order of present
values, types included.

**Pages.** With a ``limit``, a :class:`Page` carries ``next_page_token``
while rows remain after it. The token (urlsafe base64 of JSON) holds the
sort values of the page's last row, ``run_id`` last, and a fingerprint of the
filter and the order; the next page is the rows strictly after that row in
the order (keyset paging), so a page repeats or skips no row when runs are
added or deleted meanwhile (a run whose sort values change may move). A
token used with another filter or order raises
:class:`~runstore.model.errors.InvalidInputError`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final, cast, overload

from runstore.model.errors import InvalidInputError
from runstore.model.query import (
    DEFAULT_ORDER,
    And,
    Compare,
    Contains,
    Expr,
    Field,
    In,
    IsNull,
    Like,
    Not,
    Or,
    OrderKey,
    Value,
    complete_order,
    render,
    render_order,
)
from runstore.model.run import RunRecord

__all__ = [
    "Page",
    "decode_page_token",
    "encode_page_token",
    "field_value",
    "matches",
    "paginate",
    "query_fingerprint",
    "select",
    "sort_values",
]

_TYPE_ORDER: Final = {"number": 0, "string": 1, "bool": 2, "time": 3}
_TYPE_TAGS: Final = {"number": "n", "string": "s", "bool": "b", "time": "t"}


def field_value(field: Field, record: RunRecord) -> object:
    """The raw value of ``field`` in ``record`` (``None`` for a missing key)."""
    key = field.key or ""
    if field.kind == "metadata":
        return record.metadata.get(key)
    if field.kind == "metrics":
        return record.metrics.get(key)
    return getattr(record, key if field.kind == "summary" else field.kind)


def _scalar(value: object) -> object:
    """``value`` as compared: ``None`` when absent, times in UTC."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime) and value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value


def _type(value: object) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else "time" if isinstance(value, datetime) else None


def _elements(field: Field, record: RunRecord) -> list[object] | None:
    """The elements of the field's value; ``None`` when it is absent."""
    value = field_value(field, record)
    if isinstance(value, list):
        return [item for item in map(_scalar, value) if item is not None]
    value = _scalar(value)
    return None if value is None else [value]


_COMPARISONS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _satisfies(element: object, op: str, literal: Value) -> bool:
    kind = _type(element)
    if kind is None or kind != _type(literal) or (kind == "bool" and op != "="):
        return False
    return _COMPARISONS[op](element, _scalar(literal))


@functools.lru_cache(maxsize=256)
def _like(pattern: str, case_insensitive: bool) -> re.Pattern[str]:
    parts, escaped = [], False
    for char in pattern:
        if escaped or char not in "\\%_":
            parts.append(re.escape(char))
        elif char != "\\":
            parts.append(".*" if char == "%" else ".")
        escaped = not escaped and char == "\\"
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if case_insensitive else 0))


def _positive(expr: Compare | In | Like | Contains) -> Callable[[object], bool]:
    """The positive predicate ``expr`` is or negates, as a test of one element."""
    if isinstance(expr, Compare):
        op, literal = "=" if expr.op == "!=" else expr.op, expr.value
        return lambda element: _satisfies(element, op, literal)
    if isinstance(expr, In):
        values = expr.values
        return lambda element: any(_satisfies(element, "=", value) for value in values)
    if isinstance(expr, Contains):
        tag = expr.value
        return lambda element: _satisfies(element, "=", tag)
    regex = _like(expr.pattern, expr.case_insensitive)
    return lambda element: isinstance(element, str) and regex.fullmatch(element) is not None


def matches(expr: Expr, record: RunRecord) -> bool:
    """Whether ``record`` satisfies ``expr``: the rules of the module docstring."""
    if isinstance(expr, Not):
        return not matches(expr.operand, record)
    if isinstance(expr, Or):
        return any(matches(item, record) for item in expr.items)
    if isinstance(expr, And):
        return all(matches(item, record) for item in expr.items)
    elements = _elements(expr.field, record)
    if isinstance(expr, IsNull):
        return (elements is None) != expr.negated
    if elements is None:
        return False
    if isinstance(expr, Compare):
        negated = expr.op == "!="
    else:
        negated = not isinstance(expr, Contains) and expr.negated
    return any(map(_positive(expr), elements)) != negated


# -- order --------------------------------------------------------------------

SortValue = str | int | float | bool | datetime | None
"""A sort value of one key: ``None`` when absent (or a list)."""


def sort_values(record: RunRecord, order: Sequence[OrderKey]) -> tuple[SortValue, ...]:
    """The values ``record`` sorts by under ``order`` (complete it first)."""
    values: list[SortValue] = []
    for key in order:
        value = field_value(key.field, record)
        value = None if isinstance(value, list) else _scalar(value)
        values.append(cast(SortValue, value) if _type(value) else None)
    return tuple(values)


def _rank(value: SortValue) -> tuple[int, Any]:
    return _TYPE_ORDER[_type(value) or "string"], value


def _compare(a: Sequence[SortValue], b: Sequence[SortValue], order: Sequence[OrderKey]) -> int:
    """-1, 0 or 1 as the row with sort values ``a`` comes before, with or after ``b``."""
    for x, y, key in zip(a, b, order, strict=True):
        if x is None or y is None:
            if (x is None) != (y is None):
                return 1 if x is None else -1
            continue
        rx, ry = _rank(x), _rank(y)
        if rx != ry:
            return (-1 if rx < ry else 1) * (-1 if key.descending else 1)
    return 0


_Row = tuple[tuple[SortValue, ...], RunRecord]


def _key_at(index: int) -> Callable[[_Row], tuple[int, Any]]:
    return lambda row: _rank(row[0][index])


def _sort(rows: list[_Row], order: Sequence[OrderKey]) -> None:
    """Sort ``rows`` in place by ``order``: stably, least significant key first."""
    for index in reversed(range(len(order))):
        absent = [row for row in rows if row[0][index] is None]
        rows[:] = [row for row in rows if row[0][index] is not None]
        rows.sort(key=_key_at(index), reverse=order[index].descending)
        rows += absent


# -- pages --------------------------------------------------------------------


class Page(Sequence[RunRecord]):
    """One page of records, in order, with the token that fetches the next page.

    A read-only sequence: index it, slice it, iterate it, take its ``len``, compare
    it with ``==`` to a list of records. A backend may hand the records over as
    their stored JSON (:meth:`from_json`): each block of :data:`PAGE_BLOCK`
    records is then parsed the first time one of them is reached, so a listing of
    100k runs costs its parsing only as far as the caller reads it.
    """

    __slots__ = ("_blocks", "_decode", "_raw", "_size", "next_page_token")

    def __init__(
        self, records: Iterable[RunRecord] = (), next_page_token: str | None = None
    ) -> None:
        done = list(records)
        self._size = len(done)
        self._raw: Sequence[bytes] = ()
        self._decode: Callable[[Sequence[bytes]], list[RunRecord]] | None = None
        self._blocks: list[list[RunRecord] | None] = [
            done[i : i + PAGE_BLOCK] for i in range(0, len(done), PAGE_BLOCK)
        ]
        self.next_page_token = next_page_token

    @classmethod
    def from_json(
        cls,
        rows: Sequence[bytes],
        decode: Callable[[Sequence[bytes]], list[RunRecord]],
        next_page_token: str | None = None,
    ) -> Page:
        """A page of the records whose JSON documents ``rows`` holds, parsed on demand
        by ``decode`` (which turns a run of documents into records, in order)."""
        page = cls((), next_page_token)
        page._size = len(rows)
        page._raw = rows
        page._decode = decode
        page._blocks = [None] * -(-len(rows) // PAGE_BLOCK)
        return page

    def _block(self, number: int) -> list[RunRecord]:
        block = self._blocks[number]
        if block is None:  # parsed once; two threads racing here both get equal records
            assert self._decode is not None  # set with the raw rows
            start = number * PAGE_BLOCK
            block = self._decode(self._raw[start : start + PAGE_BLOCK])
            self._blocks[number] = block
        return block

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> RunRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[RunRecord]: ...

    def __getitem__(self, index: int | slice) -> RunRecord | list[RunRecord]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._size))]
        if index < 0:
            index += self._size
        if not 0 <= index < self._size:
            raise IndexError("page index out of range")
        return self._block(index // PAGE_BLOCK)[index % PAGE_BLOCK]

    def __iter__(self) -> Iterator[RunRecord]:
        for number in range(len(self._blocks)):
            yield from self._block(number)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # equal to a list, so not hashable

    def __repr__(self) -> str:
        return f"Page({list(self)!r}, next_page_token={self.next_page_token!r})"


PAGE_BLOCK = 1024
"""How many records of a :meth:`Page.from_json` page are parsed at a time."""


def query_fingerprint(where: Expr | None, order: Sequence[OrderKey], *extra: object) -> str:
    """What a page token is bound to: the filter, the order and any ``extra`` filters."""
    text = json.dumps([None if where is None else render(where), render_order(order), *extra])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode(values: Sequence[SortValue], fingerprint: str) -> str:
    keys = [
        None
        if v is None
        else [_TYPE_TAGS[_type(v) or ""], v.isoformat() if isinstance(v, datetime) else v]
        for v in values
    ]
    data = json.dumps({"v": 1, "f": fingerprint, "k": keys}, separators=(",", ":"))
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def encode_page_token(record: RunRecord, order: Sequence[OrderKey], fingerprint: str) -> str:
    """The token of the page that follows ``record`` (the last row of a page)."""
    order = complete_order(order)
    return _encode(sort_values(record, order), fingerprint)


def _decode_value(item: object) -> SortValue:
    if item is None:
        return None
    tag, value = item if isinstance(item, list) and len(item) == 2 else ("", None)
    if tag == "t" and isinstance(value, str):
        value = _scalar(datetime.fromisoformat(value))
    if _TYPE_TAGS.get(_type(value) or "") != tag or _scalar(value) is None:
        raise ValueError(item)
    return cast(SortValue, value)


def decode_page_token(
    token: str, order: Sequence[OrderKey], fingerprint: str
) -> tuple[SortValue, ...]:
    """The sort values of the last row of the page before (for keyset pushdown).

    Raises :class:`~runstore.model.errors.InvalidInputError` for a token that is
    not one or that belongs to another filter or order.
    """
    order = complete_order(order)
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(data, dict) or data.get("v") != 1 or not isinstance(data.get("k"), list):
            raise ValueError(token)
        if data.get("f") == fingerprint and len(data["k"]) == len(order):
            return tuple(map(_decode_value, data["k"]))
    except (TypeError, ValueError, KeyError, RecursionError):
        raise InvalidInputError(
            "invalid page token: pass the next_page_token of a page unchanged",
            details={"page_token": str(token)[:200]},
        ) from None
    raise InvalidInputError(
        "the page token belongs to another filter or sort order: "
        "repeat the query that returned it, or start without a token",
        details={"page_token": token[:200]},
    )


def paginate(
    records: Iterable[RunRecord],
    order: Sequence[OrderKey],
    *,
    fingerprint: str,
    limit: int | None = None,
    offset: int = 0,
    page_token: str | None = None,
) -> Page:
    """Sort ``records`` (already filtered) by ``order`` and cut one page out.

    Without ``page_token`` the page starts ``offset`` rows in; with one it
    starts right after the row the token was made from (``offset`` must be 0).
    ``next_page_token`` is set when ``limit`` left rows out (never on an empty page).
    """
    if (limit is not None and limit < 0) or offset < 0:
        raise InvalidInputError("limit and offset must not be negative")
    if page_token is not None and offset:
        raise InvalidInputError("give a page_token or an offset, not both")
    order = complete_order(order)
    rows = [(sort_values(record, order), record) for record in records]
    _sort(rows, order)
    if page_token is not None:
        cursor = decode_page_token(page_token, order, fingerprint)
        rows = [row for row in rows if _compare(row[0], cursor, order) > 0]
    else:
        rows = rows[offset:]
    page = rows if limit is None else rows[:limit]
    more = bool(page) and limit is not None and len(rows) > limit
    return Page((row[1] for row in page), _encode(page[-1][0], fingerprint) if more else None)


def select(
    records: Iterable[RunRecord],
    where: Expr | None = None,
    order: Sequence[OrderKey] = DEFAULT_ORDER,
    limit: int | None = None,
    page_token: str | None = None,
) -> Page:
    """Filter, sort and page ``records`` in memory: the reference for every backend."""
    order = complete_order(order)
    hits = records if where is None else (r for r in records if matches(where, r))
    fingerprint = query_fingerprint(where, order)
    return paginate(hits, order, fingerprint=fingerprint, limit=limit, page_token=page_token)
