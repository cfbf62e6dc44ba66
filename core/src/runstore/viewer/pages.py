"""Records on a page: each one clipped, every page capped in bytes as well as in records.

A record may hold up to 8 MiB and a stream any number of them, so a page
never holds a record as stored: it reads the stream one record at a time and
keeps a clipped copy (:func:`clip`, about :data:`RECORD_BYTES` of JSON text)
of the records it shows, at most :data:`PAGE_BYTES` of them. A clipped record
links to its stored line (``/runs/RUN/streams/STREAM/raw?line=N``), and a page
that ran out of room says how many records it left for the next one.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from runstore.aio import AsyncRunView
from runstore.model.errors import CorruptError

__all__ = [
    "INSTANCE_RECORDS",
    "PAGE_BYTES",
    "RECORD_BYTES",
    "Entry",
    "InstanceRecords",
    "Page",
    "Tail",
    "clip",
    "entry",
    "instance_records",
    "numbered",
    "pretty",
]

RECORD_BYTES: Final = 64 * 1024
"""About the most JSON text of one record a page shows; a longer one is clipped."""
PAGE_BYTES: Final = 2 * 1024 * 1024
"""The most JSON text of records one page (or one part of a page) shows."""
_SHORT: Final = 256
"""An object's values up to this long are kept before its longer ones are clipped."""


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _is_short(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= _SHORT
    return not isinstance(value, dict | list)


class _Clipper:
    """Copies a JSON value until ``left`` characters of its text are spent."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.cut = False

    def walk(self, value: Any, depth: int) -> Any:
        if isinstance(value, dict):
            return self.object(value, depth)
        if isinstance(value, list):
            return self.array(value, depth)
        if isinstance(value, str):
            return self.string(value)
        self.left -= len(str(value))
        return value

    def string(self, value: str) -> str:
        if len(value) + 2 <= self.left:
            self.left -= len(value) + 2
            return value
        self.cut = True
        kept, self.left = value[: max(self.left - 3, 0)], 0
        return kept + "…"

    def array(self, value: list[Any], depth: int) -> list[Any]:
        self.left -= 2 * depth  # the line of its closing bracket
        out: list[Any] = []
        for item in value:
            if self.left <= 0:
                break
            self.left -= 2 * depth + 2
            out.append(self.walk(item, depth + 1))
        if len(out) < len(value):
            self.cut = True
            out.append(f"… {len(value) - len(out)} more items")
        return out

    def object(self, value: dict[str, Any], depth: int) -> dict[str, Any]:
        self.left -= 2 * depth  # the line of its closing brace
        kept: dict[int, tuple[str, Any]] = {}
        for short in (True, False):  # ids and names first, long payloads with what is left
            for index, (key, item) in enumerate(value.items()):
                if self.left <= 0:
                    break
                if _is_short(item) is short:
                    self.left -= 2 * depth + 4
                    kept[index] = (self.string(key), self.walk(item, depth + 1))
        out = dict(kept[index] for index in sorted(kept))
        if len(kept) < len(value):
            self.cut = True
            out["…"] = f"{len(value) - len(kept)} more keys"
        return out


def clip(value: Any, limit: int = RECORD_BYTES) -> tuple[Any, bool]:
    """A copy of ``value`` with about ``limit`` characters of JSON text, and whether it lost any.

    Strings are shortened (ending in ``…``); arrays and objects lose their last
    items (a ``… N more`` item says how many). An object keeps its short values
    before its long ones, so the ids and names that link a record survive the
    clipping of a large payload beside them.
    """
    clipper = _Clipper(limit)
    return clipper.walk(value, 1), clipper.cut


@dataclass
class Entry:
    """One record as a page shows it."""

    number: int
    """Its line in its stream, from 1 (the raw link: ``raw?line=number``)."""
    record: Any
    """The record, clipped to about :data:`RECORD_BYTES` of JSON text."""
    text: str
    """``record`` as pretty JSON; its length is what the record costs the page."""
    cut: bool
    names: list[str] = field(default_factory=list)
    """Artifacts the stored record names (the instance page fills it)."""

    @property
    def size(self) -> int:
        return len(self.text)


def entry(number: int, record: Any, names: list[str] | None = None) -> Entry:
    shown, cut = clip(record)
    return Entry(number, shown, pretty(shown), cut, names or [])


async def numbered(view: AsyncRunView, stream: str) -> AsyncIterator[tuple[int, int, Any]]:
    """The records of ``stream`` one at a time: line number (from 1), stored size, record.

    A line that does not parse is :class:`~runstore.model.errors.CorruptError`, naming it.
    """
    number = 0
    async for line in view.read_lines(stream):
        number += 1
        try:  # orjson is fast but takes ~12x a line's size: a large line goes to json
            record = orjson.loads(line) if len(line) <= RECORD_BYTES else json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise CorruptError(
                f"{stream}.jsonl line {number} of run {view.run_id!r} is not valid JSON "
                f"({exc}); run 'runstore verify' to see every damaged record",
                details={"run_id": view.run_id, "stream": stream, "line": number},
            ) from None
        yield number, len(line), record


class Page:
    """The matching records from ``offset`` on, up to ``limit`` of them and ``room`` of text.

    Every matching record is offered (so the page counts them all); it keeps
    clipped copies of those it shows and nothing of the others. The first
    record of a page is always shown, so every page moves on.
    """

    def __init__(self, offset: int, limit: int, room: int = PAGE_BYTES) -> None:
        self.offset, self.limit, self.room = offset, limit, room
        self.entries: list[Entry] = []
        self.matching = 0
        self.full = False

    def offer(self, number: int, record: Any) -> None:
        self.matching += 1
        if self.matching <= self.offset or self.full:
            return
        shown = entry(number, record)
        if self.entries and shown.size > self.room:
            self.full = True
            return
        self.entries.append(shown)
        self.room -= shown.size
        self.full = len(self.entries) >= self.limit

    @property
    def next_offset(self) -> int:
        return self.offset + len(self.entries)

    @property
    def left_over(self) -> int:
        """Matching records after this page (for the next one)."""
        return max(self.matching - self.next_offset, 0)


class Tail:
    """The last matching records: at most ``limit`` of them and ``room`` of text.

    A record within :data:`RECORD_BYTES` as stored is kept as it is (its stored
    size is its cost) and clipped only if it is among the last; a larger one
    is clipped at once, so the tail never holds a large record.
    """

    def __init__(self, limit: int, room: int = PAGE_BYTES) -> None:
        self.limit, self.room = limit, room
        self.kept: deque[tuple[int, Entry | tuple[int, Any]]] = deque()
        self.matching = 0
        self.size = 0

    def offer(self, number: int, size: int, record: Any) -> None:
        self.matching += 1
        if size > RECORD_BYTES:
            clipped = entry(number, record)
            self.kept.append((clipped.size, clipped))
            self.size += clipped.size
        else:
            self.kept.append((size, (number, record)))
            self.size += size
        while len(self.kept) > self.limit or (self.size > self.room and len(self.kept) > 1):
            self.size -= self.kept.popleft()[0]

    def entries(self) -> list[Entry]:
        return [kept if isinstance(kept, Entry) else entry(*kept) for _, kept in self.kept]

    @property
    def earlier(self) -> int:
        """Matching records before the ones kept."""
        return self.matching - len(self.kept)


# -- the records of one instance ------------------------------------------------------

INSTANCE_RECORDS: Final = 1000
"""The most records of one instance its page shows (as well as :data:`PAGE_BYTES`)."""
_FIRST: Final = ("instances", "steps", "assertions")
"""Streams read first for an instance's page; its log lines come last."""


def _read_order(stream: str) -> tuple[int, str]:
    if stream in _FIRST:
        return _FIRST.index(stream), stream
    return (len(_FIRST) + 1 if stream == "logs" else len(_FIRST)), stream


def _named(record: dict[str, Any], names: Collection[str]) -> list[str]:
    """The artifacts ``record`` names in its top-level values (or lists of them)."""
    values = [
        v for value in record.values() for v in (value if isinstance(value, list) else [value])
    ]
    return [v for v in values if isinstance(v, str) and v in names]


@dataclass
class InstanceRecords:
    """One instance's records, clipped, as far as its page has room for them."""

    instance: Entry | None = None
    """Its record in ``instances`` (the last one: a harness may re-append it as it changes)."""
    streams: dict[str, list[Entry]] = field(default_factory=dict)
    """Its records shown, by stream (``steps``, ``assertions``, ``logs``, the caller's)."""
    hidden: dict[str, int] = field(default_factory=dict)
    """Its records not shown (no room left), by stream."""
    named: set[str] = field(default_factory=set)
    """Artifacts its records name."""

    @property
    def found(self) -> bool:
        return self.instance is not None or bool(self.streams or self.hidden)


async def instance_records(
    view: AsyncRunView,
    instance_id: str,
    streams: list[str],
    artifacts: Collection[str],
    room: int = PAGE_BYTES,
) -> InstanceRecords:
    """The records of ``instance_id`` in ``streams`` (each read once, a record at a time).

    Its instance record first, then its steps, assertions, other streams and log
    lines, clipped, until :data:`INSTANCE_RECORDS` records or ``room`` of text
    are shown: the later ones are counted in ``hidden``.
    """
    found = InstanceRecords()
    shown, full = 0, False
    for stream in sorted(streams, key=_read_order):
        async for number, _, record in numbered(view, stream):
            if not isinstance(record, dict) or record.get("instance_id") != instance_id:
                continue
            names = _named(record, artifacts)
            found.named.update(names)
            if stream == "instances":
                found.instance = entry(number, record, names)
                continue
            if not full:
                clipped = entry(number, record, names)
                full = shown >= INSTANCE_RECORDS or (shown > 0 and clipped.size > room)
            if full:
                found.hidden[stream] = found.hidden.get(stream, 0) + 1
                continue
            found.streams.setdefault(stream, []).append(clipped)
            shown, room = shown + 1, room - clipped.size
    return found
