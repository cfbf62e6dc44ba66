"""The run-index filter language: its grammar, its syntax tree and its sort orders.

What MLflow users know from ``search_runs``, for ``list_runs(where=...)``::

    status = 'failed' AND metadata.lang IN ('de', 'fr') AND summary.pass_rate < 0.9
    tags CONTAINS 'nightly' AND NOT sut_name LIKE 'shop-%' AND finished_at IS NOT NULL

Grammar (keywords are case-insensitive, field names are not; whitespace
separates tokens and is otherwise ignored)::

    expr      := or
    or        := and ("OR" and)*
    and       := unary ("AND" unary)*
    unary     := "NOT" unary | "(" expr ")" | predicate
    predicate := field op literal                      op: = != <> < <= > >=
               | field ["NOT"] "IN" "(" literal ("," literal)* ")"
               | field ["NOT"] ("LIKE" | "ILIKE") string
               | field "IS" ["NOT"] "NULL"
               | "tags" "CONTAINS" string
    field     := run_id | status | sut_name | created_at | updated_at | finished_at | tags
               | "metadata." key | "metrics." key | "summary." summary_field
    summary_field := instance_count | pass_count | fail_count | error_count
               | skip_count | pass_rate | duration_ms
    key       := [A-Za-z0-9_][A-Za-z0-9_.-]*  |  "`" any characters, `` for a backtick "`"
    literal   := string | number | "TRUE" | "FALSE"
    string    := '...' | "..."     a backslash escapes \\ ' and "; a doubled quote is one
                                   quote; before any other character a backslash stays
    number    := -?[0-9]+(.[0-9]+)?([eE][+-]?[0-9]+)?   int without . or e, else float

``NULL`` appears only in ``IS [NOT] NULL``. ``<>`` is ``!=``. For the time
fields (``created_at``, ``updated_at``, ``finished_at``) a literal is a string
in ISO 8601, a date or a date and time (naive means UTC), parsed here; they
take no ``LIKE``. A ``LIKE`` pattern matches the whole value: ``%`` any run of
characters, ``_`` one character, a backslash makes the next character literal
(``'100\\%'``). ``CONTAINS`` is for ``tags`` only. Integers lie in the signed
64-bit range and floats are finite, as in SQL. A filter has at most
:data:`MAX_FILTER_LENGTH` characters and :data:`MAX_DEPTH` nested ``(`` and
``NOT``.

Every malformed filter raises :class:`~runstore.model.errors.InvalidInputError`
naming the 1-based position, what was expected and what was found
(``details``: ``position``, ``expected``, ``found``). :func:`render` gives
the canonical text of a tree, which parses back to an equal tree.

Sort orders (:func:`parse_order_by`): ``item ("," item)*`` with
``item := ["-"] field ["ASC" | "DESC"]`` (``-`` is descending); ``tags`` is
not sortable. What a filter means, how values sort and how pages work:
:mod:`runstore.model.selection`.

One module on purpose: the grammar above, its syntax tree and the parser that
builds it change together; what a query means is in :mod:`~.selection`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, cast, get_args

from runstore.model.errors import InvalidInputError

__all__ = [
    "DEFAULT_ORDER",
    "MAX_DEPTH",
    "MAX_FILTER_LENGTH",
    "PLAIN_FIELDS",
    "SUMMARY_FIELDS",
    "TIME_FIELDS",
    "And",
    "Compare",
    "CompareOp",
    "Contains",
    "Expr",
    "Field",
    "In",
    "IsNull",
    "Like",
    "Not",
    "Or",
    "OrderKey",
    "Value",
    "complete_order",
    "parse_order_by",
    "parse_where",
    "render",
    "render_order",
]

MAX_FILTER_LENGTH: Final = 4096
MAX_DEPTH: Final = 32

_TIMES: Final = ("created_at", "updated_at", "finished_at")
PLAIN_FIELDS: Final = ("run_id", "status", "sut_name", *_TIMES, "tags")
TIME_FIELDS: Final = frozenset(_TIMES)
_COUNTS: Final = ("instance_count", "pass_count", "fail_count", "error_count", "skip_count")
SUMMARY_FIELDS: Final = (*_COUNTS, "pass_rate", "duration_ms")
_KEYED: Final = ("metadata", "metrics", "summary")
_FIELD_NAMES: Final = (*PLAIN_FIELDS, "metadata.<key>", "summary.<field>", "metrics.<name>")
_COMPARE_OPS: Final = ("=", "!=", "<>", "<", "<=", ">", ">=")
_INT_RANGE: Final = range(-(2**63), 2**63)

_WORD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_NUMBER: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_OPERATOR: Final = re.compile(r"<=|>=|<>|!=|[=<>]")

Value = str | int | float | bool | datetime
"""A literal: times only for the time fields, never ``None``."""

CompareOp = Literal["=", "!=", "<", "<=", ">", ">="]


# -- the syntax tree ----------------------------------------------------------


def _choices(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _field_problem(kind: str, key: str | None) -> list[str] | None:
    """The fields that would have done, or ``None`` when ``kind`` and ``key`` name one."""
    if kind == "summary":
        return None if key in SUMMARY_FIELDS else [f"summary.{name}" for name in SUMMARY_FIELDS]
    if (kind in PLAIN_FIELDS and key is None) or (kind in _KEYED and isinstance(key, str) and key):
        return None
    return list(_FIELD_NAMES)


def _value_problem(field: Field, value: object) -> list[str] | None:
    """What a literal for ``field`` should have been, or ``None`` when ``value`` is one."""
    if field.kind in TIME_FIELDS:
        ok = isinstance(value, datetime) and value.utcoffset() is not None
        return None if ok else ["an ISO 8601 date or datetime string"]
    if isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        return None if value in _INT_RANGE else ["an integer in the signed 64-bit range"]
    if isinstance(value, float):
        return None if math.isfinite(value) else ["a finite number"]
    return ["a string", "a number", "TRUE", "FALSE"]


def _pattern_problem(pattern: str) -> list[str] | None:
    escaped = False
    for char in pattern:
        escaped = not escaped and char == "\\"
    return ["a pattern that does not end in a lone backslash"] if escaped else None


def _check(problem: list[str] | None, what: object) -> None:
    if problem is not None:
        raise InvalidInputError(
            f"invalid {what}: expected {_choices(problem)}", details={"expected": problem}
        )


@dataclass(frozen=True)
class Field:
    """A filterable field: ``kind`` is a plain field name (``key`` ``None``) or
    ``metadata``, ``metrics`` or ``summary`` with the ``key`` after the dot."""

    kind: str
    key: str | None = None

    def __post_init__(self) -> None:
        name = self.kind if self.key is None else f"{self.kind}.{self.key}"
        _check(_field_problem(self.kind, self.key), f"field {name!r}")

    def __str__(self) -> str:
        if self.key is None:
            return self.kind
        if _BARE_KEY.fullmatch(self.key):
            return f"{self.kind}.{self.key}"
        return f"{self.kind}.`{self.key.replace('`', '``')}`"


def _check_values(field: Field, values: Sequence[object]) -> None:
    for value in values:
        _check(_value_problem(field, value), f"literal {value!r} for {field}")


@dataclass(frozen=True)
class Compare:
    """``field op value``."""

    field: Field
    op: CompareOp
    value: Value

    def __post_init__(self) -> None:
        _check(None if self.op in get_args(CompareOp) else list(get_args(CompareOp)), self.op)
        _check_values(self.field, [self.value])


@dataclass(frozen=True)
class In:
    """``field [NOT] IN (values...)``."""

    field: Field
    values: tuple[Value, ...]
    negated: bool = False

    def __post_init__(self) -> None:
        _check(None if self.values else ["at least one value"], "IN list")
        _check_values(self.field, self.values)


@dataclass(frozen=True)
class Like:
    """``field [NOT] LIKE pattern`` (``ILIKE`` when ``case_insensitive``)."""

    field: Field
    pattern: str
    negated: bool = False
    case_insensitive: bool = False

    def __post_init__(self) -> None:
        _check(["a field that is not a time"] if self.field.kind in TIME_FIELDS else None, "LIKE")
        _check(None if isinstance(self.pattern, str) else ["a string"], "LIKE pattern")
        _check(_pattern_problem(self.pattern), f"LIKE pattern {self.pattern!r}")


@dataclass(frozen=True)
class IsNull:
    """``field IS [NOT] NULL``."""

    field: Field
    negated: bool = False


@dataclass(frozen=True)
class Contains:
    """``tags CONTAINS value``."""

    field: Field
    value: str

    def __post_init__(self) -> None:
        _check(None if self.field.kind == "tags" else ["the field tags"], "CONTAINS")
        _check(None if isinstance(self.value, str) else ["a string"], f"CONTAINS {self.value!r}")


@dataclass(frozen=True)
class _Junction:
    items: tuple[Expr, ...]

    def __post_init__(self) -> None:
        _check(None if len(self.items) > 1 else ["two or more operands"], type(self).__name__)


class And(_Junction):
    """All of ``items`` (two or more)."""


class Or(_Junction):
    """Any of ``items`` (two or more)."""


@dataclass(frozen=True)
class Not:
    """The negation of ``operand``'s result."""

    operand: Expr


