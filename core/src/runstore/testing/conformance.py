"""Pytest mixins every backend's test suite subclasses.

Each test drives the public API (``runstore.open`` and friends) against the
``store`` fixture the subclass provides, and states one behaviour the
in-memory reference has.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

import runstore
from runstore.model.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RunstoreError,
)
from runstore.model.names import (
    MAX_ARTIFACT_COMPONENTS,
    MAX_ARTIFACT_NAME_BYTES,
    MAX_COMPONENT_BYTES,
    validate_artifact_name,
    validate_run_id,
    validate_stream_name,
)
from runstore.registry.plugins import ENTRY_POINT_GROUP, Plugins
from runstore.spi.backends import Capabilities, RunQuery
from runstore.testing.processes import (
    describe_difference,
    race,
    snapshot,
    snapshot_in_a_new_process,
    url_opener,
)
from runstore.testing.stateful import StoreStateMachineConformance, declared_capabilities

__all__ = [
    "ArtifactConformance",
    "LogConformance",
    "MultiProcessConformance",
    "PersistenceConformance",
    "StateConformance",
    "StoreConformance",
    "check_registration",
]

BAD_ARTIFACT_NAMES = (
    "",
    "/etc/passwd",
    "../escape",
    "a/../../escape",
    "a/./b",
    "a//b",
    "a\\b",
    "C:evil",
    "nul\x00byte",
    "line\nbreak",
    "frag#ment",
    "%2e%2e/escape",
    "a/" * 40 + "b",
    "x" * 256,
)
BAD_RUN_IDS = ("", "Run_Upper", "_leading", "a..b", "a/b", "a" * 129, "space id", "ünïcode")


def _longest(validate: Callable[[str], object], build: Callable[[int], str]) -> str:
    """The longest ``build(n)`` that ``validate`` accepts (and ``build(n + 1)`` it refuses)."""
    n = 1
    while True:
        try:
            validate(build(n + 1))
        except InvalidInputError:
            validate(build(n))
            return build(n)
        n += 1


LONGEST_RUN_ID = _longest(validate_run_id, lambda n: "r" + "0" * (n - 1))
LONGEST_STREAM = _longest(validate_stream_name, lambda n: "s" + "_" * (n - 1))


def _artifact_name(components: int, total_bytes: int) -> str:
    """A valid name of ``components`` parts and exactly ``total_bytes`` UTF-8 bytes."""
    budget = total_bytes - (components - 1)  # the slashes
    sizes = [budget // components + (i < budget % components) for i in range(components)]
    parts = [
        f"{i:02d}" + "é" * ((size - 2) // 2) + "x" * ((size - 2) % 2)
        for i, size in enumerate(sizes)
    ]
    name = "/".join(parts)
    assert len(name.encode()) == total_bytes, name
    return validate_artifact_name(name)


_FULL = (MAX_ARTIFACT_NAME_BYTES + 1) // (MAX_COMPONENT_BYTES + 1)
LONGEST_ARTIFACT_NAMES = (
    # as many bytes and components as a name may have
    _artifact_name(MAX_ARTIFACT_COMPONENTS, MAX_ARTIFACT_NAME_BYTES),
    # as many components of the longest length as fit in a name
    _artifact_name(_FULL, _FULL * (MAX_COMPONENT_BYTES + 1) - 1),
    # one component as long as a component may be (multi-byte characters)
    _artifact_name(1, MAX_COMPONENT_BYTES),
)


StoreOpener = Callable[[], runstore.Store]


class _Kit:
    """Shared plumbing: capability switches and a fresh run per test.

    A capability is off when a backend serving the store declares it off
    (``Capabilities`` on the backend class) or when the test class switches
    it off for its environment (``capabilities = Capabilities(...)``); either
    way the tests that need it are skipped with the reason.
    """

    capabilities: ClassVar[Capabilities] = Capabilities()

    @pytest.fixture
    def store(self) -> Iterator[runstore.Store]:
        raise NotImplementedError(
            "provide a `store` fixture yielding runstore.open(<your backend URL>)"
        )

    def require(self, capability: str, store: runstore.Store | None = None) -> None:
        """Skip (visibly, naming who switched it off) when ``capability`` is off."""
        if not hasattr(self.capabilities, capability):
            raise AttributeError(f"no capability named {capability!r} in runstore.Capabilities")
        if not getattr(self.capabilities, capability):
            pytest.skip(f"{capability}=False in {type(self).__name__}.capabilities")
        if store is not None and not getattr(declared_capabilities(store), capability):
            off: dict[str, list[str]] = {}
            for concern, name in store.backend_names.items():
                if not getattr(_backend_of(store, concern).capabilities, capability):
                    off.setdefault(name, []).append(concern)
            who = ", ".join(f"{name!r} ({', '.join(concerns)})" for name, concerns in off.items())
            pytest.skip(f"{capability}=False declared by backend {who}")


def _backend_of(store: runstore.Store, concern: str) -> Any:
    return {
        "state": store.aio.state_backend,
        "logs": store.aio.log_backend,
        "artifacts": store.aio.artifact_backend,
    }[concern]


class StateConformance(_Kit):
    """Runs, state snapshots, summaries and the run index."""

    def test_create_run_then_get_run_returns_its_manifest(self, store: runstore.Store) -> None:
        run = store.create_run(
            run_id="run_a", sut_name="shop", scenario_ids=["checkout"], seed=7, config={"w": 2}
        )
        view = store.get_run("run_a")
        assert view.manifest == run.manifest
        assert view.manifest.scenario_ids == ["checkout"]
        assert view.state.status == "created"
        assert view.summary is None

    def test_scenario_ids_none_and_empty_stay_distinct(self, store: runstore.Store) -> None:
        store.create_run(run_id="run_none")
        store.create_run(run_id="run_empty", scenario_ids=[])
        assert store.get_run("run_none").manifest.scenario_ids is None
        assert store.get_run("run_empty").manifest.scenario_ids == []

    def test_existing_run_id_raises_already_exists(self, store: runstore.Store) -> None:
        self.require("conditional_create", store)
        store.create_run(run_id="run_dup")
        with pytest.raises(AlreadyExistsError) as info:
            store.create_run(run_id="run_dup")
        assert info.value.code == "already_exists"

    def test_generated_run_ids_are_sequential(self, store: runstore.Store) -> None:
        first = store.create_run().run_id
        second = store.create_run().run_id
        prefix, number = first.rsplit("_", 1)
        assert first.startswith("run_")
        assert len(number) == 3
        assert second == f"{prefix}_{int(number) + 1:03d}"

    @pytest.mark.parametrize("bad", BAD_RUN_IDS)
    def test_invalid_run_id_is_refused_before_writing(
        self, store: runstore.Store, bad: str
    ) -> None:
        with pytest.raises(InvalidInputError) as info:
            store.create_run(run_id=bad)
        assert info.value.code == "invalid_input"
        assert store.list_runs() == []

    def test_unknown_run_raises_not_found(self, store: runstore.Store) -> None:
        with pytest.raises(NotFoundError) as info:
            store.get_run("run_missing")
        assert info.value.code == "not_found"
        assert isinstance(info.value, LookupError)

    def test_clean_exit_marks_succeeded_with_summary(self, store: runstore.Store) -> None:
        with store.create_run(run_id="run_ok") as run:
            run.append("instances", {"instance_id": "i1", "status": "passed"})
            run.append("instances", {"instance_id": "i2", "status": "failed"})
            run.append("instances", {"instance_id": "i3", "status": "passed"})
        view = store.get_run("run_ok")
        assert view.state.status == "succeeded"
        assert view.summary is not None
        assert (view.summary.pass_count, view.summary.fail_count) == (2, 1)
        assert view.summary.pass_rate == pytest.approx(2 / 3)
        assert view.summary.stream_counts == {"instances": 3}
        assert view.summary == run.summary

    def test_exception_marks_failed_and_propagates(self, store: runstore.Store) -> None:
        with pytest.raises(ZeroDivisionError), store.create_run(run_id="run_bad"):
            1 / 0  # noqa: B018
        state = store.get_run("run_bad").state
        assert state.status == "failed"
        assert state.error is not None
        assert "ZeroDivisionError" in state.error

    def test_stale_state_revision_is_a_conflict(self, store: runstore.Store) -> None:
        self.require("compare_and_swap", store)
        run = store.create_run(run_id="run_cas")
        run.start()
        stale = store.get_run("run_cas").state
        run.set_phase("load", status="running")
        record = runstore.RunRecord.build(run.manifest, stale)
        newer = stale.model_copy(update={"revision": stale.revision + 1})
        with pytest.raises(ConflictError) as info:
            store.portal.call(
                store.aio.state_backend.write_state(
                    newer, expected_revision=stale.revision, record=record
                )
            )
        assert info.value.code == "conflict"
        assert store.get_run("run_cas").state.phases["load"].status == "running"

    def test_phase_progress_is_persisted(self, store: runstore.Store) -> None:
        run = store.create_run(run_id="run_phase")
        run.set_phase("translate", status="running", completed=3, total=10)
        phase = store.get_run("run_phase").state.phases["translate"]
        assert (phase.status, phase.completed, phase.total) == ("running", 3, 10)

    def test_list_runs_newest_first_with_filters(self, store: runstore.Store) -> None:
        self.require("consistent_listing", store)
        with store.create_run(run_id="run_1", sut_name="shop", tags=["nightly"]):
            pass
        with pytest.raises(RuntimeError), store.create_run(run_id="run_2", sut_name="bank"):
            raise RuntimeError("boom")
        store.create_run(run_id="run_3", sut_name="shop", tags=["nightly", "pinned"])
        assert [r.run_id for r in store.list_runs()] == ["run_3", "run_2", "run_1"]
        assert [r.run_id for r in store.list_runs(status="failed")] == ["run_2"]
        assert [r.run_id for r in store.list_runs(status=["succeeded", "created"])] == [
            "run_3",
            "run_1",
        ]
        assert [r.run_id for r in store.list_runs(sut_name="shop")] == ["run_3", "run_1"]
        assert [r.run_id for r in store.list_runs(tags=["pinned"])] == ["run_3"]
        assert [r.run_id for r in store.list_runs(limit=1, offset=1)] == ["run_2"]
        first = store.list_runs(status="succeeded")[0]
        assert first.pass_count == 0
        assert first.finished_at is not None

    def test_list_runs_time_range(self, store: runstore.Store) -> None:
        self.require("consistent_listing", store)
        store.create_run(run_id="run_t1")
        cut = store.get_run("run_t1").state.created_at
        store.create_run(run_id="run_t2")
        after = [r.run_id for r in store.list_runs(created_after=cut)]
        assert "run_t1" in after
        assert [r.run_id for r in store.list_runs(created_before=cut)] == []

    def test_delete_run_removes_everything(self, store: runstore.Store) -> None:
        with store.create_run(run_id="run_del") as run:
            run.append("steps", {"n": 1})
            run.put_artifact("a.txt", b"x")
        store.delete_run("run_del")
        with pytest.raises(NotFoundError):
            store.get_run("run_del")
        assert store.list_runs() == []
        store.create_run(run_id="run_del")  # the id is free again

    def test_delete_live_run_needs_force(self, store: runstore.Store) -> None:
        store.create_run(run_id="run_live").start()
        with pytest.raises(ConflictError):
            store.delete_run("run_live")
        store.delete_run("run_live", force=True)

    def test_force_deleted_live_run_leaves_nothing_in_a_new_run_of_the_same_id(
        self, store: runstore.Store
    ) -> None:
        old = store.create_run(run_id="run_again")
        old.append("steps", {"from": "old"})  # may still be buffered (object stores)
        store.delete_run("run_again", force=True)
        with pytest.raises(ConflictError):
            old.append("steps", {"from": "old, after the delete"})
        with store.create_run(run_id="run_again") as new:
            new.append("steps", {"from": "new"})
            with pytest.raises(ConflictError):
                old.finish()  # would flush what the old writer still buffers
        assert list(store.get_run("run_again").read("steps")) == [{"from": "new"}]

    def test_a_deleted_run_leaves_nothing_behind_for_a_new_run_of_the_same_id(
        self, store: runstore.Store
    ) -> None:
        with store.create_run(run_id="run_reborn", sut_name="old", tags=["old"]) as old:
            old.append("steps", {"from": "old"})
            old.append("phase_outputs", {"from": "old"})
            old.set_phase("load", status="done")
            old.update_state({"from": "old"})
            old.put_artifact("inst_001/report.json", b'{"from": "old"}')
        store.delete_run("run_reborn")
        fresh = store.create_run(run_id="run_fresh").state  # a run of an id never used
        new = store.create_run(run_id="run_reborn")
        view = store.get_run("run_reborn")
        assert (view.streams(), view.artifacts(), view.summary) == ([], [], None), (
            "a new run of a deleted run's id shows what the deleted run left behind"
        )
        state = view.state
        assert (state.status, state.revision, state.data, state.phases, view.tags) == (
            fresh.status,
            fresh.revision,
            fresh.data,
            fresh.phases,
            [],
        ), "a new run of a deleted run's id starts from the deleted run's state"
        with new:
            try:
                ref = new.put_artifact("inst_001/report.json", b'{"from": "new"}')
            except RunstoreError as error:
                pytest.fail(
                    "a new run of a deleted run's id cannot store an artifact name the deleted "
                    f"run used (what the delete left behind?): {type(error).__name__}: {error}"
                )
            new.append("steps", {"from": "new"})
        view = store.get_run("run_reborn")
        assert list(view.read("steps")) == [{"from": "new"}], "stream records of the deleted run"
        assert view.streams() == ["artifacts", "steps"]
        assert view.artifacts() == [ref]
        assert view.read_artifact("inst_001/report.json", verify=True) == b'{"from": "new"}'
        assert [r.run_id for r in store.list_runs()] == ["run_reborn", "run_fresh"]

    # -- the caller's data ---------------------------------------------------------------

    def test_caller_state_round_trips_and_patches_merge(self, store: runstore.Store) -> None:
        run = store.create_run(run_id="run_data")
        run.set_state({"phase": "translate", "done": 0, "langs": ["ja"]})
        run.update_state({"done": 5})
        assert store.get_run("run_data").state.data == {
            "phase": "translate",
            "done": 5,
            "langs": ["ja"],
        }

    def test_a_state_patch_from_a_stale_writer_is_a_conflict_not_a_lost_update(
        self, store: runstore.Store
    ) -> None:
        self.require("compare_and_swap", store)
        first = store.create_run(run_id="run_race")
        first.update_state({"first": 1})
        second = store.resume_run("run_race", force=True)  # a second writer takes over
        second.update_state({"second": 2})
        with pytest.raises(ConflictError):
            first.update_state({"first": 3})  # built on a state that is no longer stored
        assert store.get_run("run_race").state.data == {"first": 1, "second": 2}

    def test_metadata_and_tags_change_after_finish_and_the_index_shows_them(
        self, store: runstore.Store
    ) -> None:
        with store.create_run(run_id="run_meta", metadata={"project": "demo"}, tags=["nightly"]):
            pass
        store.set_metadata("run_meta", {"reviewed": True})
        store.set_tags("run_meta", add=["golden"], remove=["nightly"])
        view = store.get_run("run_meta")
        assert (view.metadata, view.tags) == ({"project": "demo", "reviewed": True}, ["golden"])
        (record,) = store.list_runs()
        assert (record.metadata, record.tags) == (view.metadata, ["golden"])
        assert record.status == "succeeded"

    def test_list_runs_where_and_order_by_match_the_reference_semantics(
        self, store: runstore.Store
    ) -> None:
        for i, (project, tags) in enumerate(
            [("demo", ["nightly"]), ("demo", []), ("other", ["nightly", "golden"]), (None, [])]
        ):
            metadata = {"rank": 3 - i, "langs": ["ja", "fr"][: i % 3]}
            if project is not None:
                metadata["project"] = project
            with store.create_run(run_id=f"run_q{i}", metadata=metadata, tags=tags) as run:
                run.append("instances", {"instance_id": "a", "passed": i % 2 == 0})
                run.log_metric("latency_ms", 10.0 * i)
        everything = store.list_runs()
        for where, order in [
            ("metadata.project = 'demo'", None),
            ("metadata.project != 'demo'", "metadata.rank"),
            ("metadata.langs = 'fr' OR tags CONTAINS 'golden'", "-run_id"),
            ("summary.pass_rate < 1 AND metrics.latency_ms >= 10", None),
            ("metadata.project IS NULL OR NOT (metadata.rank > 1)", "summary.pass_rate DESC"),
        ]:
            query = RunQuery(where=where, order_by=order)
            expected = [r.run_id for r in query.apply(everything)]
            pages, token = [], None
            while True:
                page = store.list_runs(where=where, order_by=order, limit=2, page_token=token)
                pages += [r.run_id for r in page]
                token = page.next_page_token
                if token is None:
                    break
            assert pages == expected, f"list_runs(where={where!r}, order_by={order!r})"

    def test_outcomes_and_metrics_reach_the_summary_and_the_index(
        self, store: runstore.Store
    ) -> None:
        with store.create_run(run_id="run_sum") as run:
            run.append("instances", {"instance_id": "a", "passed": True})
            run.append("instances", {"instance_id": "b", "status": "error"})
            run.append("instances", {"instance_id": "c", "status": "skipped"})
            run.log_metric("latency_ms", 12.5)
        summary = store.get_run("run_sum").summary
        assert summary is not None
        assert (summary.pass_count, summary.error_count, summary.skip_count) == (1, 1, 1)
        assert summary.pass_rate == 0.5
        (record,) = store.list_runs()
        assert (record.error_count, record.metrics) == (1, {"latency_ms": 12.5})


class LogConformance(_Kit):
    """Append-only JSONL streams."""

    def test_records_read_back_in_order(self, store: runstore.Store) -> None:
        with store.create_run(run_id="run_log") as run:
            for i in range(100):
                run.append("steps", {"instance_id": f"i{i % 3}", "n": i, "text": "é ✓"})
        records = list(store.get_run("run_log").read("steps"))
        assert [r["n"] for r in records] == list(range(100))
        assert records[0]["text"] == "é ✓"

    def test_records_visible_before_run_finishes(self, store: runstore.Store) -> None:
        run = store.create_run(run_id="run_live")
        run.append("steps", {"n": 1})
        run.flush()
        assert list(store.get_run("run_live").read("steps")) == [{"n": 1}]

    def test_appended_record_is_readable_before_any_flush(self, store: runstore.Store) -> None:
        self.require("native_append", store)
        run = store.create_run(run_id="run_native")
        run.append("steps", {"n": 1})
        assert list(store.get_run("run_native").read("steps")) == [{"n": 1}]

    def test_many_records_cross_chunk_boundaries(self, store: runstore.Store) -> None:
        payload = "x" * 1000
        with store.create_run(run_id="run_big") as run:
            for i in range(3000):
                run.append("steps", {"n": i, "p": payload})
        assert sum(1 for _ in store.get_run("run_big").read("steps")) == 3000

    def test_unwritten_stream_reads_empty(self, store: runstore.Store) -> None:
        store.create_run(run_id="run_empty")
        assert list(store.get_run("run_empty").read("steps")) == []

    def test_log_lines_carry_level_message_and_fields(self, store: runstore.Store) -> None:
        with store.create_run(run_id="run_lines") as run:
            run.log("info", "checkout done", instance_id="i1")
        (line,) = store.get_run("run_lines").read("logs")
        assert (line["level"], line["message"], line["instance_id"]) == (
            "info",
            "checkout done",
            "i1",
        )
        assert "ts" in line

    @pytest.mark.parametrize(
        "record",
        [
            {"bad": object()},
            {1: "int key"},
            ["not", "an", "object"],
            "text",
            {"latency": float("nan")},
            {"nested": [{"x": float("-inf")}], "ok": None},
        ],
        ids=["object-value", "int-key", "list", "str", "nan", "nested-infinity"],
    )
    def test_unserialisable_record_is_refused_and_not_written(
        self, store: runstore.Store, record: Any
    ) -> None:
        with store.create_run(run_id="run_badrec") as run:
            run.append("steps", {"n": 1})
            with pytest.raises(InvalidInputError) as info:
                run.append("steps", record)
            assert info.value.code == "invalid_input"
            run.append("steps", {"n": 2})
        assert list(store.get_run("run_badrec").read("steps")) == [{"n": 1}, {"n": 2}]

    def test_too_deep_record_is_refused(self, store: runstore.Store) -> None:
        deep: dict[str, Any] = {}
        node = deep
        for _ in range(300):
            node["d"] = {}
            node = node["d"]
        with store.create_run(run_id="run_deep") as run, pytest.raises(InvalidInputError):
            run.append("steps", deep)

    @pytest.mark.parametrize("stream", ["Steps", "../x", "a/b", "", "artifacts", "x" * 65])
    def test_bad_or_reserved_stream_name_is_refused(
        self, store: runstore.Store, stream: str
    ) -> None:
        with store.create_run(run_id="run_badstream") as run, pytest.raises(InvalidInputError):
            run.append(stream, {"n": 1})

    def test_append_after_finish_is_a_conflict(self, store: runstore.Store) -> None:
        with store.create_run(run_id="run_done") as run:
            pass
        with pytest.raises(ConflictError):
            run.append("steps", {"n": 1})

    def test_resume_then_append_keeps_every_stream_record(self, store: runstore.Store) -> None:
        """Reopening a stream's writer (``resume_run``) must not cut or repeat a record."""
        run = store.create_run(run_id="run_resumed")
        for n in range(3):
            run.append("steps", {"n": n})
        run.append(LONGEST_STREAM, {"n": 0})
        run.flush()
        run.release()  # handed over unfinished: the next writer resumes it
        resumed = store.resume_run("run_resumed")
        resumed.append("steps", {"n": 3})
        resumed.append(LONGEST_STREAM, {"n": 1})
        resumed.finish()
        view = store.get_run("run_resumed")
        steps = list(view.read("steps"))
        assert steps == [{"n": n} for n in range(4)], (
            f"stream records of 'steps' after resume_run and one more append: read {steps}, "
            "expected n = 0, 1, 2, 3 (reopening the writer lost or repeated a record)"
        )
        assert list(view.read(LONGEST_STREAM)) == [{"n": 0}, {"n": 1}], (
            f"stream records of the longest stream name ({len(LONGEST_STREAM)} characters)"
        )
        assert view.summary is not None
        assert view.summary.stream_counts == {"steps": 4, LONGEST_STREAM: 2}

    def test_streams_lists_written_streams(self, store: runstore.Store) -> None:
        with store.create_run(run_id="run_streams") as run:
            run.append("steps", {"n": 1})
            run.append("phase_outputs", {"n": 1})
        assert {"steps", "phase_outputs"} <= set(store.get_run("run_streams").streams())


