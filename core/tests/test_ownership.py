"""One owner per live run: resume refuses a live writer, a taken-over writer gets conflicts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import runstore
from runstore.model.errors import ConflictError
from runstore.model.run import RunState
from runstore.ops.maintenance import recover_runs

T0 = datetime(2024, 1, 15, 12, tzinfo=UTC)


@pytest.fixture
def store(url: str) -> Iterator[runstore.Store]:
    with runstore.open(url) as opened:
        yield opened


def test_resuming_a_run_whose_writer_is_alive_is_a_conflict_naming_the_owner(
    store: runstore.Store,
) -> None:
    first = store.create_run(run_id="run_o")
    first.append("events", {"n": 1})
    with pytest.raises(ConflictError) as caught:
        store.resume_run("run_o")
    owner = store.get_run("run_o").state.owner
    assert owner is not None and owner.split(":")[1] == str(os.getpid())
    assert owner in caught.value.message and "force=True" in caught.value.message
    assert caught.value.details["owner"] == owner and "heartbeat_at" in caught.value.details
    first.append("events", {"n": 2})  # the refused resume changed nothing
    first.finish()
    assert [r["n"] for r in store.get_run("run_o").read("events")] == [1, 2]


def test_a_writer_taken_over_with_force_gets_conflicts_and_cannot_finish(
    store: runstore.Store,
) -> None:
    first = store.create_run(run_id="run_o")
    first.append("events", {"n": 1})
    second = store.resume_run("run_o", force=True)
    assert store.get_run("run_o").state.owner not in (None, first.aio.core.owner)
    with pytest.raises(ConflictError):
        first.set_phase("p", status="running")
    with pytest.raises(ConflictError):
        first.finish()
    second.append("events", {"n": 2})
    summary = second.finish()
    assert summary.status == "succeeded" and summary.stream_counts == {"events": 2}
    assert store.get_run("run_o").state.owner is None  # a finished run has no owner


def test_closing_the_store_without_finishing_releases_the_run_for_the_next_caller(
    url: str,
) -> None:
    """The stateless pattern: open, create or resume, write, close, on every call."""
    with runstore.open(url) as store:
        store.create_run(run_id="run_o").append("events", {"n": 0})
    for n in range(1, 4):
        with runstore.open(url) as store:
            assert store.get_run("run_o").state.owner is None
            store.resume_run("run_o").append("events", {"n": n})
    with runstore.open(url) as store:
        summary = store.resume_run("run_o").finish()
    assert summary.stream_counts == {"events": 4}


def test_release_gives_the_run_up_without_finishing_it(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_o")
    run.append("events", {"n": 1})
    run.release()
    state = store.get_run("run_o").state
    assert state.status == "running" and state.owner is None
    with pytest.raises(ConflictError):
        run.append("events", {"n": 2})  # released: nothing more through this writer
    store.resume_run("run_o").finish()


def test_a_stale_heartbeat_lets_resume_take_the_run_over(store: runstore.Store) -> None:
    store.create_run(run_id="run_o").append("events", {"n": 1})
    with pytest.raises(ConflictError):
        store.resume_run("run_o", stale_after=timedelta(hours=1))
    # Its heartbeat is older than zero seconds: taken for dead.
    store.resume_run("run_o", stale_after=timedelta(0)).finish()


def test_the_heartbeat_tells_a_taken_over_writer_to_stop_appending(url: str) -> None:
    with runstore.open(url, heartbeat_interval=0.05) as store:
        first = store.create_run(run_id="run_o")
        first.append("events", {"n": 1})
        store.resume_run("run_o", force=True)
        deadline = time.monotonic() + 60  # a loaded machine: the beat comes eventually
        with pytest.raises(ConflictError, match="taken over"):  # noqa: PT012
            while time.monotonic() < deadline:
                first.append("events", {"n": 2})
                time.sleep(0.01)
    with runstore.open(url) as store:
        # Nothing acknowledged was lost: every append before the conflict is stored.
        assert [r["n"] for r in store.get_run("run_o").read("events")][:1] == [1]


@pytest.mark.parametrize(
    ("beat", "stale"),
    [
        (T0, False),  # just now
        (T0 - timedelta(seconds=89), False),
        (T0 - timedelta(seconds=90), True),  # the reader's clock stepped forward, or it died
        (T0 + timedelta(seconds=60), False),  # a little in the future: clocks differ
        (T0 + timedelta(seconds=91), True),  # far in the future: a clock stepped back
    ],
)
def test_a_heartbeat_in_the_past_or_far_in_the_future_is_stale(beat: datetime, stale: bool) -> None:
    state = RunState(run_id="r", created_at=T0, updated_at=T0, heartbeat_at=beat)
    assert state.heartbeat_stale(T0, timedelta(seconds=90)) is stale


def test_runs_written_before_ownership_have_no_owner_and_resume(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_o")
    run.append("events", {"n": 1})
    run.release()
    assert store.get_run("run_o").state.model_dump()["owner"] is None
    assert (
        RunState.model_validate_json(
            '{"run_id": "r", "created_at": "2024-01-15T12:00:00Z",'
            ' "updated_at": "2024-01-15T12:00:00Z"}'
        ).owner
        is None
    )


def test_recover_leaves_a_run_alone_when_stale_after_is_under_two_heartbeats(
    url: str,
) -> None:
    with runstore.open(url, heartbeat_interval=60) as store:
        run = store.create_run(run_id="run_o")
        run.set_phase("p", status="running")  # holds no stream open: only the heartbeat tells
        later = datetime.now(UTC) + timedelta(seconds=61)  # past one beat, not two
        (result,) = store.portal.call(
            recover_runs(store.aio, stale_after=timedelta(seconds=61), now=later)
        )
        assert result.action == "skipped" and "twice" in result.reason
        run.append("events", {"n": 2})
        assert run.finish().stream_counts == {"events": 1}  # the writer was alive, and wins


def test_a_writer_coming_back_after_recover_marked_its_run_crashed_gets_a_conflict(
    url: str,
) -> None:
    """What ``recover --help`` promises: recover acts only on a stale heartbeat, and a
    writer that comes back after that finds its run crashed, never a silent success."""
    with runstore.open(url, heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_o")
        run.set_phase("p", status="running")  # holds no stream open (a local one would say alive)
        later = datetime.now(UTC) + timedelta(hours=1)
        (result,) = store.portal.call(
            recover_runs(store.aio, stale_after=timedelta(minutes=5), now=later)
        )
        assert result.action == "marked_crashed"
        with pytest.raises(ConflictError):
            run.set_phase("p", status="running")
        with pytest.raises(ConflictError):
            run.finish()
        state = store.get_run("run_o").state
        assert state.status == "crashed" and state.owner is None


def test_a_run_whose_writer_process_is_gone_resumes_at_once(tmp_path: Path) -> None:
    """Its token names this host and a pid that no longer exists: no need to wait."""
    root = str(tmp_path / "runs")
    code = (
        "import os, sys, runstore\n"
        "store = runstore.open(sys.argv[1])\n"
        "store.create_run(run_id='run_k').append('events', {'n': 1})\n"
        "os._exit(0)  # dies holding the run: no release is stored\n"
    )
    subprocess.run([sys.executable, "-c", code, root], check=True, timeout=120)
    with runstore.open(root) as store:
        state = store.get_run("run_k").state
        assert state.owner is not None and not state.heartbeat_stale(
            datetime.now(UTC), timedelta(hours=1)
        )
        summary = store.resume_run("run_k").finish()  # no force, no stale_after
    assert summary.stream_counts == {"events": 1}