Expr = Compare | In | Like | IsNull | Contains | And | Or | Not
"""A filter: a predicate or a boolean combination of filters."""


@dataclass(frozen=True)
class OrderKey:
    """One key of a sort order."""

    field: Field
    descending: bool = False

    def __post_init__(self) -> None:
        _check(["a field that is not tags"] if self.field.kind == "tags" else None, "sort key")

    def __str__(self) -> str:
        return f"{self.field} {'DESC' if self.descending else 'ASC'}"


_RUN_ID: Final = Field("run_id")
DEFAULT_ORDER: Final = (OrderKey(Field("created_at"), True), OrderKey(_RUN_ID, True))
"""Newest first; ties broken by ``run_id``."""


def complete_order(order: Sequence[OrderKey]) -> tuple[OrderKey, ...]:
    """``order`` with ``run_id`` added as the final tie-breaker (in the direction of
    the first key) unless it has it; :data:`DEFAULT_ORDER` when empty."""
    if not order:
        return DEFAULT_ORDER
    if any(key.field == _RUN_ID for key in order):
        return tuple(order)
    return (*order, OrderKey(_RUN_ID, order[0].descending))


# -- rendering ----------------------------------------------------------------


def _render_value(value: Value) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    text = value.isoformat() if isinstance(value, datetime) else value
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _operand(expr: Expr, *wrapped: type) -> str:
    return f"({render(expr)})" if isinstance(expr, wrapped) else render(expr)


