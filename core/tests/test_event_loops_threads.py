"""Any event loop, any thread: an AsyncStore across loops, a sync Store from 8 threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import runstore
import runstore.aio


def _in_thread(call: Callable[[], object]) -> object:
    """Run ``call`` in a new thread (a loop per thread) and return what it returned."""
    out: list[object] = []
    worker = threading.Thread(target=lambda: out.append(call()))
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the thread hung"
    return out[0]


def test_an_async_store_serves_one_asyncio_run_after_another_and_a_loop_per_thread(
    url: str,
) -> None:
    store = runstore.aio.open(url)

    async def create() -> runstore.aio.AsyncRun:
        run = await store.create_run(run_id="run_a")
        await run.append("events", {"n": 1})
        return run

    run = asyncio.run(create())

    async def go_on() -> None:  # a second loop, same run
        await run.append("events", {"n": 2})
        await run.set_phase("p", status="done")
        await run.finish()

    asyncio.run(go_on())

    async def other() -> int:  # a loop in another thread
        second = await store.create_run(run_id="run_b")
        await second.append("events", {"n": 1})
        await second.finish()
        return len(await store.list_runs())

    assert _in_thread(lambda: asyncio.run(other())) == 2

    async def read_and_close() -> list[int]:
        view = await store.get_run("run_a")
        numbers = [r["n"] async for r in view.read("events")]
        await store.aclose()
        return numbers

    assert asyncio.run(read_and_close()) == [1, 2]


def test_eight_threads_append_to_one_run_and_to_their_own_runs(url: str) -> None:
    threads, each = 8, 200
    with runstore.open(url) as store:
        shared = store.create_run(run_id="run_shared")
        errors: list[BaseException] = []

        def work(number: int) -> None:
            try:
                own = store.create_run(run_id=f"run_t{number}")
                for n in range(each):
                    shared.append("events", {"thread": number, "n": n})
                    own.append("events", {"n": n})
                    if n % 50 == 0:
                        shared.log("info", "progress", thread=number, n=n)
                own.set_state({"done": each})
                own.finish()
            except BaseException as exc:  # reported below, with the thread's traceback
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=300)
        assert not any(w.is_alive() for w in workers), "a thread hung"
        assert errors == []
        summary = shared.finish()
        assert summary.stream_counts == {"events": threads * each, "logs": threads * 4}
        records = list(store.get_run("run_shared").read("events"))
        for number in range(threads):  # each thread's records, in its order, none lost
            assert [r["n"] for r in records if r["thread"] == number] == list(range(each))
        for number in range(threads):
            view = store.get_run(f"run_t{number}")
            assert view.state.status == "succeeded" and view.state.data == {"done": each}
            assert [r["n"] for r in view.read("events")] == list(range(each))
