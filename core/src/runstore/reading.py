"""Reading streams that may be damaged: a stream's last records, and what of it can be read.

One damaged line must not make a whole stream unreadable.
``view.read(stream, errors="skip")`` skips and reports damaged lines; this
module adds what the command line, replay bundles and ``verify`` need on top:

* :func:`tail`: the last records of a stream, read from its end, so they cost
  what they weigh however long the stream is, and whatever damage lies before
  them is never read;
* :func:`readable_artifacts`: the run's artifact references, a line that is
  not one skipped and reported instead of failing the listing.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from runstore.model.errors import InvalidInputError
from runstore.model.names import validate_stream_name
from runstore.model.records import DAMAGED_KEPT, DamagedLine, DamagedLines, LineDecoder
from runstore.model.run import ArtifactRef
from runstore.spi.backends import LogBackend
from runstore.spi.layout import ARTIFACTS_STREAM

if TYPE_CHECKING:
    from runstore.aio import AsyncRunView

__all__ = ["Tail", "readable_artifacts", "tail"]

FIRST_BLOCK: Final = 64 << 10
"""Bytes :func:`tail` reads first from a stream's end; each further block is twice as big..."""
MAX_BLOCK: Final = 8 << 20
"""... up to this many bytes."""


@dataclass
class Tail:
    """The last records of a stream (:func:`tail`) and where the stream goes on."""

    stream: str
    records: list[Any]
    """The last records, oldest first."""
    damaged: DamagedLines
    """Damaged lines met among them, skipped (oldest first)."""
    end: int
    """Byte offset just past the last complete line: where following the stream goes on."""
    lines: int | None
    """Complete lines before :attr:`end` if the whole stream was read, else ``None``."""
    torn: int
    """Bytes of torn tail after :attr:`end` (a line being written, or cut by a crash)."""

    def decoder(self) -> LineDecoder:
        """A decoder going on from :attr:`end`, skipping damaged lines: to follow the stream."""
        numbered = self.lines is not None
        return LineDecoder(self.stream, self.end, self.lines or 0, errors="skip", numbered=numbered)


async def tail(view: AsyncRunView, stream: str, count: int) -> Tail:
    """The last ``count`` records of ``stream`` of the run behind ``view``, damaged lines skipped.

    Where the log backend has its own ``stream_size`` (the local and object
    store backends do) the stream is read backwards from its end, in blocks
    that double from :data:`FIRST_BLOCK` to :data:`MAX_BLOCK`, until
    ``count`` records are found: reading and parsing cost what those records
    weigh, not what the stream does. Damaged lines among them are skipped and
    reported by byte offset (their line number needs the stream read from its
    start, so it is known only when the stream was read whole). A backend
    without ``stream_size`` has its stream read forward (every damaged line
    reported). ``view.torn_tails[stream]`` is updated.
    """
    validate_stream_name(stream, allow_reserved=True)
    if count < 0:
        raise InvalidInputError(f"count must not be negative, got {count}")
    logs = view.store.log_backend
    if type(logs).stream_size is LogBackend.stream_size:  # it would read the stream through
        found = await _tail_forward(view, stream, count)
    else:
        found = await _Backwards(logs, view.run_id, stream).read(count)
    view.torn_tails[stream] = found.torn
    view.damaged[stream] = found.damaged
    return found


async def _tail_forward(view: AsyncRunView, stream: str, count: int) -> Tail:
    decoder = LineDecoder(stream, errors="skip")
    last: deque[Any] = deque(maxlen=count)
    async for chunk in view.follow_chunks(stream, decoder):
        last.extend(decoder.records(decoder.feed(chunk)))
    return Tail(
        stream, list(last), decoder.damaged, decoder.offset, decoder.line_number, decoder.torn_tail
    )