def render(expr: Expr) -> str:
    """The canonical text of ``expr``: :func:`parse_where` gives back an equal tree."""
    if isinstance(expr, Or):
        return " OR ".join(_operand(item, Or) for item in expr.items)
    if isinstance(expr, And):
        return " AND ".join(_operand(item, And, Or) for item in expr.items)
    if isinstance(expr, Not):
        return "NOT " + _operand(expr.operand, And, Or)
    if isinstance(expr, IsNull):
        return f"{expr.field} IS {'NOT ' if expr.negated else ''}NULL"
    if isinstance(expr, Compare):
        return f"{expr.field} {expr.op} {_render_value(expr.value)}"
    if isinstance(expr, Contains):
        return f"{expr.field} CONTAINS {_render_value(expr.value)}"
    negation = "NOT " if expr.negated else ""
    if isinstance(expr, In):
        return f"{expr.field} {negation}IN ({', '.join(map(_render_value, expr.values))})"
    operator = "ILIKE" if expr.case_insensitive else "LIKE"
    return f"{expr.field} {negation}{operator} {_render_value(expr.pattern)}"


def render_order(order: Sequence[OrderKey]) -> str:
    """The canonical text of a sort order: :func:`parse_order_by` gives it back."""
    return ", ".join(map(str, order))


# -- tokens -------------------------------------------------------------------


_Kind = Literal["word", "field", "string", "number", "op", "punct", "char", "end"]