class ArtifactConformance(_Kit):
    """Immutable, content-hashed artifacts."""

    def test_put_then_read_round_trips_with_hash(self, store: runstore.Store) -> None:
        body = b'{"request": 1}'
        with store.create_run(run_id="run_art") as run:
            ref = run.put_artifact("inst_001/step_001_request.json", body, kind="intermediate")
        assert ref.sha256 == hashlib.sha256(body).hexdigest()
        assert (ref.size, ref.kind, ref.media_type) == (
            len(body),
            "intermediate",
            "application/json",
        )
        view = store.get_run("run_art")
        assert view.read_artifact("inst_001/step_001_request.json", verify=True) == body
        assert view.artifacts() == [ref]
        assert view.summary is not None
        assert (view.summary.artifact_count, view.summary.artifact_bytes) == (1, len(body))

    def test_identical_reput_is_a_noop(self, store: runstore.Store) -> None:
        with store.create_run(run_id="run_same") as run:
            first = run.put_artifact("a.json", b"{}")
            assert run.put_artifact("a.json", b"{}") == first
        assert store.get_run("run_same").artifacts() == [first]

    def test_reput_with_other_bytes_is_a_conflict(self, store: runstore.Store) -> None:
        with store.create_run(run_id="run_conf") as run:
            run.put_artifact("a.json", b"{}")
            with pytest.raises(ConflictError) as info:
                run.put_artifact("a.json", b"[]")
            assert info.value.code == "conflict"
        assert store.get_run("run_conf").read_artifact("a.json") == b"{}"

    def test_empty_artifact(self, store: runstore.Store) -> None:
        with store.create_run(run_id="run_zero") as run:
            ref = run.put_artifact("empty.bin", b"")
        assert ref.size == 0
        assert store.get_run("run_zero").read_artifact("empty.bin") == b""

    def test_large_artifact_streams_from_a_file(
        self, store: runstore.Store, tmp_path: Path
    ) -> None:
        source = tmp_path / "big.bin"
        block = hashlib.sha256(b"seed").digest() * 4096  # 128 KiB
        with source.open("wb") as handle:
            for _ in range(40):  # 5 MiB, several chunks
                handle.write(block)
        with store.create_run(run_id="run_large") as run:
            ref = run.put_artifact("exports/big.bin", source, kind="export")
        expected = hashlib.sha256(source.read_bytes()).hexdigest()
        assert (ref.sha256, ref.size) == (expected, source.stat().st_size)
        digest = hashlib.sha256()
        for chunk in store.get_run("run_large").open_artifact("exports/big.bin", verify=True):
            digest.update(chunk)
        assert digest.hexdigest() == expected

    def test_artifact_from_binary_file_object(self, store: runstore.Store, tmp_path: Path) -> None:
        source = tmp_path / "f.bin"
        source.write_bytes(b"abc" * 1000)
        with store.create_run(run_id="run_fobj") as run, source.open("rb") as handle:
            ref = run.put_artifact("f.bin", handle)
        assert ref.size == 3000

    @pytest.mark.parametrize("name", BAD_ARTIFACT_NAMES)
    def test_hostile_artifact_name_is_refused(self, store: runstore.Store, name: str) -> None:
        with store.create_run(run_id="run_names") as run:
            with pytest.raises(InvalidInputError) as info:
                run.put_artifact(name, b"x")
            assert info.value.code == "invalid_input"
        assert store.get_run("run_names").artifacts() == []

    @pytest.mark.parametrize(
        "name",
        LONGEST_ARTIFACT_NAMES,
        ids=[f"{len(n.encode())}-bytes-{n.count('/') + 1}-parts" for n in LONGEST_ARTIFACT_NAMES],
    )
    def test_the_longest_valid_names_are_stored(self, store: runstore.Store, name: str) -> None:
        """The longest valid run id with the longest valid artifact names (runstore.model.names)."""
        with store.create_run(run_id=LONGEST_RUN_ID) as run:
            try:
                ref = run.put_artifact(name, b"longest")
            except RunstoreError as error:
                pytest.fail(
                    f"a valid artifact name of {len(name.encode())} bytes in "
                    f"{name.count('/') + 1} components (the limits are "
                    f"{MAX_ARTIFACT_NAME_BYTES} bytes, {MAX_ARTIFACT_COMPONENTS} components of "
                    f"{MAX_COMPONENT_BYTES} bytes) is refused by the backend: "
                    f"{type(error).__name__}: {error}"
                )
            assert run.put_artifact(name, b"longest") == ref
        view = store.get_run(LONGEST_RUN_ID)
        assert view.artifacts() == [ref]
        assert view.read_artifact(name, verify=True) == b"longest"
        assert [r.run_id for r in store.list_runs()] == [LONGEST_RUN_ID]
        store.delete_run(LONGEST_RUN_ID)
        with pytest.raises(NotFoundError):
            store.get_run(LONGEST_RUN_ID)

    def test_file_and_directory_of_the_same_name_conflict(self, store: runstore.Store) -> None:
        with store.create_run(run_id="run_clash") as run:
            run.put_artifact("a/b.json", b"1")
            with pytest.raises(ConflictError):
                run.put_artifact("a", b"2")
            run.put_artifact("c", b"3")
            with pytest.raises(ConflictError):
                run.put_artifact("c/d", b"4")

    def test_unknown_artifact_raises_not_found(self, store: runstore.Store) -> None:
        with store.create_run(run_id="run_noart"):
            pass
        with pytest.raises(NotFoundError):
            store.get_run("run_noart").read_artifact("missing.bin")

    def test_artifact_metadata_round_trips_and_is_immutable(self, store: runstore.Store) -> None:
        with store.create_run(run_id="run_artmeta") as run:
            run.put_artifact("qa/report.json", b"{}", metadata={"lang": "ja", "score": 0.9})
            with pytest.raises(ConflictError):
                run.put_artifact("qa/report.json", b"{}", metadata={"lang": "fr"})
        (ref,) = store.get_run("run_artmeta").artifacts()
        assert ref.metadata == {"lang": "ja", "score": 0.9}

    def test_unknown_kind_is_refused(self, store: runstore.Store) -> None:
        with store.create_run(run_id="run_kind") as run, pytest.raises(InvalidInputError):
            run.put_artifact("a.bin", b"x", kind="bogus")  # type: ignore[arg-type]

    def test_instance_bundle_collects_its_records(self, store: runstore.Store) -> None:
        with store.create_run(run_id="run_replay", seed=42, config={"w": 1}) as run:
            run.append("instances", {"instance_id": "inst_001", "status": "passed"})
            run.append("instances", {"instance_id": "inst_002", "status": "failed"})
            run.append("steps", {"instance_id": "inst_001", "step_name": "login"})
            run.append("steps", {"instance_id": "inst_002", "step_name": "login"})
            run.append("assertions", {"instance_id": "inst_001", "name": "total", "passed": True})
            run.put_artifact("inst_001/step_001_request.json", b"{}")
        bundle = store.get_run("run_replay").instance("inst_001")
        assert bundle.instance == {"instance_id": "inst_001", "status": "passed"}
        assert [s["step_name"] for s in bundle.steps] == ["login"]
        assert len(bundle.assertions) == 1
        assert [a.name for a in bundle.artifacts] == ["inst_001/step_001_request.json"]
        assert (bundle.seed, bundle.config) == (42, {"w": 1})


