"""runstore.spi.BufferedStreamWriter against a tiny in-memory segment store.

The fsspec and postgres backends cover it end to end; these pin what their
servers make hard to reach: a failing or conflicting commit, the window's
retry, the hard limit, close and discard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from runstore.model.errors import ConflictError, RunstoreError, StorageIOError, UnsupportedError
from runstore.spi import BatchPolicy, BufferedStreamWriter
from runstore.spi.backends import Durability

WINDOW = BatchPolicy(interval=3600)  # a window that never closes within a test


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
        self, durability: Durability = "batch", policy: BatchPolicy = WINDOW, start: int = 0
    ) -> BufferedStreamWriter:
        loop = asyncio.get_running_loop()
        return BufferedStreamWriter(
            self, start=start, durability=durability, policy=policy, loop=loop, release=self.release
        )


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


def conflict() -> ConflictError:
    return ConflictError("another writer owns the stream")


def test_record_durability_stores_each_commit_as_one_segment_from_the_stream_size() -> None:
    async def scenario() -> None:
        segments = Segments()
        writer = segments.writer("record", start=10)
        assert writer.write(b"a\n") is False
        assert writer.write(b"b\n") is False
        await writer.commit()
        writer.write(b"c\n")
        await writer.commit()
        assert segments.stored == [(10, b"a\nb\n"), (14, b"c\n")]

    run(scenario)


def test_batch_acknowledges_until_the_record_or_byte_limit_is_reached() -> None:
    async def scenario() -> None:
        by_records = Segments().writer(policy=BatchPolicy(records=3, interval=3600))
        assert [by_records.write(b"x\n") for _ in range(3)] == [True, True, False]
        by_bytes = Segments().writer(policy=BatchPolicy(bytes=4, interval=3600))
        assert [by_bytes.write(b"x\n") for _ in range(2)] == [True, False]

    run(scenario)


def test_the_window_commits_what_another_thread_appended() -> None:
    async def scenario() -> None:
        segments = Segments()
        writer = segments.writer(policy=BatchPolicy(interval=0.01))
        assert await asyncio.to_thread(writer.write, b"a\n") is True
        await segments.landed.wait()
        assert segments.stored == [(0, b"a\n")]
        await writer.close()

    run(scenario)


def test_a_failed_commit_keeps_the_lines_and_later_appends_commit_inline() -> None:
    async def scenario() -> None:
        segments = Segments(StorageIOError("store unreachable"))
        writer = segments.writer()
        assert writer.write(b"a\n") is True
        with pytest.raises(StorageIOError):
            await writer.commit()
        assert writer.pending == 2
        assert writer.write(b"b\n") is False  # the caller commits, and sees a failure
        await writer.commit()
        assert segments.stored == [(0, b"a\nb\n")]

    run(scenario)


def test_while_commits_fail_write_refuses_past_twice_a_batch() -> None:
    async def scenario() -> None:
        failure = StorageIOError("store unreachable")
        writer = Segments(failure).writer("record", policy=BatchPolicy(bytes=1, interval=1))
        writer.write(b"x" * (2 << 20) + b"\n")
        with pytest.raises(StorageIOError):
            await writer.commit()
        with pytest.raises(StorageIOError) as refused:
            writer.write(b"y\n")
        assert refused.value is not failure  # a fresh copy each time
        assert writer.pending == (2 << 20) + 1

    run(scenario)


def test_a_background_commit_that_fails_is_retried_after_another_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        segments = Segments(StorageIOError("store unreachable"))
        writer = segments.writer(policy=BatchPolicy(interval=0.01))
        writer.write(b"a\n")
        await segments.landed.wait()
        assert segments.stored == [(0, b"a\n")]
        await writer.close()

    with caplog.at_level(logging.WARNING, logger="runstore"):
        run(scenario)
    assert "will retry: store unreachable" in caplog.text


def test_a_conflict_drops_the_lines_and_every_later_write_and_commit_raises_it() -> None:
    async def scenario() -> None:
        segments = Segments(conflict())
        writer = segments.writer()
        writer.write(b"a\n")
        with pytest.raises(ConflictError):
            await writer.commit()
        assert writer.pending == 0
        with pytest.raises(ConflictError):
            writer.write(b"b\n")
        with pytest.raises(ConflictError):
            await writer.commit()
        await writer.close()  # nothing to store: closes without raising
        assert segments.released and segments.stored == []

    run(scenario)


def test_with_conflict_fails_every_commit_off_a_later_commit_stores_nothing_and_passes() -> None:
    class Lenient(BufferedStreamWriter):
        conflict_fails_every_commit = False

    async def scenario() -> None:
        segments = Segments(conflict())
        writer = Lenient(
            segments, start=0, durability="record", policy=WINDOW, loop=asyncio.get_running_loop()
        )
        writer.write(b"a\n")
        with pytest.raises(ConflictError):
            await writer.commit()
        await writer.commit()
        with pytest.raises(ConflictError):
            writer.write(b"b\n")
        assert segments.stored == []

    run(scenario)


def test_appenders_sharing_a_commit_that_conflicts_all_see_the_conflict() -> None:
    async def scenario() -> None:
        writer = Segments(conflict()).writer("record")
        writer.write(b"a\n")
        writer.write(b"b\n")  # a second appender, whose line goes with the first commit
        outcomes = await asyncio.gather(writer.commit(), writer.commit(), return_exceptions=True)
        assert [type(o) for o in outcomes] == [ConflictError, ConflictError]

    run(scenario)


def test_a_conflict_in_the_window_is_reported_once_and_by_the_next_flush(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        segments = Segments(conflict())
        writer = segments.writer(policy=BatchPolicy(interval=0.01))
        writer.write(b"a\n")
        await segments.attempted.wait()  # the window's commit meets the conflict
        with pytest.raises(ConflictError):
            await writer.commit()
        await writer.close()

    with caplog.at_level(logging.WARNING, logger="runstore"):
        run(scenario)
    assert "buffered records dropped" in caplog.text
    assert "will retry" not in caplog.text


def test_close_releases_and_closes_even_when_its_commit_fails() -> None:
    async def scenario() -> None:
        segments = Segments(StorageIOError("store unreachable"))
        writer = segments.writer()
        writer.write(b"a\n")
        with pytest.raises(StorageIOError):
            await writer.close()
        assert segments.released
        with pytest.raises(UnsupportedError, match="closed"):
            writer.write(b"b\n")
        await writer.commit()  # what the backend does on aclose: the lines were kept
        assert segments.stored == [(0, b"a\n")]

    run(scenario)


def test_discard_drops_what_is_buffered_and_releases() -> None:
    async def scenario() -> None:
        segments = Segments()
        writer = segments.writer()
        writer.write(b"a\n")
        await writer.discard()
        assert segments.stored == [] and segments.released

    run(scenario)
