"""Encoding records to JSONL lines and decoding a byte stream back into records."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel

from runstore.model.errors import CorruptError, InvalidInputError

__all__ = [
    "DAMAGED_KEPT",
    "MAX_RECORD_BYTES",
    "DamagedLine",
    "DamagedLines",
    "LineDecoder",
    "ReadErrors",
    "encode_record",
    "read_errors",
]

MAX_RECORD_BYTES: Final = 8 << 20
"""Largest encoded record ``append`` accepts; store bigger payloads as artifacts."""

DAMAGED_KEPT: Final = 1000
"""Damaged lines one read reports at most (it counts the rest): garbage cannot exhaust memory."""

ReadErrors = Literal["raise", "skip"]
"""What a read does at a damaged line: ``raise`` :class:`CorruptError`, or ``skip`` it."""

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


@dataclass(frozen=True, slots=True)
class DamagedLine:
    """A line of a stream that is not a record (not JSON, or not what the stream holds).

    ``errors="skip"`` reads skip such lines and report them (``view.damaged``).
    """

    stream: str
    line: int | None
    """1-based line number; ``None`` if unknown (a line met reading from the end)."""
    offset: int
    """Byte offset of the line's first byte in the stream."""
    size: int
    """Bytes of the line, without its newline."""
    cause: str
    """What is wrong with it: ``not valid JSON (...)``."""

    def __str__(self) -> str:
        where = f"byte {self.offset}" if self.line is None else f"line {self.line}"
        return f"{where}: {self.cause}"

    def to_dict(self) -> dict[str, Any]:
        """The damaged line as JSON-ready data."""
        return asdict(self)


class DamagedLines(list[DamagedLine]):
    """The damaged lines one read skipped: the first :data:`DAMAGED_KEPT`; ``total`` counts all.

    A stream of garbage cannot make a reader hold a report of every line.
    """

    __slots__ = ("total",)

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        """Damaged lines skipped, also those past :data:`DAMAGED_KEPT`."""


def read_errors(value: object) -> ReadErrors:
    """``value`` as a read's ``errors`` argument; anything else is :class:`InvalidInputError`."""
    if value not in ("raise", "skip"):
        raise InvalidInputError(
            f"errors must be 'raise' (stop at a damaged line) or 'skip' (skip and report "
            f"it), got {value!r}",
            details={"errors": repr(value)},
        )
    return value


class LineDecoder:
    """Splits a stream's byte chunks into records, tracking offsets and line numbers.

    Only complete lines (ending in ``\\n``) become records. Bytes after the
    last newline are the *torn tail* (a write cut short by a crash): held
    back, never returned, reported through :attr:`torn_tail`; a torn tail is
    not damage. A complete line that does not parse is
    :class:`~runstore.model.errors.CorruptError` with ``errors="raise"``; with
    ``errors="skip"`` it is skipped and recorded in :attr:`damaged`.
    """

    __slots__ = (
        "_scan",
        "batch_offset",
        "damaged",
        "errors",
        "line_number",
        "numbered",
        "offset",
        "pending",
        "stream",
    )

    def __init__(
        self,
        stream: str,
        offset: int = 0,
        line_number: int = 0,
        *,
        errors: ReadErrors = "raise",
        numbered: bool = True,
    ) -> None:
        self.stream = stream
        self.offset = offset
        """Byte offset just past the last complete line consumed."""
        self.line_number = line_number
        """Complete lines consumed so far."""
        self.pending = b""
        self.errors = read_errors(errors)
        self.numbered = numbered
        """Whether :attr:`line_number` counts from the stream's start (else: no line numbers)."""
        self.damaged = DamagedLines()
        """Lines skipped as damaged (``errors="skip"``)."""
        self.batch_offset = offset
        """Byte offset of the first of the lines fed last."""
        self._scan = (0, offset)

    @property
    def torn_tail(self) -> int:
        """Bytes after the last complete line (0 when the stream ends cleanly)."""
        return len(self.pending)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Complete lines (without newline) that ``chunk`` finishes."""
        data = self.pending + chunk if self.pending else chunk
        lines = data.split(b"\n")
        self.pending = lines.pop()
        self.batch_offset = self.offset
        self._scan = (0, self.offset)
        self.offset += len(data) - len(self.pending)
        return lines

    def count(self, chunk: bytes) -> int:
        """How many complete lines ``chunk`` finishes, consumed without splitting or parsing.

        For a reader that only counts (a resumed run's plain streams): damaged
        lines count, as lines written; a torn tail is held back as by :meth:`feed`.
        """
        data = self.pending + chunk if self.pending else chunk
        end = data.rfind(b"\n") + 1
        self.pending = data[end:]
        self.batch_offset = self.offset
        self.offset += end
        lines = data.count(b"\n", 0, end)
        self.line_number += lines
        return lines

    def records(self, lines: list[bytes]) -> Iterator[Any]:
        """Parse lines fed last, one at a time; see the class docs for a line that does not parse.

        Lazily, on purpose: records that die as soon as the consumer is done
        with them keep the garbage collector idle (building a list of every
        record of a chunk made reading 2-3x slower).
        """
        loads = orjson.loads
        for index, line in enumerate(lines):
            try:
                record = loads(line)
            except orjson.JSONDecodeError as exc:
                if self.errors == "raise":
                    raise self._corrupt(lines, index, exc) from None
                self.skip(lines, index, f"not valid JSON ({exc})")
                continue
            yield record
        self.line_number += len(lines)

    def decode(self, lines: list[bytes]) -> list[Any]:
        """Parse lines fed last into a list (see :meth:`records`)."""
        return list(self.records(lines))

    def skip(self, lines: list[bytes], index: int, cause: str) -> None:
        """Record ``lines[index]`` (of the lines fed last) as damaged, for ``cause``."""
        damaged = self.damaged
        damaged.total += 1
        if len(damaged) < DAMAGED_KEPT:
            line = self.line_number + index + 1 if self.numbered else None
            offset = self._offset_of(lines, index)
            damaged.append(DamagedLine(self.stream, line, offset, len(lines[index]), cause))

    def _offset_of(self, lines: list[bytes], index: int) -> int:
        """Byte offset of ``lines[index]``: summed on from the last line asked about."""
        start, offset = self._scan if self._scan[0] <= index else (0, self.batch_offset)
        offset += sum(len(line) + 1 for line in lines[start:index])
        self._scan = (index, offset)
        return offset

    def _corrupt(self, lines: list[bytes], index: int, exc: Exception) -> CorruptError:
        number = self.line_number + index + 1
        return CorruptError(
            f"{self.stream}.jsonl line {number} is not valid JSON ({exc}); read it with "
            "errors='skip' to skip damaged lines, or run 'runstore verify' to see every one",
            details={
                "stream": self.stream,
                "line": number,
                "offset": self._offset_of(lines, index),
                "error": str(exc),
            },
        )
