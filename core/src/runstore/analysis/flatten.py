"""The flattening rule: how nested JSON records become the columns of an Arrow table.

One rule for every table :mod:`runstore.analysis` builds, whichever way a
block of records was parsed:

1. **Objects are flattened** into one column per leaf, named by the path of
   keys joined with a dot: ``{"observation": {"latency_ms": 12}}`` gives the
   column ``observation.latency_ms`` (the names ``list_runs(where=...)`` uses:
   ``metadata.project``, ``metrics.loss``). An empty object gives no column.
2. **Arrays stay one column**, an Arrow list (``list<int64>``,
   ``list<struct<...>>``) when its items share a type, else the array's JSON
   text.
3. **Scalars keep their JSON type**: string, int64, float64, bool. A column
   that holds integers and floats is float64; a column that holds values of
   other, different types (a string here, a number there; a list here, an
   object there) becomes a string column: strings as they are, every other
   value its JSON text (``5``, ``true``, ``[1, "a"]``).
4. **A key missing from a record is null** in that row; a column nobody wrote
   is absent (the tables' standard columns excepted, see
   :mod:`~runstore.analysis.frames`).
5. A record that is not a JSON object is one column, ``value``.

When an object at a path in one record is a scalar in another
(``"observation": "timeout"``), the scalar goes to the column ``observation``
and the object's leaves to ``observation.<key>``. A key that itself holds a
dot can collide with a nested path (``{"a.b": 1, "a": {"b": 2}}``); the later
one in the record wins.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.json as pajson  # type: ignore[import-untyped]

__all__ = [
    "SEPARATOR",
    "VALUE_COLUMN",
    "Columns",
    "flatten",
    "json_text",
    "lines_table",
    "records_table",
]

SEPARATOR: Final = "."
"""Joins the keys of a nested field into a column name."""

VALUE_COLUMN: Final = "value"
"""The column of a record that is not a JSON object."""

_PARSE_BLOCK: Final = 1 << 20
"""Bytes pyarrow's JSON reader parses per block (its default); longer lines go the slow way."""


def flatten(record: Any, prefix: str = "") -> dict[str, Any]:
    """One record as ``{column: value}`` by the rule above (values still Python objects)."""
    if not isinstance(record, dict):
        return {prefix[:-1] if prefix else VALUE_COLUMN: record}
    out: dict[str, Any] = {}
    _flatten_into(record, prefix, out)
    return out


def _flatten_into(record: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in record.items():
        if type(value) is dict:
            _flatten_into(value, f"{prefix}{key}{SEPARATOR}", out)
        else:
            out[prefix + key] = value


def json_text(value: Any) -> str | None:
    """A value as rule 3 stores it in a string column: strings as they are, else JSON."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def _column(values: list[Any], type_: Any = None) -> Any:
    """An Arrow array of ``values``: their common type, else their JSON text (rule 3)."""
    try:
        return pa.array(values, type=type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([json_text(v) for v in values], type=pa.string())


def records_table(rows: Sequence[Mapping[str, Any]], types: Mapping[str, Any] = {}) -> Any:
    """A table of flattened rows; ``types`` fixes the Arrow type of some columns."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return pa.table(
        {name: _column([row.get(name) for row in rows], types.get(name)) for name in names}
    )


def lines_table(lines: list[bytes]) -> Any | None:
    """Parse complete JSON lines with Arrow's JSON reader, flattened; ``None`` if it cannot.

    The fast path: ``None`` (a line that is not an object or not JSON, a type
    that changes within the block, a key that collides) sends the block to
    :func:`records_table`, which applies the same rule one record at a time.
    """
    data = b"\n".join(lines)
    options = pajson.ReadOptions(block_size=_PARSE_BLOCK)
    try:
        table = pajson.read_json(io.BytesIO(data), read_options=options)
        if _has_timestamp(table.schema):
            # Arrow guesses timestamps from strings only when every one of a block has
            # whole seconds, so a column's type would depend on the clock: keep text.
            schema = _strings_for_timestamps(table.schema)
            parse = pajson.ParseOptions(explicit_schema=schema)
            table = pajson.read_json(io.BytesIO(data), read_options=options, parse_options=parse)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(lines):  # blank lines: let the record path report them
        return None
    while any(pa.types.is_struct(field.type) for field in table.schema):
        table = table.flatten()
    if len(set(table.column_names)) != table.num_columns:
        return None
    return table


