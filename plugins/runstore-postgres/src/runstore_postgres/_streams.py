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
The buffering is :class:`runstore.spi.BufferedStreamWriter`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from runstore.spi import buffered
from runstore.spi.backends import Durability

__all__ = ["BatchPolicy", "Commit", "PostgresStreamWriter"]


@dataclass(frozen=True)
class BatchPolicy(buffered.BatchPolicy):
    """:class:`runstore.spi.BatchPolicy` with a shorter window: a commit is one round trip."""

    interval: float = 0.2


Commit = Callable[[int, list[bytes]], Awaitable[None]]
"""``commit(expected_size, lines)``: store ``lines`` after byte ``expected_size``."""


class PostgresStreamWriter(buffered.BufferedStreamWriter):
    """Commits the buffered lines as rows; ``release`` frees the stream's lock on close."""

    log = logging.getLogger("runstore_postgres")

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
        async def store(start: int, data: bytes) -> None:
            await commit(start, data.splitlines(keepends=True))

        super().__init__(
            store, start=size, durability=durability, policy=policy, loop=loop, release=release
        )
