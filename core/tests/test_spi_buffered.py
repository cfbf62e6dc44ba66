"""runstore.spi.BufferedStreamWriter on a tiny in-memory segment store: what the
fsspec and postgres tests cannot reach with their servers (failing and conflicting
commits in the window, the hard limit, appenders sharing a commit, close)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from runstore.model.errors import ConflictError, RunstoreError, StorageIOError, UnsupportedError
from runstore.spi import BatchPolicy, BufferedStreamWriter
from runstore.spi.backends import Durability

WINDOW = BatchPolicy(interval=3600)  # a window no test waits for


class Segments:
    """Stores segments in a list; raises the errors queued in ``failures`` first."""

    def __init__(self, *failures: RunstoreError) -> None:
        self.failures = list(failures)
        self.stored: list[tuple[int, bytes]] = []
        self.attempted, self.landed = asyncio.Event(), asyncio.Event()
        self.released = False

    async def __call__(self, start: int, data: bytes) -> None:
        self.attempted.set()
        if self.failures:
            raise self.failures.pop(0)
        self.stored.append((start, data))
        self.landed.set()

    async def release(self) -> None:
        self.released = True

    def writer(
        self, durability: Durability = "batch", policy: BatchPolicy = WINDOW
    ) -> BufferedStreamWriter:
        loop = asyncio.get_running_loop()
        return BufferedStreamWriter(
            self, start=0, durability=durability, policy=policy, loop=loop, release=self.release
        )


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_window_commit_that_fails_is_retried_after_another_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        segments = Segments(StorageIOError("store unreachable"))
        writer = segments.writer(policy=BatchPolicy(interval=0.01))
        assert await asyncio.to_thread(writer.write, b"a\n") is True  # from another thread
        await segments.landed.wait()
        assert segments.stored == [(0, b"a\n")]
        await writer.close()

    with caplog.at_level(logging.WARNING, logger="runstore"):
        run(scenario)
    assert "will retry: store unreachable" in caplog.text


def test_while_commits_fail_write_refuses_past_twice_a_batch() -> None:
    async def scenario() -> None:
        failure = StorageIOError("store unreachable")
        writer = Segments(failure).writer("record", BatchPolicy(bytes=1))
        writer.write(b"x" * (2 << 20) + b"\n")
        with pytest.raises(StorageIOError):
            await writer.commit()
        with pytest.raises(StorageIOError) as refused:
            writer.write(b"y\n")
        assert refused.value is not failure  # a fresh copy each time
        assert writer.pending == (2 << 20) + 1

    run(scenario)


def test_appenders_sharing_a_conflicting_commit_all_see_it_and_so_do_later_commits() -> None:
    async def scenario() -> None:
        writer = Segments(ConflictError("taken over")).writer("record")
        writer.write(b"a\n")
        writer.write(b"b\n")  # a second appender, whose line goes with the first commit
        outcomes = await asyncio.gather(writer.commit(), writer.commit(), return_exceptions=True)
        assert [type(o) for o in outcomes] == [ConflictError, ConflictError]
        with pytest.raises(ConflictError):
            await writer.commit()
        await writer.close()  # nothing to store: closes without raising

    run(scenario)


def test_a_conflict_in_the_window_is_not_retried_and_the_next_flush_raises_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        segments = Segments(ConflictError("taken over"))
        writer = segments.writer(policy=BatchPolicy(interval=0.01))
        writer.write(b"a\n")
        await segments.attempted.wait()
        with pytest.raises(ConflictError):
            await writer.commit()
        await writer.close()

    with caplog.at_level(logging.WARNING, logger="runstore"):
        run(scenario)
    assert "buffered records dropped: taken over" in caplog.text
    assert "will retry" not in caplog.text


def test_close_releases_and_closes_even_when_its_commit_fails_and_keeps_the_lines() -> None:
    async def scenario() -> None:
        segments = Segments(StorageIOError("store unreachable"))
        writer = segments.writer()
        writer.write(b"a\n")
        with pytest.raises(StorageIOError):
            await writer.close()
        assert segments.released
        with pytest.raises(UnsupportedError, match="closed"):
            writer.write(b"b\n")
        await writer.commit()  # what FsspecBackend.aclose does
        assert segments.stored == [(0, b"a\n")]

    run(scenario)