def _write_everything(store: runstore.Store, opener: Callable[[], runstore.Store]) -> list[str]:
    """A finished run using every feature, a deleted one, and (through another store
    object, closed since) a run left unfinished; their ids."""
    with store.create_run(
        run_id="run_everything",
        sut_name="shop",
        scenario_ids=["checkout"],
        seed=7,
        config={"workers": 2},
        metadata={"project": "demo"},
        tags=["nightly"],
    ) as run:
        run.append("instances", {"instance_id": "i1", "status": "passed"})
        run.append("instances", {"instance_id": "i2", "status": "failed"})
        run.append("steps", {"instance_id": "i1", "step_name": "login"})
        run.log("info", "done", instance_id="i1")
        run.log_metric("latency_ms", 12.5, step=1)
        run.set_phase("translate", status="done", completed=2, total=2)
        run.set_state({"phase": "translate", "done": 2})
        run.put_artifact("inst_001/request.json", b"{}", metadata={"lang": "ja"})
        run.put_artifact("exports/report.md", b"# report", kind="export")
    store.set_metadata("run_everything", {"reviewed": True})
    store.set_tags("run_everything", add=["golden"])
    store.create_run(run_id="run_deleted").append("steps", {"n": 1})
    store.delete_run("run_deleted", force=True)
    with opener() as elsewhere:  # closed without finishing the run: it stays unfinished
        live = elsewhere.create_run(run_id="run_unfinished", sut_name="bank")
        live.append("steps", {"n": 1})
        live.update_state({"done": 1})
    return ["run_everything", "run_unfinished", "run_deleted"]