def _has_timestamp(schema: Any) -> bool:
    return any(_type_has_timestamp(field.type) for field in schema)


def _type_has_timestamp(type_: Any) -> bool:
    if pa.types.is_timestamp(type_):
        return True
    if pa.types.is_struct(type_) or pa.types.is_list(type_):
        return any(_type_has_timestamp(type_.field(i).type) for i in range(type_.num_fields))
    return False


def _strings_for_timestamps(schema: Any) -> Any:
    return pa.schema([field.with_type(_string_type(field.type)) for field in schema])


def _string_type(type_: Any) -> Any:
    if pa.types.is_timestamp(type_):
        return pa.string()
    if pa.types.is_struct(type_):
        return pa.struct([f.with_type(_string_type(f.type)) for f in type_])
    if pa.types.is_list(type_):
        return pa.list_(type_.value_field.with_type(_string_type(type_.value_type)))
    return type_


class Columns:
    """Tables of one kind, block by block, combined into one by the rule at the end.

    Each block may have different columns and types; :meth:`table` settles
    each column's type (rule 3), fills columns a block lacks with nulls and
    concatenates without copying the blocks that already fit.
    """

    def __init__(
        self,
        leading: Sequence[str] = (),
        standard: Mapping[str, Any] | None = None,
        wanted: Callable[[str], bool] | None = None,
    ) -> None:
        self.leading = list(leading)
        """Columns that come first, in this order (``run_id``, ``instance_id``)."""
        self.standard = dict(standard or {})
        """Columns every table of this kind has, with their type when nobody wrote them."""
        self.wanted = wanted
        """Which other columns to keep (``None``: all)."""
        self.seen: list[str] = []
        """Every column any block had, kept or not, in order of appearance."""
        self.blocks: list[Any] = []
        self.types: dict[str, list[Any]] = {
            name: [] for name in [*self.leading, *self.standard] if self._keeps(name)
        }
        self._seen: set[str] = set()

    def _keeps(self, name: str) -> bool:
        return name in self.leading or self.wanted is None or self.wanted(name)

    def add(self, table: Any) -> None:
        """Add one block (an Arrow table), without the columns not wanted."""
        names = table.column_names
        for name in names:
            if name not in self._seen:
                self._seen.add(name)
                self.seen.append(name)
        if self.wanted is not None:
            table = table.select([name for name in names if self._keeps(name)])
        for field in table.schema:
            seen = self.types.setdefault(field.name, [])
            if field.type not in seen:
                seen.append(field.type)
        self.blocks.append(table)

    def table(self) -> Any:
        """The combined table: one type per column, every column in every row."""
        settled = {name: self._settle(name) for name in self.types}
        texts = {name for name, type_ in settled.items() if pa.types.is_string(type_)}
        blocks = [self._as_text(block, texts) for block in self.blocks]
        if blocks:
            combined = pa.concat_tables(blocks, promote_options="permissive")
        else:
            combined = pa.table({})
        columns = []
        for name, type_ in settled.items():
            if name not in combined.column_names or pa.types.is_null(combined.column(name).type):
                columns.append(pa.nulls(combined.num_rows, type_))
            else:
                columns.append(combined.column(name))
        return pa.table(columns, names=list(settled))

    def _settle(self, name: str) -> Any:
        types = [t for t in self.types[name] if not pa.types.is_null(t)]
        if not types:
            return self.standard.get(name, pa.string() if name in self.leading else pa.null())
        if len(types) == 1:
            return types[0]
        try:
            unified = pa.unify_schemas(
                [pa.schema([(name, t)]) for t in types], promote_options="permissive"
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pa.string()
        return unified.field(name).type

    @staticmethod
    def _as_text(block: Any, texts: set[str]) -> Any:
        """``block`` with the columns that became text (rule 3) as text."""
        for index, field in enumerate(block.schema):
            if field.name in texts and not (
                pa.types.is_string(field.type) or pa.types.is_null(field.type)
            ):
                text = pa.array(
                    [json_text(v) for v in block.column(index).to_pylist()], pa.string()
                )
                block = block.set_column(index, field.name, text)
        return block
