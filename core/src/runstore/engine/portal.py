"""A private event loop in a daemon thread: how the sync API runs async backends.

Only slow-path calls (create, open a stream, put an artifact, finish, read a
chunk) cross into it; the append hot path never does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, Final, TypeVar

from runstore.engine.fork import forked_error, guard

T = TypeVar("T")


class _Worker:
    """A daemon thread that runs one portal's loop at a time, then waits for the next.

    Starting a thread and joining it again cost ~0.3 ms here, a third of what
    a caller that opens a store for every call (a serverless handler) paid
    for the call; each portal still gets a fresh loop, so nothing carries over.
    """

    def __init__(self) -> None:
        self._loops: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, threading.Event] | None]
        self._loops = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name="runstore-portal", daemon=True)
        self.thread.start()

    def run(self, loop: asyncio.AbstractEventLoop) -> threading.Event:
        """Run ``loop`` until it stops; the event is set once it has."""
        stopped = threading.Event()
        self._loops.put((loop, stopped))
        return stopped

    def end(self) -> None:
        self._loops.put(None)

    def _serve(self) -> None:
        while (job := self._loops.get()) is not None:
            loop, stopped = job
            try:
                loop.run_forever()
            finally:
                stopped.set()


_IDLE: list[_Worker] = []
"""Workers whose portal closed, kept for the next portal of this process."""
_KEPT: Final = 4
_idle_lock = threading.Lock()


def _take_worker() -> _Worker:
    with _idle_lock:
        if _IDLE:
            return _IDLE.pop()
    return _Worker()


def _give_back(worker: _Worker) -> None:
    with _idle_lock:
        if len(_IDLE) < _KEPT:
            _IDLE.append(worker)
            return
    worker.end()


def _forget_workers() -> None:
    """In a child after ``fork()``: the parent's worker threads did not come along."""
    _IDLE.clear()
    _idle_lock.release()


# Held across fork(), so that the child never inherits it taken by another thread.
os.register_at_fork(
    before=_idle_lock.acquire,
    after_in_parent=_idle_lock.release,
    after_in_child=_forget_workers,
)


class Portal:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._worker: _Worker | None = None
        self._stopped: threading.Event | None = None
        self._lock = threading.Lock()
        self.was_forked = False
        """This is a child's copy of a parent's portal: its loop thread did not come along."""
        guard(self)

    def forked(self) -> None:
        self._loop = self._thread = self._worker = self._stopped = None
        self._lock = threading.Lock()
        self.was_forked = True

    def _ensure(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                loop, worker = asyncio.new_event_loop(), _take_worker()
                self._stopped = worker.run(loop)
                self._loop, self._thread, self._worker = loop, worker.thread, worker
            return self._loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The portal's loop, started on first use."""
        return self._ensure()

    def running_loop(self) -> asyncio.AbstractEventLoop | None:
        """The portal's loop if it has been started (never starts one)."""
        return self._loop

    def in_loop_thread(self) -> bool:
        """Whether the caller runs on the portal's own thread."""
        return threading.current_thread() is self._thread

    def call_once(self, coro: Coroutine[Any, Any, T]) -> T:
        """:meth:`call`, or, if the portal never started, ``coro`` on a short-lived loop.

        For closing a store that ran nothing on its loop: no thread is started
        just to stop it again.
        """
        if self._loop is not None or self.was_forked:
            return self.call(coro)
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(coro)
        finally:
            loop.close()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the portal loop and wait for its result."""
        if self.was_forked:
            coro.close()
            raise forked_error("store")
        loop = self._ensure()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("runstore's sync API cannot be called from its own event loop")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            # Interrupted while waiting (Ctrl-C): stop the work on the loop too,
            # and wait for it to settle so nothing runs on behind the caller.
            if future.cancel():
                concurrent.futures.wait([future], timeout=5)
            raise

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Iterate an async iterator from sync code, one portal hop per item."""
        try:
            while True:
                try:
                    yield self.call(agen.__anext__())  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and self._loop is not None and self._loop.is_running():
                try:
                    self.call(aclose())
                except RuntimeError:
                    pass  # still running a cancelled step; the loop finishes it

    def close(self) -> None:
        with self._lock:
            loop, worker, stopped = self._loop, self._worker, self._stopped
            self._loop = self._thread = self._worker = self._stopped = None
        if loop is None or worker is None or stopped is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(_settle(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            stopped.wait()
            loop.close()
            _give_back(worker)


async def _settle() -> None:
    """Finish what is left on the loop before it stops, as ``asyncio.run`` does.

    An async generator dropped half-way (a ``diff`` that stopped at its limit)
    is closed by a task the loop schedules; stopping the loop under it prints
    "Task was destroyed but it is pending!". Those closing tasks finish; any
    other task left behind is cancelled.
    """
    await asyncio.sleep(0)  # the closing tasks scheduled from other threads start
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    for task in pending:
        if type(task.get_coro()).__name__ != "async_generator_athrow":
            task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()