class _Backwards:
    """Reads one stream from its end towards its start, a block at a time."""

    def __init__(self, logs: LogBackend, run_id: str, stream: str) -> None:
        self.logs, self.run_id, self.stream = logs, run_id, stream
        self.records: list[Any] = []  # newest first
        self.found: list[
            tuple[int, int, int, str]
        ] = []  # (nth line from the end, offset, size, cause)
        self.damaged = 0
        self.taken = 0  # complete lines looked at, from the end

    async def read(self, count: int) -> Tail:
        pos = size = await self.logs.stream_size(self.run_id, self.stream)
        end: int | None = None
        rest = b""  # bytes [pos, pos + len(rest)) not split into lines yet
        block = FIRST_BLOCK
        left = 0  # complete lines not looked at (known once the start is reached)
        while pos > 0 and (end is None or len(self.records) < count):
            start = max(0, pos - block)
            block = min(2 * block, MAX_BLOCK)
            data = await self._range(start, pos) + rest
            if end is None:  # the first newline from the end: what follows it is the torn tail
                size = start + len(data)  # a torn tail cut off meanwhile is shorter
                cut = data.rfind(b"\n") + 1
                if cut == 0 and start > 0:
                    pos, rest = start, data
                    continue
                end, data = start + cut, data[:cut]
            pos = start
            lines = data.split(b"\n")
            lines.pop()  # data ends with a newline (or is empty)
            rest = lines.pop(0) + b"\n" if pos > 0 and lines else b""
            left = self._take(lines, pos + len(data), count)
        end = 0 if end is None else end
        total = self.taken + left if pos == 0 else None
        damaged = DamagedLines()
        damaged.total = self.damaged
        for nth, offset, length, cause in reversed(self.found):
            line = None if total is None else total - nth + 1
            damaged.append(DamagedLine(self.stream, line, offset, length, cause))
        self.records.reverse()
        return Tail(self.stream, self.records, damaged, end, total, size - end)

    def _take(self, lines: list[bytes], stop: int, count: int) -> int:
        """Parse ``lines`` (the last ending at byte ``stop``) from the last on.

        Stops at ``count`` records; returns how many lines were left unparsed.
        """
        for index in range(len(lines) - 1, -1, -1):
            if len(self.records) >= count:
                return index + 1
            line = lines[index]
            stop -= len(line) + 1
            self.taken += 1
            try:
                self.records.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                self.damaged += 1
                if len(self.found) < DAMAGED_KEPT:
                    self.found.append((self.taken, stop, len(line), f"not valid JSON ({exc})"))
        return 0

    async def _range(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of the stream (fewer if it is shorter)."""
        parts: list[bytes] = []
        need = stop - start
        chunks = self.logs.read_bytes(self.run_id, self.stream, start)
        try:
            async for chunk in chunks:
                parts.append(chunk[:need])
                need -= len(chunk)
                if need <= 0:
                    break
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:  # releases the backend's file or connection now
                await aclose()
        return b"".join(parts)


async def readable_artifacts(view: AsyncRunView) -> tuple[list[ArtifactRef], DamagedLines]:
    """The run's artifact references that can be read, and the lines that cannot.

    Like ``view.artifacts()``, except that a line of the ``artifacts`` stream
    that is not JSON, or not an artifact reference, is skipped and reported
    (with its line number) instead of failing the whole listing.
    """
    decoder = LineDecoder(ARTIFACTS_STREAM, errors="skip")
    refs: dict[str, ArtifactRef] = {}
    async for chunk in view.follow_chunks(ARTIFACTS_STREAM, decoder):
        lines = decoder.feed(chunk)
        for index, line in enumerate(lines):
            try:
                ref = ArtifactRef.model_validate(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                decoder.skip(lines, index, f"not valid JSON ({exc})")
            except ValueError as exc:  # pydantic's ValidationError
                decoder.skip(lines, index, f"not an artifact reference ({_first_error(exc)})")
            else:
                refs.setdefault(ref.name, ref)
        decoder.line_number += len(lines)
    uri = view.store.artifact_backend.uri
    located = [ref.model_copy(update={"uri": uri(view.run_id, n)}) for n, ref in refs.items()]
    return located, decoder.damaged


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return type(exc).__name__
    first = errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "record"
    return f"{where}: {first.get('msg', 'invalid')}"
