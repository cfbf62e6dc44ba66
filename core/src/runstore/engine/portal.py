"""How the sync API runs async backends: in the caller's thread, or on a loop thread.

Only slow-path calls (create, open a stream, put an artifact, finish, read a
chunk) go through the portal; the append hot path never does.

A portal whose backends do their I/O with blocking calls (the local file
system, memory: ``Capabilities.inline``) runs each call *inline*, on its own
event loop driven by the calling thread (``run_until_complete``): no hop to
another thread, which cost 0.1-0.4 ms a call here, most of what a caller that
opens a store for every call paid. The loop is handed to a worker thread, for
good, as soon as something must run between calls: a task left on the loop (a
live run's heartbeat) once ``handoff_after`` seconds passed without the store
closing, a long iteration (``follow``), a call from a thread that runs an event
loop of its own, or anyone asking for the loop. Other portals hop every call
onto the loop thread from the start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import itertools
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Final, TypeVar

from runstore.engine.fork import forked_error, guard

T = TypeVar("T")

HANDOFF_AFTER: Final = 0.05
"""Seconds a task may wait on an inline loop before the loop gets a thread of its own."""

_OWN_LOOP: Final = "runstore's sync API cannot be called from its own event loop"


class _Worker:
    """A daemon thread that runs one job at a time (a portal's loop), then waits for the next.

    Starting a thread and joining it again cost ~0.3 ms here: workers are kept
    for the next portal of the process, and each portal still gets a fresh loop.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name="runstore-portal", daemon=True)
        self.thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)

    def run(self, loop: asyncio.AbstractEventLoop) -> threading.Event:
        """Run ``loop`` until it stops; the event is set once it has."""
        stopped = threading.Event()
        self.submit(lambda: _run_forever(loop, stopped))
        return stopped

    def end(self) -> None:
        self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()


def _run_forever(loop: asyncio.AbstractEventLoop, stopped: threading.Event) -> None:
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


class _Timer:
    """One daemon thread per process that runs jobs when they are due (handoffs)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def after(self, delay: float, job: Callable[[], None]) -> None:
        entry = (time.monotonic() + delay, next(self._order), job)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="runstore-handoff", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._due, entry)
            if self._due[0] is entry:  # sooner than what the thread waits for
                self._cond.notify()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._cond.wait(self._due[0][0] - time.monotonic() if self._due else None)
                job = heapq.heappop(self._due)[2]
            job()


_timer = _Timer()


def _forget_timer() -> None:
    """In a child after ``fork()``: the parent's timer thread did not come along."""
    global _timer  # noqa: PLW0603 - a fresh timer, as the threads are gone
    _timer = _Timer()


os.register_at_fork(after_in_child=_forget_timer)


