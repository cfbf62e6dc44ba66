"""Short-lived use: a store opened for every call stays cheap and correct.

What makes it cheap is checked here for what it must not break: the sync API
runs local and memory calls in the caller's thread and hands its loop to a
thread once something must run between calls; a resume counts plain streams
without parsing them (damage never stops it); taking a run over and letting
it go rewrite nothing of its index record.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import runstore
from runstore import InvalidInputError, RunState, hookimpl


class ThreadOfEvents:
    """Records the thread each state change is reported on."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    @hookimpl
    def runstore_state_changed(self, state: RunState) -> None:
        self.threads.append(threading.get_ident())


def test_calls_run_in_the_callers_thread_on_local_and_memory(url: str) -> None:
    seen = ThreadOfEvents()
    with runstore.open(url, plugins=[seen], heartbeat_interval=0) as store:
        run = store.create_run()
        run.set_state({"phase": "one"})
        run.finish()
    assert seen.threads
    assert set(seen.threads) == {threading.get_ident()}


def test_under_fsync_calls_go_to_the_loop_thread(tmp_path: Path) -> None:
    seen = ThreadOfEvents()
    store = runstore.open(str(tmp_path), plugins=[seen], durability="fsync", heartbeat_interval=0)
    with store:
        store.create_run().set_state({"phase": "one"})
    assert seen.threads
    assert threading.get_ident() not in seen.threads


def test_a_live_run_keeps_its_heartbeat_between_calls(url: str) -> None:
    """The heartbeat is a task on the store's loop: the loop gets a thread of its own."""
    with runstore.open(url, heartbeat_interval=0.02) as store:
        run = store.create_run()
        run.start()
        first = store.get_run(run.run_id).state.revision
        deadline = time.monotonic() + 60  # no call meanwhile: only the heartbeat writes
        while store.get_run(run.run_id).state.revision == first:
            assert time.monotonic() < deadline, "no heartbeat in 60 s"
            time.sleep(0.01)
        run.finish()


def test_the_sync_api_works_from_inside_another_event_loop(url: str) -> None:
    async def inside() -> str:
        with runstore.open(url, heartbeat_interval=0) as store:
            run = store.create_run()
            run.append("events", {"n": 1})
            run.finish()
            return store.get_run(run.run_id).state.status

    assert asyncio.run(inside()) == "succeeded"


class CallsBack:
    """An observer that calls the sync API of the store it observes (not allowed)."""

    def __init__(self) -> None:
        self.store: runstore.Store | None = None
        self.errors: list[BaseException] = []

    @hookimpl
    def runstore_state_changed(self, state: RunState) -> None:
        assert self.store is not None
        try:
            self.store.get_run(state.run_id)
        except RuntimeError as exc:
            self.errors.append(exc)


def test_calling_the_store_from_its_own_observer_is_refused_not_a_deadlock(url: str) -> None:
    observer = CallsBack()
    with runstore.open(url, plugins=[observer], heartbeat_interval=0) as store:
        observer.store = store
        store.create_run().set_state({"a": 1})
    assert observer.errors
    assert "its own event loop" in str(observer.errors[0])


def test_a_view_read_after_its_store_closed_still_reads() -> None:
    """A late call runs on a loop of its own, closed at once (no loop is leaked)."""
    with runstore.open(f"memory://late-{os.getpid()}", heartbeat_interval=0) as store:
        run = store.create_run()
        run.put_artifact("a.txt", b"a")
        run.finish()
        view = store.get_run(run.run_id)
    assert [ref.name for ref in view.artifacts()] == ["a.txt"]


def test_open_resume_append_close_per_call_keeps_every_record(url: str) -> None:
    with runstore.open(url) as store:
        run_id = store.create_run().run_id  # closing the store lets the run go
    for n in range(20):
        with runstore.open(url) as store:
            store.resume_run(run_id).append("logs", {"n": n})
    with runstore.open(url) as store:
        run = store.resume_run(run_id)
        summary = run.finish()
        records = list(store.get_run(run_id).read("logs"))
    assert [r["n"] for r in records] == list(range(20))
    assert summary.stream_counts["logs"] == 20


