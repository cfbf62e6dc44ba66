"""Append-only JSONL streams on a local file.

Durability policies:

``flush`` (default)
    each record is one ``write(2)`` on an ``O_APPEND`` descriptor before
    ``append`` returns: another process can read it at once and a crash of
    the writer (even ``kill -9``) cannot lose it; a power cut can.
``fsync``
    ``append`` returns after ``fdatasync``. Concurrent producers share one
    sync (group commit): async producers through :meth:`LocalStreamWriter.commit`,
    threads of the sync API through :meth:`LocalStreamWriter.commit_sync`.

A writer holds an exclusive ``flock`` on its file, so two writers never
interleave one stream. On open it repairs a torn last line (a write cut
short by a crash) by truncating it: those bytes were never acknowledged.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading

from runstore.model.errors import ConflictError, UnsupportedError
from runstore.spi.backends import Durability, StreamWriter
from runstore_local._errors import translate, translating
from runstore_local.fs import write_all

APPEND_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_TAIL_PROBE = 1 << 16


def repair_torn_tail(fd: int) -> int:
    """Truncate bytes after the last newline; return the repaired size."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - _TAIL_PROBE)
        block = os.pread(fd, end - start, start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    else:
        keep = 0
    os.ftruncate(fd, keep)
    return keep


class LocalStreamWriter(StreamWriter):
    def __init__(
        self, dir_fd: int, name: str, run_id: str, stream: str, durability: Durability
    ) -> None:
        if durability not in ("flush", "fsync"):
            raise UnsupportedError(
                f"the local backend offers durability 'flush' or 'fsync', not {durability!r}",
                details={"durability": durability},
            )
        self.durability = durability
        self._what = f"stream {stream!r} of run {run_id!r}"
        with translating(f"cannot open {self._what}", run_id=run_id, stream=stream):
            fd = os.open(name, APPEND_FLAGS, 0o644, dir_fd=dir_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConflictError(
                f"{self._what} is being written by another writer; one writer per run",
                details={"run_id": run_id, "stream": stream},
            ) from None
        with translating(f"cannot repair {self._what}", run_id=run_id, stream=stream):
            try:
                self._size = repair_torn_tail(fd)
                if durability == "fsync":  # the file's name, if new, survives a power cut too
                    os.fsync(dir_fd)
            except OSError:
                os.close(fd)
                raise
        self._fd = fd
        self._lock = threading.Lock()
        self._partial = False  # a failed write left bytes after _size that are not cut off yet
        self._fsync = durability == "fsync"
        self._written = 0  # writes handed to the OS
        self._synced = 0  # writes known to be on stable storage
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._syncing = False
        self._sync_lock = threading.Lock()

    def write(self, data: bytes) -> bool:
        with self._lock:
            if self._fd < 0:
                raise ConflictError(f"{self._what} is closed; appends are refused")
            try:
                if self._partial:
                    os.ftruncate(self._fd, self._size)
                    self._partial = False
                written = os.write(self._fd, data)
                if written != len(data):
                    write_all(self._fd, memoryview(data)[written:])
            except OSError as exc:
                # The hot path: a bare ``try`` costs nothing until a write fails;
                # ``translating`` would add about a microsecond to every record.
                self._undo_partial()
                raise translate(exc, f"cannot append to {self._what}") from exc
            self._size += len(data)
            self._written += 1
        return not self._fsync

    def _undo_partial(self) -> None:
        # A failed write may have left part of a line on disk: cut it off so the
        # next record is not glued to it. If even that fails, the next write
        # tries again first (and the next writer's torn-tail repair would).
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            self._partial = True

    def commit_sync(self) -> bool:
        if not self._fsync:
            return True
        wanted = self._written
        with self._sync_lock:
            if self._synced >= wanted:
                return True
            batch = self._written
            with translating(f"cannot sync {self._what}"):
                os.fdatasync(self._fd)
            self._synced = max(self._synced, batch)
        return True

    async def commit(self) -> None:
        # Group commit: one fdatasync covers every write made before it started,
        # and the next sync starts as soon as one finishes while anyone waits,
        # so producers writing during a sync share the following one.
        if not self._fsync:
            return
        target = self._written
        if self._synced >= target:
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append((target, waiter))
        if not self._syncing:
            self._syncing = True
            self._start_sync(loop)
        await waiter

    def _start_sync(self, loop: asyncio.AbstractEventLoop) -> None:
        done = loop.run_in_executor(None, self._sync_once)
        done.add_done_callback(lambda future: self._synced_callback(loop, future))

    def _sync_once(self) -> int:
        batch = self._written
        with self._sync_lock:
            os.fdatasync(self._fd)
            self._synced = max(self._synced, batch)
        return batch

    def _synced_callback(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[int]
    ) -> None:
        waiters, self._waiters = self._waiters, []
        error = future.exception()
        if error is not None:
            self._syncing = False
            failure = (
                translate(error, f"cannot sync {self._what}")
                if isinstance(error, OSError)
                else error
            )
            for _, waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(failure)
            return
        batch = future.result()
        for target, waiter in waiters:
            if waiter.done():
                continue
            if target <= batch:
                waiter.set_result(None)
            else:
                self._waiters.append((target, waiter))
        if self._waiters:
            # One loop turn later: the producers just acknowledged run first
            # (their wake-ups are already queued), write their next record and
            # join this sync instead of waiting for the one after it.
            loop.call_soon(self._start_sync, loop)
        else:
            self._syncing = False

    async def close(self) -> None:
        if self._fd < 0:
            return
        await self.commit()
        with self._lock:
            os.close(self._fd)
            self._fd = -1