class PersistenceConformance(_Kit):
    """What ``persistent`` promises: another store object, and another process, sees it all.

    Needs a ``store_opener`` fixture: a picklable callable that opens a *new*
    store object on the same location as ``store`` each time it is called (it
    is also called in child processes started with ``spawn``). The default,
    ``runstore.open(store.url)``, suits a backend installed through its entry
    point and opened from one URL; override it otherwise (a backend passed
    with ``plugins=``, concerns routed to several URLs).
    """

    @pytest.fixture
    def store_opener(self, store: runstore.Store) -> StoreOpener:
        return url_opener(store.url)

    def _open(self, opener: StoreOpener, like: runstore.Store | None = None) -> runstore.Store:
        opened = opener()
        if like is not None and opened.backend_names != like.backend_names:
            opened.close()
            pytest.fail(
                f"store_opener opened {opened.backend_names}, not the backends of the store "
                f"under test ({like.backend_names}): provide a store_opener fixture"
            )
        return opened

    def test_a_new_store_object_and_a_new_process_see_everything_written(
        self, store: runstore.Store, store_opener: StoreOpener
    ) -> None:
        self.require("persistent", store)
        with self._open(store_opener, like=store) as writer:
            run_ids = _write_everything(writer, store_opener)
            written = snapshot(writer, run_ids)
        with self._open(store_opener) as reader:
            again = snapshot(reader, run_ids)
        lost = describe_difference(written, again)
        assert not lost, (
            "persistent is declared, but a new store object on the same location sees "
            "other data than the one that wrote it (closed since):\n  " + "\n  ".join(lost)
        )
        elsewhere = snapshot_in_a_new_process(store_opener, run_ids)
        lost = describe_difference(written, elsewhere)
        assert not lost, (
            "persistent is declared, but another process opening the same location sees "
            "other data than the process that wrote it:\n  " + "\n  ".join(lost)
        )

    def test_resume_in_a_new_store_object_then_append_keeps_every_stream_record(
        self, store: runstore.Store, store_opener: StoreOpener
    ) -> None:
        self.require("persistent", store)
        with self._open(store_opener, like=store) as first:
            run = first.create_run(run_id="run_handed_over")
            for n in range(3):
                run.append("steps", {"n": n})
            run.put_artifact("first.txt", b"1")
        with self._open(store_opener) as second:
            resumed = second.resume_run("run_handed_over")
            assert resumed.record_counts.get("steps") == 3, (
                f"stream records counted after resume_run: {resumed.record_counts}"
            )
            resumed.append("steps", {"n": 3})
            resumed.put_artifact("second.txt", b"2")
            resumed.finish()
        view = store.get_run("run_handed_over")
        steps = list(view.read("steps"))
        assert steps == [{"n": n} for n in range(4)], (
            f"stream records of 'steps' after a new store object resumed the run and appended "
            f"one: read {steps}, expected n = 0, 1, 2, 3"
        )
        assert [a.name for a in view.artifacts()] == ["first.txt", "second.txt"]
        assert view.summary is not None
        assert view.summary.stream_counts == {"steps": 4}


