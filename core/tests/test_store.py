"""The sync API's lifecycle and every error a user can cause through it."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import pytest

import runstore
from runstore.model.errors import (
    ConflictError,
    CorruptError,
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
)
from runstore.model.records import MAX_RECORD_BYTES
from runstore.spi.memory import MemoryBackend

_names = itertools.count()


@pytest.fixture
def url() -> str:
    return f"memory://store-{os.getpid()}-{next(_names)}"


@pytest.fixture
def store(url: str) -> Iterator[runstore.Store]:
    with runstore.open(url) as store:
        yield store


# -- lifecycle ---------------------------------------------------------------------------


def test_keyboard_interrupt_in_with_marks_cancelled_and_propagates(
    store: runstore.Store,
) -> None:
    run = store.create_run(run_id="run_ctrl_c")

    def interrupted() -> None:
        with run:
            run.append("steps", {"n": 1})
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    view = store.get_run("run_ctrl_c")
    assert view.state.status == "cancelled"
    assert view.state.error == "KeyboardInterrupt"
    assert list(view.read("steps")) == [{"n": 1}]


def test_finish_twice_returns_the_first_summary_and_changes_nothing(
    store: runstore.Store,
) -> None:
    run = store.create_run(run_id="run_twice")
    first = run.finish()
    state = store.get_run("run_twice").state
    assert run.finish("failed", error="again") == first
    assert store.get_run("run_twice").state == state
    assert run.summary == first


def test_finish_with_a_status_that_is_not_terminal_is_refused(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_status")
    with pytest.raises(InvalidInputError) as info:
        run.finish("running")
    assert info.value.code == "invalid_input"
    assert store.get_run("run_status").state.status == "created"


def test_first_append_marks_the_run_running(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_lazy")
    run.append("steps", {"n": 1})
    state = store.get_run("run_lazy").state
    assert state.status == "running"
    assert state.started_at is not None


def test_sync_follow_reads_a_run_written_by_another_thread_until_it_finishes(
    store: runstore.Store,
) -> None:
    run = store.create_run(run_id="run_tail")
    run.start()
    view = store.get_run("run_tail")

    def write() -> None:
        for n in range(5):
            run.append("steps", {"n": n})
            time.sleep(0.01)
        run.finish()

    writer = threading.Thread(target=write)
    writer.start()
    seen = [r["n"] for r in view.read("steps", follow=True, poll_interval=0.005)]
    writer.join()
    assert seen == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("given", "stored"), [(None, None), ([], []), (("a", "b"), ["a", "b"])], ids=repr
)
def test_scenario_ids_none_and_empty_survive_manifest_and_index(
    store: runstore.Store, given: Any, stored: list[str] | None
) -> None:
    with store.create_run(run_id="run_ids", scenario_ids=given):
        pass
    assert store.get_run("run_ids").manifest.scenario_ids == stored
    (record,) = store.list_runs()
    assert record.scenario_ids == stored


def test_summary_counts_instances_by_status(store: runstore.Store) -> None:
    with store.create_run(run_id="run_sum") as run:
        for status in ["passed", "passed", "failed", "skipped"]:
            run.append("instances", {"status": status})
        run.append("steps", {"n": 1})
        run.put_artifact("a.bin", b"1234")
    summary = run.summary
    assert summary is not None
    assert (summary.instance_count, summary.pass_count, summary.fail_count) == (4, 2, 1)
    assert summary.pass_rate == pytest.approx(2 / 3)
    assert summary.stream_counts == {"instances": 4, "steps": 1}
    assert (summary.artifact_count, summary.artifact_bytes) == (1, 4)
    assert summary.duration_ms is not None
    assert summary.duration_ms >= 0


def test_pass_rate_is_none_when_nothing_passed_or_failed(store: runstore.Store) -> None:
    with store.create_run() as run:
        run.append("instances", {"status": "skipped"})
    assert run.summary is not None
    assert run.summary.pass_rate is None


def test_pydantic_model_records_are_appended_as_json(store: runstore.Store) -> None:
    phase = runstore.PhaseProgress(status="done", completed=3, total=3)
    with store.create_run(run_id="run_model") as run:
        run.append("phases", phase)
    assert list(store.get_run("run_model").read("phases")) == [phase.model_dump()]


def test_appends_from_many_threads_are_all_stored_and_counted(store: runstore.Store) -> None:
    threads, per_thread = 8, 4000
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, as a loaded machine would
    try:
        with store.create_run(run_id="run_threads") as run:

            def produce(worker: int) -> None:
                for n in range(per_thread):
                    run.append("instances", {"worker": worker, "n": n, "status": "passed"})

            pool = [threading.Thread(target=produce, args=(w,)) for w in range(threads)]
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join()
    finally:
        sys.setswitchinterval(previous)
    records = list(store.get_run("run_threads").read("instances"))
    assert len(records) == threads * per_thread
    for worker in range(threads):
        assert [r["n"] for r in records if r["worker"] == worker] == list(range(per_thread))
    assert run.summary is not None
    assert run.summary.stream_counts == {"instances": threads * per_thread}
    assert run.summary.pass_count == threads * per_thread


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("report.json", "application/json"),
        ("steps.jsonl", "application/x-ndjson"),
        ("page.html", "text/html"),
        ("blob", "application/octet-stream"),
    ],
)
def test_artifact_media_type_is_guessed_from_its_name(
    store: runstore.Store, name: str, media_type: str
) -> None:
    with store.create_run() as run:
        assert run.put_artifact(name, b"x").media_type == media_type


def test_given_media_type_wins_over_the_guess(store: runstore.Store) -> None:
    with store.create_run() as run:
        ref = run.put_artifact("report.json", b"{}", media_type="application/vnd.x+json")
    assert ref.media_type == "application/vnd.x+json"


@pytest.mark.parametrize(
    "data", [bytearray(b"abc"), memoryview(b"abc")], ids=["bytearray", "memoryview"]
)
def test_artifact_data_may_be_any_bytes_like(store: runstore.Store, data: object) -> None:
    with store.create_run(run_id="run_bytes") as run:
        run.put_artifact("a.bin", data)
    assert store.get_run("run_bytes").read_artifact("a.bin") == b"abc"


def test_artifact_data_may_be_an_async_iterable_of_chunks(store: runstore.Store) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"ab", b"", b"cd"):
            yield part

    with store.create_run(run_id="run_chunks") as run:
        ref = run.put_artifact("a.bin", chunks())
    assert (ref.size, ref.sha256) == (4, hashlib.sha256(b"abcd").hexdigest())


# -- errors a user can cause ------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata",
    [{"scenario_ids": [1, 2]}, {"seed": "forty-two"}, {"config": ["not", "a", "dict"]}],
    ids=["scenario-ids-not-strings", "seed-not-int", "config-not-dict"],
)
def test_invalid_run_metadata_is_refused_before_writing(
    store: runstore.Store, metadata: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError) as info:
        store.create_run(run_id="run_meta", **metadata)
    assert info.value.code == "invalid_input"
    assert store.list_runs() == []


@pytest.mark.parametrize(
    "metadata",
    [{"scenario_ids": "checkout"}, {"tags": "nightly"}, {"scenario_ids": 5}, {"tags": b"x"}],
    ids=["scenario-ids-str", "tags-str", "scenario-ids-int", "tags-bytes"],
)
def test_a_lone_value_where_a_list_belongs_is_refused_not_split(
    store: runstore.Store, metadata: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError) as info:
        store.create_run(run_id="run_lone", **metadata)
    assert info.value.code == "invalid_input"
    assert "list of strings" in info.value.message
    assert store.list_runs() == []


def test_unknown_status_filter_is_invalid_input(store: runstore.Store) -> None:
    with pytest.raises(InvalidInputError) as info:
        store.list_runs(status="finished")  # type: ignore[arg-type]
    assert info.value.code == "invalid_input"
    assert "'finished'" in info.value.message
    assert "succeeded" in info.value.message


def test_one_tag_filter_may_be_a_plain_string(store: runstore.Store) -> None:
    store.create_run(run_id="run_nightly", tags=["nightly"])
    store.create_run(run_id="run_thing", tags=["t", "h", "i", "n", "g"])
    assert [r.run_id for r in store.list_runs(tags="nightly")] == ["run_nightly"]
    assert store.list_runs(tags="thing") == []


def test_get_run_with_an_invalid_id_is_invalid_input(store: runstore.Store) -> None:
    with pytest.raises(InvalidInputError) as info:
        store.get_run("../etc")
    assert info.value.code == "invalid_input"


@pytest.mark.parametrize("stream", ["../steps", "Steps", ""], ids=["traversal", "upper", "empty"])
def test_reading_an_invalid_stream_name_is_invalid_input(
    store: runstore.Store, stream: str
) -> None:
    store.create_run(run_id="run_read")
    with pytest.raises(InvalidInputError) as info:
        list(store.get_run("run_read").read(stream))
    assert info.value.code == "invalid_input"


def test_delete_of_an_unknown_run_is_not_found(store: runstore.Store) -> None:
    with pytest.raises(NotFoundError) as info:
        store.delete_run("run_missing")
    assert info.value.code == "not_found"


@pytest.mark.parametrize(("limit", "offset"), [(-1, 0), (None, -1)], ids=["limit", "offset"])
def test_negative_paging_is_invalid_input(
    store: runstore.Store, limit: int | None, offset: int
) -> None:
    with pytest.raises(InvalidInputError) as info:
        store.list_runs(limit=limit, offset=offset)
    assert info.value.code == "invalid_input"


def test_record_over_the_size_limit_is_refused(store: runstore.Store) -> None:
    with store.create_run(run_id="run_huge") as run:
        with pytest.raises(InvalidInputError) as info:
            run.append("steps", {"blob": "x" * MAX_RECORD_BYTES})
        assert info.value.code == "invalid_input"
        assert "put_artifact" in info.value.message
    assert list(store.get_run("run_huge").read("steps")) == []


@pytest.mark.parametrize(
    "data", ["text is not bytes", 42, None, [b"a", b"b"]], ids=["str", "int", "none", "list"]
)
def test_artifact_data_of_the_wrong_type_is_refused(store: runstore.Store, data: object) -> None:
    with store.create_run(run_id="run_data") as run:
        with pytest.raises(InvalidInputError) as info:
            run.put_artifact("a.bin", data)
        assert info.value.code == "invalid_input"
    assert store.get_run("run_data").artifacts() == []


def test_reserved_stream_stays_refused_after_runstore_has_written_it(
    store: runstore.Store,
) -> None:
    with store.create_run(run_id="run_reserved") as run:
        ref = run.put_artifact("a.txt", b"x")
        with pytest.raises(InvalidInputError) as info:
            run.append("artifacts", {"forged": True})
        assert info.value.code == "invalid_input"
    assert store.get_run("run_reserved").artifacts() == [ref]


def test_artifact_after_finish_is_a_conflict(store: runstore.Store) -> None:
    with store.create_run(run_id="run_late") as run:
        pass
    with pytest.raises(ConflictError) as info:
        run.put_artifact("late.txt", b"x")
    assert info.value.code == "conflict"


def test_durability_the_backend_cannot_honour_is_unsupported(url: str) -> None:
    with runstore.open(url, durability="fsync") as store:
        run = store.create_run(run_id="run_fsync")
        with pytest.raises(UnsupportedError) as info:
            run.append("steps", {"n": 1})
        assert info.value.code == "unsupported"
        assert "'fsync'" in info.value.message


def test_unknown_instance_is_not_found(store: runstore.Store) -> None:
    with store.create_run(run_id="run_inst") as run:
        run.append("instances", {"instance_id": "i1", "status": "passed"})
    with pytest.raises(NotFoundError) as info:
        store.get_run("run_inst").instance("i2")
    assert info.value.code == "not_found"


def test_unknown_artifact_reference_is_not_found(store: runstore.Store) -> None:
    with store.create_run(run_id="run_ref"):
        pass
    with pytest.raises(NotFoundError) as info:
        store.get_run("run_ref").artifact("missing.json")
    assert info.value.code == "not_found"


def test_reading_an_artifact_with_a_hostile_name_is_invalid_input(store: runstore.Store) -> None:
    with store.create_run(run_id="run_hostile"):
        pass
    with pytest.raises(InvalidInputError) as info:
        store.get_run("run_hostile").read_artifact("../run_hostile/manifest.json")
    assert info.value.code == "invalid_input"


def _backend(url: str) -> MemoryBackend:
    return MemoryBackend(url.removeprefix("memory://"))


def test_stream_line_that_is_not_json_is_corrupt_with_its_line_number(
    store: runstore.Store, url: str
) -> None:
    with store.create_run(run_id="run_corrupt") as run:
        run.append("steps", {"n": 1})

    async def damage() -> None:
        writer = await _backend(url).open_writer("run_corrupt", "steps")
        writer.write(b"{not json\n")

    asyncio.run(damage())
    with pytest.raises(CorruptError) as info:
        list(store.get_run("run_corrupt").read("steps"))
    assert info.value.code == "corrupt"
    assert info.value.details["line"] == 2
    assert "runstore verify" in info.value.message


def test_artifact_metadata_line_that_is_not_a_reference_is_corrupt(
    store: runstore.Store, url: str
) -> None:
    with store.create_run(run_id="run_badref") as run:
        run.put_artifact("a.txt", b"x")

    async def damage() -> None:
        writer = await _backend(url).open_writer("run_badref", "artifacts")
        writer.write(b'{"name": "b.txt"}\n')

    asyncio.run(damage())
    with pytest.raises(CorruptError) as info:
        store.get_run("run_badref").artifacts()
    assert info.value.code == "corrupt"
    assert info.value.details["line"] == 2


def test_torn_last_line_is_hidden_and_reported(store: runstore.Store, url: str) -> None:
    run = store.create_run(run_id="run_torn")
    run.append("steps", {"n": 1})

    async def tear() -> None:
        writer = await _backend(url).open_writer("run_torn", "steps")
        writer.write(b'{"n": 2')

    asyncio.run(tear())
    view = store.get_run("run_torn")
    assert list(view.read("steps")) == [{"n": 1}]
    assert view.torn_tails == {"steps": 7}


def test_artifact_modified_after_storing_fails_verification(
    store: runstore.Store, url: str
) -> None:
    with store.create_run(run_id="run_tamper") as run:
        run.put_artifact("a.txt", b"original")
    _backend(url)._data.artifacts[("run_tamper", "a.txt")] = b"tampered"
    view = store.get_run("run_tamper")
    assert view.read_artifact("a.txt") == b"tampered"
    with pytest.raises(CorruptError) as info:
        view.read_artifact("a.txt", verify=True)
    assert info.value.code == "corrupt"
    assert info.value.details["name"] == "a.txt"


def test_sync_api_called_from_an_observer_on_its_own_loop_is_a_clear_error(url: str) -> None:
    class Reentrant:
        def __init__(self) -> None:
            self.errors: list[BaseException] = []
            self.store: runstore.Store | None = None

        @runstore.hookimpl
        def runstore_run_created(self, manifest: runstore.RunManifest) -> None:
            assert self.store is not None
            try:
                self.store.list_runs()
            except RuntimeError as exc:
                self.errors.append(exc)

    observer = Reentrant()
    with runstore.open(url, plugins=[observer]) as store:
        observer.store = store
        store.create_run()
    assert len(observer.errors) == 1
    assert "its own event loop" in str(observer.errors[0])


# -- resuming ------------------------------------------------------------------------------


def test_resumed_run_continues_counting_from_what_is_stored(
    store: runstore.Store, url: str
) -> None:
    first = store.create_run(run_id="run_resume")
    first.append("instances", {"instance_id": "i1", "status": "passed"})
    first.put_artifact("i1/out.txt", b"abc")
    with runstore.open(url) as again:
        resumed = again.resume_run("run_resume", force=True)  # `first` stands for a dead writer
        with resumed:
            resumed.append("instances", {"instance_id": "i2", "status": "failed"})
        summary = resumed.summary
    assert summary is not None
    assert (summary.instance_count, summary.pass_count, summary.fail_count) == (2, 1, 1)
    assert (summary.artifact_count, summary.artifact_bytes) == (1, 3)
    assert store.get_run("run_resume").state.status == "succeeded"


def test_resuming_a_finished_run_is_a_conflict(store: runstore.Store) -> None:
    with store.create_run(run_id="run_finished"):
        pass
    with pytest.raises(ConflictError) as info:
        store.resume_run("run_finished")
    assert info.value.code == "conflict"
    assert "succeeded" in info.value.message


def test_resuming_an_unknown_run_is_not_found(store: runstore.Store) -> None:
    with pytest.raises(NotFoundError) as info:
        store.resume_run("run_missing")
    assert info.value.code == "not_found"


def test_invalid_phase_status_is_refused_and_the_run_stays_readable() -> None:
    with runstore.open("memory://phase-status") as store:
        run = store.create_run(run_id="run_p")
        with pytest.raises(InvalidInputError):
            run.set_phase("load", status="bogus")  # type: ignore[arg-type]
        assert store.get_run("run_p").state.phases == {}


def test_config_that_does_not_serialise_is_invalid_input_and_writes_nothing() -> None:
    with runstore.open("memory://bad-config") as store:
        with pytest.raises(InvalidInputError):
            store.create_run(run_id="run_c", config={"x": object()})
        assert store.list_runs() == []


def test_naive_datetime_filter_is_invalid_input() -> None:
    with runstore.open("memory://naive") as store, pytest.raises(InvalidInputError):
        store.list_runs(created_after=datetime(2024, 1, 1))


def test_stale_writer_cannot_finish_over_a_newer_state() -> None:
    with runstore.open("memory://stale") as store:
        stale = store.create_run(run_id="run_s")
        stale.start()
        other = store.resume_run("run_s", force=True)  # takes the run over
        other.set_phase("x", status="running")
        with pytest.raises(ConflictError):
            stale.finish()
        view = store.get_run("run_s")
        assert view.summary is None
        assert view.state.status == "running"
        other.finish()


def test_delete_run_calls_each_backend_object_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """One object serving several concerns deletes everything of the run in one call."""
    name = f"memory://delete-once-{os.getpid()}"
    with runstore.open(name, logs=name + "-logs") as store:
        with store.create_run(run_id="run_d") as run:
            run.append("steps", {"n": 1})
        calls: list[str] = []
        for concern, backend in (
            ("state", store.aio.state_backend),
            ("logs", store.aio.log_backend),
        ):
            original = backend.delete_run

            async def spy(run_id: str, concern: str = concern, original: Any = original) -> None:
                calls.append(concern)
                await original(run_id)

            monkeypatch.setattr(backend, "delete_run", spy)
        store.delete_run("run_d")
        assert sorted(calls) == ["logs", "state"]  # artifacts share the state's object
        with pytest.raises(runstore.NotFoundError):
            store.get_run("run_d")
