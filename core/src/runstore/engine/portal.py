"""A private event loop in a daemon thread: how the sync API runs async backends.

Only slow-path calls (create, open a stream, put an artifact, finish, read a
chunk) cross into it; the append hot path never does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

from runstore.engine.fork import forked_error, guard

T = TypeVar("T")


class Portal:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.was_forked = False
        """This is a child's copy of a parent's portal: its loop thread did not come along."""
        guard(self)

    def forked(self) -> None:
        self._loop = self._thread = None
        self._lock = threading.Lock()
        self.was_forked = True

    def _ensure(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="runstore-portal", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
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
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(_settle(), loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()


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
