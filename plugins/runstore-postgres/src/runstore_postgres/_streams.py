"""The stream writer: buffered lines become rows of ``stream_records`` in one statement.

Each commit is one SQL statement (one transaction, one round trip): it moves the
stream's ``size`` and ``records`` on, guarded by the writer's epoch (its
fencing token) and the size it expects, and inserts the lines with their
sequence numbers and end offsets. A commit whose outcome was lost with the
connection is retried safely: if the stream already holds exactly these bytes
past the expected size, the earlier attempt landed.

Durability policies: ``record`` (the default) commits before ``append``
returns, concurrent appenders sharing one commit; ``batch`` acknowledges at
once and commits when :class:`BatchPolicy`'s window closes, or on ``flush()``.
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

__all__ = ["BatchPolicy", "Commit", "PostgresStreamWriter"]

_log = logging.getLogger("runstore_postgres")

DEFAULT_BATCH_RECORDS: Final = 5000
DEFAULT_BATCH_BYTES: Final = 4 << 20
DEFAULT_BATCH_INTERVAL: Final = 0.2


@dataclass(frozen=True)
class BatchPolicy:
    """When the ``batch`` policy commits: whichever limit is reached first.

    :ivar records: buffered records; :ivar bytes: buffered bytes;
    :ivar interval: seconds since the first buffered record was appended.
    """

    records: int = DEFAULT_BATCH_RECORDS
    bytes: int = DEFAULT_BATCH_BYTES
    interval: float = DEFAULT_BATCH_INTERVAL


Commit = Callable[[int, list[bytes]], Awaitable[None]]
"""``commit(expected_size, lines)``: store ``lines`` after byte ``expected_size``."""


def _again(error: RunstoreError) -> RunstoreError:
    fresh = type(error)(error.message, details=error.details)
    fresh.__cause__ = error.__cause__
    return fresh


class PostgresStreamWriter(StreamWriter):
    """Buffers complete lines; commits them on the store's event loop.

    ``write`` may run in any thread (the sync API calls it from the user's);
    it only touches the buffer under a :class:`threading.Lock`. Memory is
    bounded: while the database is unreachable the buffer grows to at most
    twice a batch, then ``write`` raises.
    """

    def __init__(
        self,
        commit: Commit,
        release: Callable[[], Awaitable[None]],
        *,
        size: int,
        durability: Durability,
        policy: BatchPolicy,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.durability = durability
        self._commit = commit
        self._release = release
        self._policy = policy
        self._loop = loop
        self._lock = threading.Lock()
        self._buffer: list[bytes] = []
        self._bytes = 0
        self._records = 0
        self._size = size
        self._per_record = durability == "record"
        self._hard_limit = 2 * max(policy.bytes, 1 << 20)
        self._armed = False
        self._timer: asyncio.TimerHandle | None = None
        self._commit_lock: asyncio.Lock | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._failure: RunstoreError | None = None
        self._broken: ConflictError | None = None
        self._closed = False

    def write(self, data: bytes) -> bool:
        with self._lock:
            if self._closed:
                raise UnsupportedError("stream writer is closed; open a new one")
            if self._broken is not None:
                raise _again(self._broken)
            if self._failure is not None and self._bytes >= self._hard_limit:
                raise _again(self._failure)
            self._buffer.append(data)
            self._bytes += len(data)
            self._records += data.count(b"\n")
            if (
                self._per_record
                or self._failure is not None
                or self._bytes >= self._policy.bytes
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
            # Kept in the buffer; appends now commit inline (and see the error),
            # and the timer tries again after another window.
            _log.warning("runstore-postgres: a batch commit failed, will retry: %s", exc)
            with self._lock:
                self._armed = True
            self._arm()

    async def commit(self) -> None:
        if self._commit_lock is None:
            self._commit_lock = asyncio.Lock()
        async with self._commit_lock:
            with self._lock:
                if self._broken is not None:
                    raise _again(self._broken)
                data = b"".join(self._buffer)
                records = self._records
                self._buffer.clear()
                self._bytes = self._records = 0
                self._armed = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not data:
                self._failure = None
                return
            lines = data.splitlines(keepends=True)
            try:
                await self._commit(self._size, lines)
            except ConflictError as exc:
                # Another writer owns the stream now (or the run was deleted): retrying
                # can never succeed, so the unacknowledged data is dropped.
                self._broken = exc
                raise
            except BaseException as exc:
                with self._lock:
                    self._buffer.insert(0, data)
                    self._bytes += len(data)
                    self._records += records
                    if isinstance(exc, RunstoreError):
                        self._failure = exc
                raise
            self._size += len(data)
            self._failure = None

    async def discard(self) -> None:
        with self._lock:
            self._buffer.clear()
            self._bytes = self._records = 0
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
            await self._release()
