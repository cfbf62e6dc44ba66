"""Live tails: one dedicated connection LISTENs for the store's commits and wakes followers.

Writers send ``NOTIFY`` from the transaction that commits (``pg_notify`` in
the append statement and in a state write that ends a run), so a follower is
told only of what is already visible. The payload is ``run_id/stream`` for an
append and ``run_id`` for the end of a run (run ids and stream names hold no
``/``). The channel is ``runstore.<schema>``, cut to PostgreSQL's 63 bytes: two
schemas sharing that prefix only wake each other's followers for nothing.

A lost listening connection wakes every waiter (each one checks the database
and waits again), and the next wait opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

__all__ = ["Listener", "channel_of", "payload_of"]

_log = logging.getLogger("runstore_postgres")

_Conn = psycopg.AsyncConnection[TupleRow]


def channel_of(schema: str) -> str:
    """The NOTIFY channel of the store in ``schema``."""
    return f"runstore.{schema}"[:63]


def payload_of(run_id: str, stream: str | None = None) -> str:
    """What a writer sends: ``run_id/stream`` for an append, ``run_id`` when the run ends."""
    return run_id if stream is None else f"{run_id}/{stream}"


class Listener:
    """The listening connection of one backend and the followers waiting on it.

    :param connect: opens a new autocommit connection (errors are the caller's to translate).
    """

    def __init__(self, connect: Callable[[], Awaitable[_Conn]], channel: str) -> None:
        self._connect = connect
        self._channel = channel
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn: _Conn | None = None
        self._starting: asyncio.Lock | None = None
        self.connections = 0
        """Listening connections opened so far (one, unless one was lost)."""

    async def _ensure(self) -> None:
        if self._task is not None and not self._task.done():
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._task is not None and not self._task.done():
                return
            conn = await self._connect()
            try:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            except BaseException:
                await conn.close()
                raise
            self.connections += 1
            self._conn = conn
            self._task = asyncio.get_running_loop().create_task(self._pump(conn))

    async def _pump(self, conn: _Conn) -> None:
        try:
            async for note in conn.notifies():
                self._wake(note.payload)
        except psycopg.Error as exc:
            _log.info("runstore-postgres: the listening connection was lost: %s", exc)
        finally:
            for events in self._waiters.values():
                for event in events:
                    event.set()
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    def _wake(self, payload: str) -> None:
        run_id, _, stream = payload.partition("/")
        keys = [payload] if stream else [k for k in self._waiters if k.startswith(run_id + "/")]
        for key in keys:
            for event in self._waiters.get(key, ()):
                event.set()

    @asynccontextmanager
    async def registered(self, run_id: str, stream: str) -> AsyncIterator[asyncio.Event]:
        """An event set when ``stream`` of ``run_id`` gets records or the run ends.

        The connection is listening when this enters: check the database inside
        the block, then wait on the event.
        """
        await self._ensure()
        key = payload_of(run_id, stream)
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiters.get(key)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[key]

    async def aclose(self) -> None:
        """Stop listening and close the connection."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                await task
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
