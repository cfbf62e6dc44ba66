"""The async API: ``runstore.aio.open``, ``async with run:``, concurrent producers, following."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import runstore
from runstore.aio import AsyncRun, AsyncStore

_names = itertools.count()

Scenario = Callable[[AsyncStore], Awaitable[None]]


def _in_store(scenario: Scenario, **options: Any) -> None:
    """Run ``scenario`` against a fresh memory store on a fresh event loop."""

    async def main() -> None:
        url = f"memory://aio-{os.getpid()}-{next(_names)}"
        async with runstore.aio.open(url, **options) as store:
            await scenario(store)

    asyncio.run(main())


# -- lifecycle ------------------------------------------------------------------------


def test_clean_async_with_marks_succeeded() -> None:
    async def scenario(store: AsyncStore) -> None:
        run = await store.create_run(run_id="run_ok")
        async with run:
            await run.append("instances", {"instance_id": "i1", "status": "passed"})
            assert run.state.status == "running"
        view = await store.get_run("run_ok")
        assert view.state.status == "succeeded"
        assert view.state.error is None
        assert view.summary is not None
        assert view.summary.pass_count == 1

    _in_store(scenario)


def test_exception_in_async_with_marks_failed_and_propagates() -> None:
    async def scenario(store: AsyncStore) -> None:
        run = await store.create_run(run_id="run_bad")
        with pytest.raises(KeyError):
            async with run:
                raise KeyError("missing")
        view = await store.get_run("run_bad")
        assert view.state.status == "failed"
        assert view.state.error == "KeyError: 'missing'"
        assert view.summary is not None
        assert view.summary.status == "failed"

    _in_store(scenario)


def test_cancelled_task_marks_the_run_cancelled() -> None:
    async def scenario(store: AsyncStore) -> None:
        run = await store.create_run(run_id="run_cancel")
        entered = asyncio.Event()

        async def work() -> None:
            async with run:
                await run.append("steps", {"n": 1})
                entered.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(work())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        view = await store.get_run("run_cancel")
        assert view.state.status == "cancelled"
        assert view.state.error == "CancelledError"
        assert [r async for r in view.read("steps")] == [{"n": 1}]

    _in_store(scenario)


def test_finish_is_idempotent() -> None:
    async def scenario(store: AsyncStore) -> None:
        run = await store.create_run(run_id="run_twice")
        first = await run.finish()
        revision = (await store.get_run("run_twice")).state.revision
        assert await run.finish("failed", error="late") == first
        view = await store.get_run("run_twice")
        assert (view.state.status, view.state.revision) == ("succeeded", revision)

    _in_store(scenario)


def test_heartbeat_refreshes_a_live_run_and_stops_at_finish() -> None:
    async def scenario(store: AsyncStore) -> None:
        run = await store.create_run(run_id="run_beat")
        await run.start()
        started = run.state
        await asyncio.sleep(0.1)
        beating = (await store.get_run("run_beat")).state
        assert beating.revision > started.revision
        assert beating.heartbeat_at is not None
        assert started.heartbeat_at is not None
        assert beating.heartbeat_at > started.heartbeat_at
        await run.finish()
        final = (await store.get_run("run_beat")).state
        await asyncio.sleep(0.05)
        assert (await store.get_run("run_beat")).state == final

    _in_store(scenario, heartbeat_interval=0.01)


# -- concurrency ----------------------------------------------------------------------


def test_concurrent_producers_lose_nothing_and_keep_their_order() -> None:
    producers, per_producer = 64, 100

    async def produce(run: AsyncRun, producer: int) -> None:
        for n in range(per_producer):
            await run.append("steps", {"producer": producer, "n": n})
            if n % 7 == 0:
                await asyncio.sleep(0)  # interleave with the other producers

    async def scenario(store: AsyncStore) -> None:
        run = await store.create_run(run_id="run_many")
        async with run:
            await asyncio.gather(*(produce(run, p) for p in range(producers)))
        view = await store.get_run("run_many")
        records = [r async for r in view.read("steps")]
        assert len(records) == producers * per_producer
        for producer in range(producers):
            mine = [r["n"] for r in records if r["producer"] == producer]
            assert mine == list(range(per_producer))
        assert {r["producer"] for r in records[:producers]} != {0}  # they did interleave
        assert view.summary is not None
        assert view.summary.stream_counts == {"steps": producers * per_producer}

    _in_store(scenario)


def test_concurrent_runs_get_distinct_generated_ids() -> None:
    async def scenario(store: AsyncStore) -> None:
        runs = await asyncio.gather(*(store.create_run() for _ in range(20)))
        assert len({run.run_id for run in runs}) == 20
        assert len(await store.list_runs()) == 20

    _in_store(scenario)


# -- following a live run -----------------------------------------------------------------


def test_follow_sees_records_appended_while_live_and_stops_when_finished() -> None:
    async def scenario(store: AsyncStore) -> None:
        run = await store.create_run(run_id="run_follow")
        await run.start()
        view = await store.get_run("run_follow")
        seen: list[Any] = []
        first_seen = asyncio.Event()

        async def follow() -> None:
            async for record in view.read("steps", follow=True, poll_interval=0.005):
                seen.append(record)
                first_seen.set()

        follower = asyncio.create_task(follow())
        await run.append("steps", {"n": 0})
        await asyncio.wait_for(first_seen.wait(), timeout=5)
        assert not follower.done()
        for n in range(1, 5):
            await run.append("steps", {"n": n})
            await asyncio.sleep(0.01)
        await run.finish()
        await asyncio.wait_for(follower, timeout=5)
        assert [r["n"] for r in seen] == [0, 1, 2, 3, 4]

    _in_store(scenario)


def test_follow_on_a_finished_run_reads_everything_and_returns() -> None:
    async def scenario(store: AsyncStore) -> None:
        async with await store.create_run(run_id="run_done") as run:
            await run.append("steps", {"n": 1})
        view = await store.get_run("run_done")
        records = [r async for r in view.read("steps", follow=True, poll_interval=60)]
        assert records == [{"n": 1}]

    _in_store(scenario)


# -- the same run through both APIs ---------------------------------------------------------


def test_async_and_sync_stores_on_one_memory_name_see_the_same_runs() -> None:
    url = f"memory://aio-shared-{os.getpid()}-{next(_names)}"

    async def write() -> None:
        async with runstore.aio.open(url) as store:
            async with await store.create_run(run_id="run_x", scenario_ids=[]) as run:
                await run.put_artifact("a.txt", b"hello")
            with runstore.open(url) as sync_store:
                view = sync_store.get_run("run_x")
                assert view.read_artifact("a.txt") == b"hello"
                assert view.manifest.scenario_ids == []

    asyncio.run(write())