RACERS = 4
"""Processes in the multi-process race."""


class MultiProcessConformance(PersistenceConformance):
    """What ``conditional_create`` and ``compare_and_swap`` promise across processes.

    :data:`RACERS` processes (``spawn``), released together, create the same run
    id, then runs with generated ids, then change one run's metadata: exactly
    one creates the run, no generated id is handed out twice, no update is lost.
    Uses ``store_opener`` like :class:`PersistenceConformance`.
    """

    def test_processes_racing_on_one_store_create_each_run_once_and_lose_no_update(
        self, store: runstore.Store, store_opener: StoreOpener
    ) -> None:
        self.require("persistent", store)  # the processes share the store through storage
        self.require("conditional_create", store)
        self.require("compare_and_swap", store)
        with self._open(store_opener, like=store) as setup, setup.create_run(run_id="run_shared"):
            pass
        generated, relabels = 2, 3
        outcomes = race(
            store_opener,
            processes=RACERS,
            run_id="run_contested",
            generated=generated,
            shared_run="run_shared",
            relabels=relabels,
        )
        errors = [f"process {o['index']}: {e}" for o in outcomes for e in o["errors"]]
        assert not errors, "racing processes failed:\n  " + "\n  ".join(errors)
        winners = [o["index"] for o in outcomes if o.get("create") == "created"]
        assert len(winners) == 1, (
            f"conditional_create is declared, but {len(winners)} of {RACERS} processes "
            f"creating run 'run_contested' at once were told they created it "
            f"(processes {winners}; the others got AlreadyExistsError)"
        )
        ids = [run_id for o in outcomes for run_id in o["generated"]]
        twice = sorted({run_id for run_id in ids if ids.count(run_id) > 1})
        assert not twice, (
            f"conditional_create is declared, but racing processes were handed the same "
            f"generated run ids: {twice}"
        )
        listed = {r.run_id for r in store.list_runs()}
        assert set(ids) | {"run_contested", "run_shared"} <= listed
        metadata = store.get_run("run_shared").metadata
        lost = [
            f"process_{index}_update_{number}"
            for index in range(RACERS)
            for number in range(relabels)
            if f"process_{index}_update_{number}" not in metadata
        ]
        assert not lost, (
            f"compare_and_swap is declared, but {len(lost)} of {RACERS * relabels} metadata "
            f"updates made by racing processes are lost: {lost}"
        )


class StoreConformance(
    StateConformance,
    LogConformance,
    ArtifactConformance,
    MultiProcessConformance,
    StoreStateMachineConformance,
):
    """Everything a backend serving all three concerns must do.

    Includes the state machine (:class:`StoreStateMachineConformance`), which
    needs a ``store_factory`` fixture besides ``store``, and the checks of
    what ``persistent``, ``conditional_create`` and ``compare_and_swap``
    promise (:class:`MultiProcessConformance`), which use ``store_opener``.
    """


def check_registration(distribution: str, backend: str) -> runstore.BackendSpec:
    """Assert ``distribution`` is installed, exposes a ``runstore.plugins`` entry point
    that loads, and registers the backend named ``backend``; return its spec."""
    dist = importlib.metadata.distribution(distribution)
    points = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
    assert points, f"{distribution} declares no entry point in group {ENTRY_POINT_GROUP!r}"
    for point in points:
        point.load()
    specs = Plugins().backends()
    assert backend in specs, (
        f"{distribution} loaded but registered no backend named {backend!r} "
        f"(registered: {sorted(specs)})"
    )
    return specs[backend]
