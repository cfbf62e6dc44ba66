"""Encoding records to JSONL lines and decoding a byte stream back into records."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any, Final

import orjson
from pydantic import BaseModel

from runstore.model.errors import CorruptError, InvalidInputError

__all__ = ["MAX_RECORD_BYTES", "LineDecoder", "encode_record"]

MAX_RECORD_BYTES: Final = 8 << 20
"""Largest encoded record ``append`` accepts; store bigger payloads as artifacts."""

_APPEND_NEWLINE: Final = orjson.OPT_APPEND_NEWLINE
_dumps = orjson.dumps
_has_null: Final = re.compile(rb"null").search
"""The fastest way here to ask whether a line holds ``null`` (a compiled search beats ``in``)."""


def encode_record(record: Any) -> bytes:
    """One JSONL line (with its newline) for ``record``: a dict or a pydantic model.

    Raises :class:`~runstore.model.errors.InvalidInputError` for anything that is not
    a JSON object, is nested deeper than 254 levels, holds NaN or infinity, or is
    larger than :data:`MAX_RECORD_BYTES`. (The NaN check costs a ``bytes`` search
    per record; only a line holding ``null`` is walked.)
    """
    if type(record) is dict:
        try:
            line = _dumps(record, option=_APPEND_NEWLINE)
        except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
            raise InvalidInputError(
                f"record is not JSON-serialisable: {exc}; use str keys and JSON values "
                "(str, int, float, bool, None, list, dict, datetime)",
                details={"error": str(exc)},
            ) from None
    elif isinstance(record, BaseModel):
        line = record.model_dump_json().encode() + b"\n"
    elif isinstance(record, dict):
        return encode_record(dict(record))
    else:
        raise InvalidInputError(
            f"a record must be a dict or a pydantic model, got {type(record).__name__}",
            details={"type": type(record).__name__},
        )
    if _has_null(line) and _non_finite(record):  # orjson writes NaN and infinity as null
        raise InvalidInputError(
            "record holds NaN or infinity, which JSON cannot hold (it would be stored as "
            "null); nothing was written",
            details={"error": "non-finite number"},
        )
    if len(line) > MAX_RECORD_BYTES:
        raise InvalidInputError(
            f"record is {len(line)} bytes, over the {MAX_RECORD_BYTES}-byte limit; "
            "store large payloads with put_artifact and append a reference",
            details={"size": len(line), "limit": MAX_RECORD_BYTES},
        )
    return line


def _non_finite(value: Any) -> bool:
    """Whether a NaN or an infinity hides anywhere in ``value`` (a dict, list or model)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_non_finite(item) for item in value)
    if isinstance(value, BaseModel):
        return _non_finite(value.model_dump())
    return False


class LineDecoder:
    """Splits a stream's byte chunks into records, tracking offsets and line numbers.

    Only complete lines (ending in ``\\n``) become records. Bytes after the
    last newline are the *torn tail* (a write cut short by a crash): held
    back, never returned, reported through :attr:`torn_tail`.
    """

    __slots__ = ("line_number", "offset", "pending", "stream")

    def __init__(self, stream: str, offset: int = 0, line_number: int = 0) -> None:
        self.stream = stream
        self.offset = offset
        """Byte offset just past the last complete line consumed."""
        self.line_number = line_number
        """Complete lines consumed so far."""
        self.pending = b""

    @property
    def torn_tail(self) -> int:
        """Bytes after the last complete line (0 when the stream ends cleanly)."""
        return len(self.pending)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Complete lines (without newline) that ``chunk`` finishes."""
        data = self.pending + chunk if self.pending else chunk
        lines = data.split(b"\n")
        self.pending = lines.pop()
        self.offset += len(data) - len(self.pending)
        return lines

    def records(self, lines: list[bytes]) -> Iterator[Any]:
        """Parse lines fed last, one at a time; a line that does not parse is :class:`CorruptError`.

        Lazily, on purpose: records that die as soon as the consumer is done
        with them keep the garbage collector idle (building a list of every
        record of a chunk made reading 2-3x slower).
        """
        loads = orjson.loads
        for index, line in enumerate(lines):
            try:
                record = loads(line)
            except orjson.JSONDecodeError as exc:
                raise self._corrupt(index, exc) from None
            yield record
        self.line_number += len(lines)

    def decode(self, lines: list[bytes]) -> list[Any]:
        """Parse lines fed last into a list (see :meth:`records`)."""
        return list(self.records(lines))

    def _corrupt(self, index: int, exc: Exception) -> CorruptError:
        number = self.line_number + index + 1
        return CorruptError(
            f"{self.stream}.jsonl line {number} is not valid JSON ({exc}); "
            "run 'runstore verify' to see every damaged record",
            details={"stream": self.stream, "line": number, "error": str(exc)},
        )
