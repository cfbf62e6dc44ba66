"""A stream writer that buffers lines and stores each commit as one segment.

For stores that cannot append in place, or where a round trip per record is
too slow: the backend supplies only how a segment is stored (an object PUT,
an INSERT), as ``store(start, data)``::

    BufferedStreamWriter(store, start=size, durability=durability or "batch",
                         policy=BatchPolicy(), loop=asyncio.get_running_loop())

``record`` commits before ``append`` returns (concurrent appenders share one
commit); ``batch`` acknowledges at once and commits when the
:class:`BatchPolicy` window closes, on ``flush()`` or on ``close()``. A failed
commit keeps its lines buffered (appends then commit inline and see the
error; past twice a batch ``write`` refuses more). A
:class:`~runstore.model.errors.ConflictError` from ``store`` (another writer
owns the stream) drops them: every later ``write`` and ``commit`` raises it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

from runstore.model.errors import ConflictError, RunstoreError, UnsupportedError
from runstore.spi.backends import Durability, StreamWriter

__all__ = ["BatchPolicy", "BufferedStreamWriter", "StoreSegment"]


@dataclass(frozen=True)
class BatchPolicy:
    """When the ``batch`` policy commits: whichever limit is reached first.

    :ivar records: buffered records (lines).
    :ivar bytes: buffered bytes.
    :ivar interval: seconds since the first buffered record was appended.
    """

    records: int = 5000
    bytes: int = 4 << 20
    interval: float = 1.0


StoreSegment = Callable[[int, bytes], Awaitable[None]]
"""``store(start, data)``: store ``data`` (complete lines) as the stream's bytes from
``start`` on; raise :class:`~runstore.model.errors.ConflictError` if another writer
owns the stream."""


def _again(error: RunstoreError) -> RunstoreError:
    """A fresh copy of a remembered error (re-raising one instance grows its traceback)."""
    fresh = type(error)(error.message, details=error.details)
    fresh.__cause__ = error.__cause__
    return fresh


class BufferedStreamWriter(StreamWriter):
    """Buffers complete lines; each commit hands them to ``store`` as one segment.

    ``write`` runs in whatever thread appends (the sync API calls it from the
    user's) and only touches the buffer under a :class:`threading.Lock`;
    segments are stored on ``loop`` (the store's), by :meth:`commit` or by the
    batch window's timer, armed through ``call_soon_threadsafe``.

    :param store: stores one segment (see :data:`StoreSegment`).
    :param start: the stream's size when the writer opens.
    :param release: awaited last on :meth:`close` (a lock the writer held), even
        if the final commit failed.
    """

    log: ClassVar[logging.Logger] = logging.getLogger("runstore")
    """Where a failed background commit is reported (subclasses name their package's)."""

    def __init__(
        self,
        store: StoreSegment,
        *,
        start: int,
        durability: Durability,
        policy: BatchPolicy,
        loop: asyncio.AbstractEventLoop,
        release: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.durability = durability
        self._store = store
        self._release = release
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
    def pending(self) -> int:
        """Bytes handed to :meth:`write` and not yet stored."""
        with self._lock:
            return len(self._buffer)

    @property
    def broken(self) -> ConflictError | None:
        """The conflict that stopped this writer (another writer got the stream): its
        buffered lines were dropped, and every later write and commit raises it."""
        return self._broken

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
            if self._broken is not None:
                self.log.warning("%s: buffered records dropped: %s", self.log.name, exc)
                return
            # Kept in the buffer; appends now commit inline (and see the error) and
            # the timer tries again after another window.
            self.log.warning("%s: a commit failed, will retry: %s", self.log.name, exc)
            with self._lock:
                self._armed = True
            self._arm()

    async def commit(self) -> None:
        if self._commit_lock is None:
            self._commit_lock = asyncio.Lock()
        async with self._commit_lock:
            with self._lock:
                if self._broken is not None:  # an appender whose lines went with it, or a
                    raise _again(self._broken)  # flush after the window's, learns they were dropped
                data = bytes(self._buffer)
                records = self._records
                self._buffer.clear()
                self._records = 0
                self._armed = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not data:
                self._failure = None
                return
            try:
                await self._store(self._offset, data)
            except ConflictError as exc:
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
                self._offset += len(data)
                self._failure = None

    async def discard(self) -> None:
        with self._lock:
            self._buffer.clear()
            self._records = 0
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        try:
            if self._broken is None:
                await self.commit()
        finally:
            with self._lock:
                self._closed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._background:
                await asyncio.gather(*list(self._background), return_exceptions=True)
            if self._release is not None:
                await self._release()