def _run_once(coro: Coroutine[Any, Any, T]) -> T:
    """``coro`` on a short-lived loop of its own."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def _loop_in_this_thread() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Portal:
    """The event loop of one sync store, inline or on a worker thread (see the module).

    :param inline: run calls in the caller's thread until the loop must run on
        its own (only for backends that declare ``Capabilities.inline``).
    :param heartbeat: the store's heartbeat interval (0: none). A task left on an
        inline loop waits ``HANDOFF_AFTER`` seconds, at most half a heartbeat,
        before the loop is handed to a worker thread (a store closed sooner never
        starts one), so no beat is late.
    """

    def __init__(self, *, inline: bool = False, heartbeat: float = 0.0) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inline = inline
        """Calls run in the caller's thread; ``False`` once the loop has a thread."""
        self._handoff_after = min(HANDOFF_AFTER, heartbeat / 2) if heartbeat > 0 else HANDOFF_AFTER
        self._handoff: threading.Event | None = None
        """Set to call off the scheduled handoff of the inline loop to a worker."""
        self._runner: int | None = None
        """The thread running an inline call right now."""
        self._thread: threading.Thread | None = None
        self._worker: _Worker | None = None
        self._stopped: threading.Event | None = None
        self._closed = False
        # Lock order: _running (one inline call at a time), then _lock (the fields).
        self._running = threading.Lock()
        self._lock = threading.Lock()
        self.was_forked = False
        """This is a child's copy of a parent's portal: its loop thread did not come along."""
        guard(self)

    def forked(self) -> None:
        self._loop = self._thread = self._worker = self._stopped = self._handoff = None
        self._runner = None
        self._running, self._lock = threading.Lock(), threading.Lock()
        self.was_forked = True

    # -- the loop and its thread ---------------------------------------------------

    def _threaded(self) -> asyncio.AbstractEventLoop:
        """The loop, running on a worker thread (handed over now if it ran inline)."""
        loop = self._loop
        if loop is not None and not self._inline:
            return loop
        if self._runner == threading.get_ident():
            raise RuntimeError(_OWN_LOOP)
        with self._running, self._lock:
            if self._loop is None or self._inline:
                if self._handoff is not None:
                    self._handoff.set()
                loop = self._loop or asyncio.new_event_loop()
                worker = _take_worker()
                self._loop, self._inline, self._closed = loop, False, False
                self._thread, self._worker, self._stopped = worker.thread, worker, worker.run(loop)
            return self._loop

    def _schedule_handoff(self, loop: asyncio.AbstractEventLoop) -> None:
        """Give ``loop`` a worker thread after ``handoff_after`` unless the store closes first."""
        called_off = self._handoff = threading.Event()

        def due() -> None:  # on the timer thread: the waiting is for a worker to do
            if called_off.is_set():
                return
            worker = _take_worker()

            def hand_over() -> None:  # waits for an inline call in progress
                stopped = self._hand_over(worker, called_off)
                if stopped is None:
                    _give_back(worker)
                else:
                    _run_forever(loop, stopped)

            worker.submit(hand_over)

        _timer.after(self._handoff_after, due)

    def _hand_over(self, worker: _Worker, called_off: threading.Event) -> threading.Event | None:
        """Make ``worker`` the loop's thread; the event it sets once the loop stopped."""
        with self._running, self._lock:  # an inline call in progress finishes first
            if called_off.is_set() or self._closed or not self._inline:
                return None
            stopped = threading.Event()
            self._inline, self._handoff = False, None
            self._thread, self._worker, self._stopped = worker.thread, worker, stopped
            return stopped

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The portal's loop, running on its thread (started, or handed over, on first use)."""
        return self._threaded()

    def running_loop(self) -> asyncio.AbstractEventLoop | None:
        """The portal's loop if it has been started, on a thread unless this thread runs it."""
        if self._loop is None or self._runner == threading.get_ident():
            return self._loop
        return self._threaded()

    def in_loop_thread(self) -> bool:
        """Whether the caller runs on the portal's loop (its thread, or an inline call)."""
        return self._runner == threading.get_ident() or threading.current_thread() is self._thread

    # -- calls -----------------------------------------------------------------------

    def call_once(self, coro: Coroutine[Any, Any, T]) -> T:
        """:meth:`call`, or, if the portal never started, ``coro`` on a short-lived loop.

        For closing a store that ran nothing on its loop: no thread is started
        just to stop it again.
        """
        if self._loop is not None or (self._inline and not self._closed) or self.was_forked:
            return self.call(coro)
        return _run_once(coro)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the portal's loop and wait for its result.

        Once an inline portal closed, a late call (reading a run's view after
        its store closed) runs on a loop of its own, closed again at once.
        """
        if self.was_forked:
            coro.close()
            raise forked_error("store")
        if self._inline:
            if self._runner == threading.get_ident():
                coro.close()
                raise RuntimeError(_OWN_LOOP)
            if not _loop_in_this_thread():  # else: not inline from inside another loop
                with self._running:
                    if self._closed:
                        return _run_once(coro)
                    if self._inline:
                        return self._run_inline(coro)
        loop = self._threaded()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(_OWN_LOOP)
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            # Interrupted while waiting (Ctrl-C): stop the work on the loop too,
            # and wait for it to settle so nothing runs on behind the caller.
            if future.cancel():
                concurrent.futures.wait([future], timeout=5)
            raise

    def _run_inline(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop in this thread (``_running`` held)."""
        with self._lock:
            loop = self._loop = self._loop or asyncio.new_event_loop()
        self._runner = threading.get_ident()
        task = loop.create_task(coro)
        try:
            return loop.run_until_complete(task)
        except BaseException:
            if not task.done():  # interrupted mid-call (Ctrl-C): stop it too
                task.cancel()
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(task)
            raise
        finally:
            self._runner = None
            if self._handoff is None and asyncio.all_tasks(loop):
                self._schedule_handoff(loop)

    def iterate(self, agen: AsyncIterator[T], *, long: bool = False) -> Iterator[T]:
        """Iterate an async iterator from sync code, one portal call per item.

        ``long``: it may wait a long time (``follow``), so the loop gets its thread
        and the calls of other threads are not held up behind it.
        """
        if long and not self.was_forked:
            self._threaded()
        try:
            while True:
                try:
                    yield self.call(agen.__anext__())  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            loop = self._loop
            if aclose is not None and loop is not None and (self._inline or loop.is_running()):
                try:
                    self.call(aclose())
                except RuntimeError:
                    pass  # still running a cancelled step; the loop finishes it

    def close(self) -> None:
        with self._running, self._lock:
            self._closed = True
            if self._handoff is not None:
                self._handoff.set()
            loop, worker, stopped = self._loop, self._worker, self._stopped
            inline = self._inline
            self._loop = self._thread = self._worker = self._stopped = self._handoff = None
            if inline and loop is not None:
                try:
                    loop.run_until_complete(_settle())
                finally:
                    loop.close()
                return
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