def _damage_line(root: Path, run_id: str, stream: str, line: int) -> None:
    path = root / run_id / f"{stream}.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[line] = b"{not json"
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize("stream", ["logs", "instances"])
def test_a_damaged_line_never_stops_a_resume_and_counts_as_written(
    tmp_path: Path, stream: str
) -> None:
    url = str(tmp_path)
    with runstore.open(url, heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_damaged")
        for n in range(3):
            run.append(stream, {"instance_id": f"i{n}", "status": "passed", "n": n})
    _damage_line(tmp_path, "run_damaged", stream, 1)
    with runstore.open(url, heartbeat_interval=0) as store:
        run = store.resume_run("run_damaged")
        run.append(stream, {"instance_id": "i3", "status": "passed", "n": 3})
        summary = run.finish()
        view = store.get_run("run_damaged")
        assert view.count_records(stream) == 4
        assert len(list(view.read(stream, errors="skip"))) == 3
    assert summary.stream_counts[stream] == 4
    if stream == "instances":  # the damaged one's outcome is unknown: not counted as passed
        assert summary.pass_count == 3


def test_count_records_leaves_a_torn_tail_out(tmp_path: Path) -> None:
    with runstore.open(str(tmp_path), heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_torn")
        run.append("logs", {"n": 0})
        run.append("logs", {"n": 1})
        run.release()
    with (tmp_path / "run_torn" / "logs.jsonl").open("ab") as handle:
        handle.write(b'{"n": 2, "cut sh')
    with runstore.open(str(tmp_path)) as store:
        view = store.get_run("run_torn")
        assert view.count_records("logs") == 2
        assert view.aio.torn_tails["logs"] == len(b'{"n": 2, "cut sh')


def _index_row(root: Path, run_id: str) -> tuple[Any, ...]:
    import sqlite3

    with sqlite3.connect(root / ".runstore" / "index.sqlite3") as db:
        row = db.execute("SELECT updated_us, record FROM runs WHERE run_id = ?", (run_id,))
        return tuple(row.fetchone())


def test_taking_a_run_over_and_letting_it_go_leave_its_record_alone(tmp_path: Path) -> None:
    url = str(tmp_path)
    with runstore.open(url) as store:
        run = store.create_run(run_id="run_owned")
        run.start()
    before = _index_row(tmp_path, "run_owned")
    with runstore.open(url) as store:
        state = store.get_run("run_owned").state
        resumed = store.resume_run("run_owned")
        claimed = store.get_run("run_owned").state
        assert claimed.owner is not None and claimed.owner != state.owner
        resumed.release()
        released = store.get_run("run_owned").state
    assert released.owner is None
    assert released.revision == state.revision + 2
    assert released.updated_at == state.updated_at
    assert _index_row(tmp_path, "run_owned") == before


def test_a_state_write_keeps_the_runs_labels_queryable(tmp_path: Path) -> None:
    with runstore.open(str(tmp_path), heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_l", tags=["nightly"], metadata={"model": "a"})
        run.set_state({"phase": "one"})  # the side tables stand
        run.set_metadata(model="b")  # they change
        run.set_state({"phase": "two"})
        assert [r.run_id for r in store.list_runs(where="metadata.model = 'b'")] == ["run_l"]
        assert store.list_runs(where="metadata.model = 'a'") == []
        assert [r.run_id for r in store.list_runs(tags=["nightly"])] == ["run_l"]
        run.finish(metrics={"score": 1.0})
        assert [r.run_id for r in store.list_runs(where="metrics.score = 1")] == ["run_l"]


class FirstState(BaseModel):
    phase: str
    done: int


def test_create_run_stores_the_callers_first_state_with_the_run(url: str) -> None:
    with runstore.open(url, heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_first", state={"phase": "start", "done": 0})
        typed = store.create_run(state=FirstState(phase="start", done=1))
        view = store.get_run("run_first")
        assert (view.state.revision, view.state.data) == (0, {"phase": "start", "done": 0})
        assert view.state_as(FirstState) == FirstState(phase="start", done=0)
        assert store.get_run(typed.run_id).state.data == {"phase": "start", "done": 1}
        run.update_state({"done": 1})
        assert store.get_run("run_first").state.data == {"phase": "start", "done": 1}


@pytest.mark.parametrize("bad", [["a list"], {"x": float("nan")}, {"x": object()}])
def test_a_first_state_that_is_not_a_json_object_writes_nothing(url: str, bad: Any) -> None:
    with runstore.open(url, heartbeat_interval=0) as store:
        with pytest.raises(InvalidInputError):
            store.create_run(run_id="run_bad", state=bad)
        assert store.list_runs() == []
