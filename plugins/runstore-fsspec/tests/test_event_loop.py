"""An AsyncStore on S3 used from another event loop: a clear invalid_input, never a hang."""

from __future__ import annotations

import asyncio
import threading

import pytest

import runstore.aio
from runstore.model.errors import InvalidInputError
from runstore_fsspec.testing import S3Server

pytestmark = pytest.mark.s3


def test_another_loop_gets_a_clear_error_and_the_first_loop_goes_on(s3: S3Server) -> None:
    store = runstore.aio.open(s3.url("loops"))
    outcome: list[BaseException] = []

    async def elsewhere() -> None:
        try:
            await store.list_runs()
        except BaseException as exc:  # reported to the test below
            outcome.append(exc)

    async def main() -> list[int]:
        run = await store.create_run(run_id="run_l")
        await run.append("events", {"n": 1})
        worker = threading.Thread(target=lambda: asyncio.run(elsewhere()))
        worker.start()
        await asyncio.to_thread(worker.join, 120)
        await run.append("events", {"n": 2})
        await run.finish()
        view = await store.get_run("run_l")
        numbers = [r["n"] async for r in view.read("events")]
        await store.aclose()
        return numbers

    assert asyncio.run(main()) == [1, 2]
    (error,) = outcome
    assert isinstance(error, InvalidInputError)
    assert "another event loop" in error.message and "runstore.open()" in error.message


def test_a_second_asyncio_run_is_refused_before_any_request(s3: S3Server) -> None:
    store = runstore.aio.open(s3.url("loops"))

    async def create() -> runstore.aio.AsyncRun:
        return await store.create_run(run_id="run_l")

    run = asyncio.run(create())

    async def append() -> None:
        await run.append("events", {"n": 1})

    with pytest.raises(InvalidInputError, match="another event loop"):
        asyncio.run(append())

    async def close() -> None:
        await store.aclose()

    asyncio.run(close())  # the first loop has ended: closing from another is allowed


def test_closing_a_closed_store_again_from_another_loop_does_nothing(s3: S3Server) -> None:
    store = runstore.aio.open(s3.url("loops"))

    async def use_and_close() -> None:
        await store.list_runs()
        await store.aclose()

    asyncio.run(use_and_close())

    async def close_again() -> None:
        await store.aclose()

    worker = threading.Thread(target=lambda: asyncio.run(close_again()))
    worker.start()
    worker.join(120)
    asyncio.run(close_again())  # idempotent, from any loop
