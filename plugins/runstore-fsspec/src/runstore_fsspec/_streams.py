"""The stream writer for stores without append: buffered records become segments.

See :mod:`runstore_fsspec.backend` for the durability policies and their window.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from runstore.model.errors import ConflictError, RunstoreError, UnsupportedError
from runstore.spi.backends import Durability, StreamWriter

__all__ = ["BatchPolicy", "SegmentWriter"]

_log = logging.getLogger("runstore_fsspec")

DEFAULT_BATCH_RECORDS: Final = 5000
DEFAULT_BATCH_BYTES: Final = 4 << 20
DEFAULT_BATCH_INTERVAL: Final = 1.0


@dataclass(frozen=True)
class BatchPolicy:
    """When the ``batch`` policy writes a segment: whichever limit is reached first.

    :ivar records: buffered records (lines).
    :ivar bytes: buffered bytes.
    :ivar interval: seconds since the oldest buffered record was appended.
    """

    records: int = DEFAULT_BATCH_RECORDS
    bytes: int = DEFAULT_BATCH_BYTES
    interval: float = DEFAULT_BATCH_INTERVAL


PutSegment = Callable[[int, bytes], Awaitable[None]]
"""``put_segment(start_offset, data)``: store ``data`` as the segment at ``start_offset``."""


def _again(error: RunstoreError) -> RunstoreError:
    """A fresh copy of a remembered error (re-raising one instance grows its traceback)."""
    fresh = type(error)(error.message, details=error.details)
    fresh.__cause__ = error.__cause__
    return fresh


class SegmentWriter(StreamWriter):
    """Buffers complete lines and writes them as immutable segment objects.

    ``write`` runs in whatever thread appends (the sync API calls it from the
    user's thread) and only touches the buffer under a :class:`threading.Lock`;
    segments are written on the store's event loop, by :meth:`commit` or by a
    timer armed through ``call_soon_threadsafe``.

    Memory is bounded: the buffer holds at most one batch (plus one record);
    while the store is unreachable it may grow to twice that, then ``write``
    raises instead of buffering more.
    """

    def __init__(
        self,
        put_segment: PutSegment,
        *,
        start: int,
        durability: Durability,
        policy: BatchPolicy,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.durability = durability
        self._put_segment = put_segment
        self._policy = policy
        self._loop = loop
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self._records = 0
        self._offset = start
        self._per_record = durability == "record"
        self._hard_limit = 2 * max(policy.bytes, 1 << 20)
        self._armed = False
        self._timer: asyncio.TimerHandle | None = None
        self._commit_lock: asyncio.Lock | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._failure: RunstoreError | None = None
        self._broken: ConflictError | None = None
        self._closed = False

    @property
    def offset(self) -> int:
        """Bytes of the logical stream stored so far (durable)."""
        return self._offset

    @property
    def pending(self) -> int:
        """Bytes handed to :meth:`write` and not yet stored."""
        with self._lock:
            return len(self._buffer)

    def write(self, data: bytes) -> bool:
        with self._lock:
            if self._closed:
                raise UnsupportedError("stream writer is closed; open a new one")
            if self._broken is not None:
                raise _again(self._broken)
            if self._failure is not None and len(self._buffer) >= self._hard_limit:
                raise _again(self._failure)
            self._buffer += data
            self._records += data.count(b"\n")
            if (
                self._per_record
                or self._failure is not None
                or len(self._buffer) >= self._policy.bytes
                or self._records >= self._policy.records
            ):
                return False
            if self._armed:
                return True
            self._armed = True
        self._loop.call_soon_threadsafe(self._arm)
        return True

    def _arm(self) -> None:
        if self._timer is None and not self._closed:
            self._timer = self._loop.call_later(self._policy.interval, self._fire)

    def _fire(self) -> None:
        self._timer = None
        task = self._loop.create_task(self._background_commit())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _background_commit(self) -> None:
        try:
            await self.commit()
        except RunstoreError as exc:
            # Kept in the buffer; appends now commit inline (and see the error) and
            # the timer tries again after another interval.
            _log.warning("runstore-fsspec: writing a segment failed, will retry: %s", exc)
            with self._lock:
                self._armed = True
            self._arm()

    async def commit(self) -> None:
        if self._commit_lock is None:
            self._commit_lock = asyncio.Lock()
        async with self._commit_lock:
            with self._lock:
                data = bytes(self._buffer)
                records = self._records
                self._buffer.clear()
                self._records = 0
                self._armed = False
                start = self._offset
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not data:
                self._failure = None
                return
            try:
                await self._put_segment(start, data)
            except ConflictError as exc:
                # another writer owns the stream: retrying can never succeed, so the
                # (unacknowledged) data is dropped and the writer refuses more
                self._broken = exc
                raise
            except BaseException as exc:
                with self._lock:
                    self._buffer[0:0] = data
                    self._records += records
                    if isinstance(exc, RunstoreError):
                        self._failure = exc
                raise
            with self._lock:
                self._offset = start + len(data)
                self._failure = None

    async def discard(self) -> None:
        with self._lock:
            self._buffer.clear()
            self._records = 0
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        await self.commit()
        with self._lock:
            self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