@dataclass(frozen=True)
class _Token:
    kind: _Kind
    pos: int  # 1-based
    text: str  # as written
    value: object = None

    def found(self) -> str:
        if self.kind == "end":
            return "end of input"
        shown = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        return f"the string {shown}" if self.kind == "string" else f"'{shown}'"

    def keyword(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words

    def punct(self, text: str) -> bool:
        return self.kind == "punct" and self.text == text


class _Lexer:
    """Reads one token at a time, so errors come in the order of the text."""

    def __init__(self, text: str, subject: str) -> None:
        self.text, self.subject, self.index = text, subject, 0

    def error(
        self, pos: int, expected: list[str], found: str, after: str = ""
    ) -> InvalidInputError:
        where = f" after {after}" if after else ""
        return InvalidInputError(
            f"invalid {self.subject} at position {pos}: "
            f"expected {_choices(expected)}{where}, found {found}",
            details={"position": pos, "expected": expected, "found": found},
        )

    def next(self) -> _Token:
        text, i = self.text, self.index
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            self.index = i
            return _Token("end", i + 1, "")
        kind: _Kind
        value: object = None
        if text[i] in "'\"":
            kind, (value, end) = "string", self._string(i)
        elif number := _NUMBER.match(text, i):
            kind, end = "number", number.end()
            value = float(number[0]) if number[1] or number[2] else int(number[0])
        elif word := _WORD.match(text, i):
            kind, end = "word", word.end()
            if text.startswith(".", end):
                kind, (value, end) = "field", self._key(word[0], end + 1)
        elif operator := _OPERATOR.match(text, i):
            kind, end = "op", operator.end()
        else:
            kind, end = ("punct" if text[i] in "()," else "char"), i + 1
        self.index = end
        return _Token(kind, i + 1, text[i:end], value)

    def _string(self, start: int) -> tuple[str, int]:
        text, quote, i, out = self.text, self.text[start], start + 1, []
        while i < len(text):
            if text[i] == "\\" and text[i + 1 : i + 2] in ("\\", "'", '"'):
                out.append(text[i + 1])
                i += 2
            elif text[i] == quote and text.startswith(quote, i + 1):
                out.append(quote)
                i += 2
            elif text[i] == quote:
                return "".join(out), i + 1
            else:
                out.append(text[i])
                i += 1
        opened = f"the string at position {start + 1}"
        raise self.error(len(text) + 1, [f"a closing {quote}"], "end of input", opened)

    def _key(self, prefix: str, start: int) -> tuple[tuple[str, str], int]:
        text = self.text
        if text.startswith("`", start):
            i, parts = start + 1, []
            while (close := text.find("`", i)) >= 0:
                parts.append(text[i:close])
                if not text.startswith("`", close + 1):
                    return (prefix, "`".join(parts)), close + 1
                i = close + 2
            opened = f"the key at position {start + 1}"
            raise self.error(len(text) + 1, ["a closing `"], "end of input", opened)
        if bare := _BARE_KEY.match(text, start):
            return (prefix, bare[0]), bare.end()
        found = _Token("end", 0, "") if start == len(text) else _Token("char", 0, text[start])
        raise self.error(start + 1, ["a key"], found.found(), f"'{prefix}.'")


def _operators(field: Field) -> list[str]:
    """The operators ``field`` takes (what an error after a field lists)."""
    time = field.kind in TIME_FIELDS
    likes = [] if time else ["LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE"]
    contains = ["CONTAINS"] if field.kind == "tags" else []
    return [*_COMPARE_OPS, "IN", "NOT IN", *likes, "IS NULL", "IS NOT NULL", *contains]


# -- parsing ------------------------------------------------------------------


class _Parser:
    """Recursive descent over the grammar of the module docstring."""

    def __init__(self, text: object, subject: str) -> None:
        if not isinstance(text, str):
            found = type(text).__name__
            raise InvalidInputError(
                f"a {subject} must be a string, not {found}",
                details={"expected": ["a string"], "found": found},
            )
        self.lexer = _Lexer(text, subject)
        if len(text) > MAX_FILTER_LENGTH:
            wanted = [f"at most {MAX_FILTER_LENGTH} characters"]
            raise self.lexer.error(MAX_FILTER_LENGTH + 1, wanted, f"{len(text)} characters")
        self.token = self.lexer.next()

    def advance(self) -> _Token:
        token, self.token = self.token, self.lexer.next()
        return token

    def error(
        self, expected: list[str], after: str = "", token: _Token | None = None
    ) -> InvalidInputError:
        token = token or self.token
        return self.lexer.error(token.pos, expected, token.found(), after)

    def where(self) -> Expr:
        expr = self.junction(0, "OR")
        if self.token.kind != "end":
            raise self.error(["AND", "OR", "end of input"])
        return expr

    def junction(self, depth: int, word: str) -> Expr:
        """``or := and ("OR" and)*`` and ``and := unary ("AND" unary)*``."""
        items = [self.junction(depth, "AND") if word == "OR" else self.unary(depth)]
        while self.token.keyword(word):
            self.advance()
            items.append(self.junction(depth, "AND") if word == "OR" else self.unary(depth))
        return items[0] if len(items) == 1 else (Or if word == "OR" else And)(tuple(items))

    def unary(self, depth: int) -> Expr:
        negation, group = self.token.keyword("NOT"), self.token.punct("(")
        if (negation or group) and depth == MAX_DEPTH:
            raise self.error([f"at most {MAX_DEPTH} nested parentheses and NOTs"])
        if negation:
            self.advance()
            return Not(self.unary(depth + 1))
        if not group:
            return self.predicate()
        self.advance()
        expr = self.junction(depth + 1, "OR")
        if not self.token.punct(")"):
            raise self.error(["AND", "OR", "')'"])
        self.advance()
        return expr

    def field(self, sortable: bool = False) -> Field:
        token = self.token
        kind, key = token.text if token.kind == "word" else "", None
        if token.kind == "field" and isinstance(token.value, tuple):
            kind, key = token.value
        expected = _field_problem(kind, key)
        if sortable and (expected or kind == "tags"):
            expected = [name for name in _FIELD_NAMES if name != "tags"]
        if expected:
            raise self.error(expected)
        self.advance()
        return Field(kind, key)

    def predicate(self) -> Expr:
        field = self.field()
        token, time = self.advance(), field.kind in TIME_FIELDS
        if token.kind == "op" and token.text in _COMPARE_OPS:
            op = cast(CompareOp, "!=" if token.text == "<>" else token.text)
            return Compare(field, op, self.literal(field, f"'{token.text}'"))
        if token.keyword("IS"):
            negated = self.token.keyword("NOT")
            if negated:
                self.advance()
            if not self.token.keyword("NULL"):
                raise self.error(
                    ["NULL"] if negated else ["NULL", "NOT NULL"], f"'IS{' NOT' * negated}'"
                )
            self.advance()
            return IsNull(field, negated)
        if token.keyword("CONTAINS") and field.kind == "tags":
            return Contains(field, self.string(token))
        negated = token.keyword("NOT")
        if negated:
            token = self.advance()
            if not token.keyword("IN", *(() if time else ("LIKE", "ILIKE"))):
                raise self.error(["IN"] if time else ["IN", "LIKE", "ILIKE"], "'NOT'", token)
        if token.keyword("IN"):
            return In(field, self.values(field), negated)
        if token.keyword("LIKE", "ILIKE") and not time:
            pattern = self.token
            if problem := _pattern_problem(self.string(token)):
                raise self.error(problem, "", pattern)
            return Like(field, str(pattern.value), negated, token.keyword("ILIKE"))
        raise self.error(_operators(field), f"'{field}'", token)

    def string(self, after: _Token) -> str:
        if self.token.kind != "string":
            raise self.error(["a string"], f"'{after.text}'")
        return str(self.advance().value)

    def values(self, field: Field) -> tuple[Value, ...]:
        if not self.token.punct("("):
            raise self.error(["'('"], "'IN'")
        self.advance()
        values = [self.literal(field, "'('")]
        while self.token.punct(","):
            self.advance()
            values.append(self.literal(field, "','"))
        if not self.token.punct(")"):
            raise self.error(["','", "')'"])
        self.advance()
        return tuple(values)

    def literal(self, field: Field, after: str) -> Value:
        token = self.token
        value = token.value if token.kind in ("string", "number") else None
        if token.keyword("TRUE", "FALSE"):
            value = token.keyword("TRUE")
        if value is None:
            raise self.error(["a value"], after)
        if field.kind in TIME_FIELDS and isinstance(value, str):
            value = _parse_time(value)
        if expected := _value_problem(field, value):
            raise self.error(expected)
        self.advance()
        return cast(Value, value)

    def order(self) -> list[OrderKey]:
        keys: list[OrderKey] = []
        while True:
            minus = self.token.kind == "char" and self.token.text == "-"
            if minus:
                self.advance()
            field = self.field(sortable=True)
            follow = ["','", "end of input"]
            if not minus and self.token.keyword("ASC", "DESC"):
                keys.append(OrderKey(field, self.advance().keyword("DESC")))
            else:
                keys.append(OrderKey(field, minus))
                follow = follow if minus else ["ASC", "DESC", *follow]
            if self.token.kind == "end":
                return keys
            if not self.token.punct(","):
                raise self.error(follow)
            self.advance()


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
        moment = moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def parse_where(text: str) -> Expr:
    """Parse a filter (the grammar in the module docstring)."""
    return _Parser(text, "filter").where()


def parse_order_by(spec: str | Sequence[str] | None) -> tuple[OrderKey, ...]:
    """Parse a sort order: ``"-created_at"``, ``"summary.pass_rate ASC, run_id"`` or a
    sequence of such strings; ``None`` is :data:`DEFAULT_ORDER`.

    ``run_id`` is added as the final tie-breaker, in the direction of the first key.
    """
    if spec is None:
        return DEFAULT_ORDER
    items = [spec] if isinstance(spec, str) else list(spec)
    if not items:
        raise InvalidInputError(
            "an empty sort order: give at least one key, or None for newest first",
            details={"expected": ["a sort key"], "found": "nothing"},
        )
    keys: list[OrderKey] = []
    for number, item in enumerate(items, 1):
        subject = "sort order" if isinstance(spec, str) else f"sort order item {number}"
        keys += _Parser(item, subject).order()
    return complete_order(keys)
