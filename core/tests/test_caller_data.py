"""The caller's own data: state, metadata and tags, metrics, outcomes, artifact metadata."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
from collections.abc import Iterator
from datetime import datetime

import pytest
from pydantic import BaseModel, ConfigDict

import runstore
from runstore.model.errors import ConflictError, InvalidInputError
from runstore.ops.transfer import copy_runs

_names = itertools.count()


@pytest.fixture
def store() -> Iterator[runstore.Store]:
    with runstore.open(f"memory://caller-{os.getpid()}-{next(_names)}") as opened:
        yield opened


class Progress(BaseModel):
    model_config = ConfigDict(strict=True)

    phase: str
    done: int
    since: datetime


# -- caller state -----------------------------------------------------------------------


def test_set_state_stores_a_json_object_read_back_as_state_data(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_s")
    state = run.set_state({"phase": "translate", "done": 0})
    assert state.data == {"phase": "translate", "done": 0}
    assert store.get_run("run_s").state.data == {"phase": "translate", "done": 0}


def test_update_state_merges_top_level_keys(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_s")
    run.set_state({"phase": "translate", "done": 0, "langs": ["ja"]})
    run.update_state({"done": 5})
    assert store.get_run("run_s").state.data == {"phase": "translate", "done": 5, "langs": ["ja"]}


def test_state_data_is_none_until_set(store: runstore.Store) -> None:
    store.create_run(run_id="run_s").start()
    view = store.get_run("run_s")
    assert view.state.data is None
    assert view.state_as(Progress) is None


def test_state_as_parses_a_strict_model_in_json_mode(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_s")
    since = datetime.fromisoformat("2026-01-02T03:04:05+00:00")
    run.set_state(Progress(phase="qa", done=3, since=since))
    parsed = store.get_run("run_s").state_as(Progress)
    assert parsed == Progress(phase="qa", done=3, since=since)


@pytest.mark.parametrize(
    "bad", [["not", "an", "object"], {"x": math.nan}, {"x": math.inf}, {"x": object()}]
)
def test_state_that_is_not_a_json_object_is_refused_and_nothing_written(
    store: runstore.Store, bad: object
) -> None:
    run = store.create_run(run_id="run_s")
    run.set_state({"ok": 1})
    revision = store.get_run("run_s").state.revision
    with pytest.raises(InvalidInputError):
        run.set_state(bad)  # type: ignore[arg-type]
    assert store.get_run("run_s").state.revision == revision
    assert store.get_run("run_s").state.data == {"ok": 1}


def test_two_writers_racing_on_state_one_gets_a_conflict(store: runstore.Store) -> None:
    first = store.create_run(run_id="run_s")
    first.start()
    second = store.resume_run("run_s", force=True)  # a second writer, taking over
    second.set_state({"by": "second"})
    with pytest.raises(ConflictError):
        first.set_state({"by": "first"})
    assert store.get_run("run_s").state.data == {"by": "second"}


# -- metadata and tags --------------------------------------------------------------------


def test_create_run_metadata_is_in_the_manifest_and_the_index(store: runstore.Store) -> None:
    store.create_run(run_id="run_m", metadata={"project": "demo", "langs": ["ja", "fr"]}).start()
    (record,) = store.list_runs()
    assert record.metadata == {"project": "demo", "langs": ["ja", "fr"]}
    assert store.get_run("run_m").manifest.metadata == {"project": "demo", "langs": ["ja", "fr"]}


def test_metadata_and_tags_change_after_the_run_finished(store: runstore.Store) -> None:
    with store.create_run(run_id="run_m", metadata={"project": "demo"}, tags=["nightly"]):
        pass
    store.set_metadata("run_m", {"reviewed": True})
    record = store.set_tags("run_m", add=["golden"], remove=["nightly"])
    assert record.metadata == {"project": "demo", "reviewed": True}
    assert record.tags == ["golden"]
    (listed,) = store.list_runs()
    assert (listed.metadata, listed.tags, listed.pass_rate) == (record.metadata, ["golden"], None)
    view = store.get_run("run_m")
    assert (view.metadata, view.tags) == (record.metadata, ["golden"])
    assert view.manifest.metadata == {"project": "demo"}  # how the run started
    assert view.manifest.tags == ["nightly"]
    assert view.summary is not None


def test_run_set_metadata_merges_into_the_current_metadata(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_m", metadata={"project": "demo"})
    run.set_metadata(lang="ja")
    assert store.get_run("run_m").metadata == {"project": "demo", "lang": "ja"}


def test_a_live_writer_keeps_writing_after_another_store_relabels_its_run(
    store: runstore.Store,
) -> None:
    run = store.create_run(run_id="run_m")
    run.append("steps", {"n": 1})
    with runstore.open(store.url) as other:
        other.set_metadata("run_m", {"reviewed": True})
    run.set_phase("load", status="done")  # builds on the relabelled state
    run.append("steps", {"n": 2})
    summary = run.finish()
    view = store.get_run("run_m")
    assert (summary.status, view.metadata) == ("succeeded", {"reviewed": True})
    assert view.state.phases["load"].status == "done"


@pytest.mark.parametrize(
    "metadata",
    [
        {"bad key": 1},
        {"": 1},
        {"x": {"nested": "object"}},
        {"x": math.nan},
        {"x": [1, [2]]},
        {f"k{i}": i for i in range(65)},
        {"x": "y" * 5000},
    ],
    ids=["space", "empty", "object", "nan", "nested-list", "too-many-keys", "too-long"],
)
def test_bad_metadata_is_refused_and_nothing_written(
    store: runstore.Store, metadata: dict[str, object]
) -> None:
    with pytest.raises(InvalidInputError):
        store.create_run(run_id="run_bad", metadata=metadata)
    assert store.list_runs() == []
    store.create_run(run_id="run_ok").start()
    revision = store.get_run("run_ok").state.revision
    with pytest.raises(InvalidInputError):
        store.set_metadata("run_ok", metadata)
    assert store.get_run("run_ok").state.revision == revision


# -- metrics --------------------------------------------------------------------------------


def test_log_metric_appends_to_the_metrics_stream_and_keeps_the_last_value(
    store: runstore.Store,
) -> None:
    with store.create_run(run_id="run_x") as run:
        run.log_metric("latency_ms", 210.0, step=1)
        run.log_metric("latency_ms", 212, step=2)
        run.log_metric("tokens", 5)
    records = list(store.get_run("run_x").read("metrics"))
    assert [(r["name"], r["value"], r["step"]) for r in records] == [
        ("latency_ms", 210.0, 1),
        ("latency_ms", 212.0, 2),
        ("tokens", 5.0, None),
    ]
    assert run.summary is not None
    assert run.summary.metrics == {"latency_ms": 212.0, "tokens": 5.0}


def test_finish_adds_the_callers_aggregates_to_the_summary_and_index(
    store: runstore.Store,
) -> None:
    run = store.create_run(run_id="run_x")
    run.log_metric("latency_ms", 1.0)
    summary = run.finish(metrics={"p95_latency_ms": 212.5})
    assert summary.metrics == {"latency_ms": 1.0, "p95_latency_ms": 212.5}
    (record,) = store.list_runs()
    assert record.metrics == {"latency_ms": 1.0, "p95_latency_ms": 212.5}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "12", True])
def test_a_metric_that_is_not_a_finite_number_is_refused(
    store: runstore.Store, value: object
) -> None:
    run = store.create_run(run_id="run_x")
    with pytest.raises(InvalidInputError):
        run.log_metric("m", value)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        run.finish(metrics={"m": value})  # type: ignore[dict-item]
    assert "metrics" not in store.get_run("run_x").streams()


# -- instance outcomes ------------------------------------------------------------------------


def test_instances_count_by_status_or_a_boolean_passed(store: runstore.Store) -> None:
    with store.create_run(run_id="run_o") as run:
        for record in (
            {"instance_id": "a", "passed": True},
            {"instance_id": "b", "passed": False},
            {"instance_id": "c", "status": "error"},
            {"instance_id": "d", "status": "skipped"},
            {"instance_id": "e", "status": "passed"},
            {"instance_id": "f"},
        ):
            run.append("instances", record)
    summary = run.summary
    assert summary is not None
    assert (summary.instance_count, summary.pass_count, summary.fail_count) == (6, 2, 1)
    assert (summary.error_count, summary.skip_count) == (1, 1)
    assert summary.pass_rate == 2 / 4  # passed / (passed + failed + error)


def test_an_instance_block_that_raises_records_an_error_instance(
    store: runstore.Store,
) -> None:
    run = store.create_run(run_id="run_o")

    def instance_that_raises() -> None:
        with run.instance("inst_001"):
            run.append("steps", {"step_name": "login"})
            raise KeyError("cart")

    with pytest.raises(KeyError):
        instance_that_raises()
    (record,) = store.get_run("run_o").read("instances")
    assert (record["instance_id"], record["status"], record["error_type"]) == (
        "inst_001",
        "error",
        "KeyError",
    )
    assert "cart" in record["error"]
    assert "KeyError" in record["traceback"]
    assert run.finish().error_count == 1


def test_an_instance_block_that_recorded_its_instance_adds_nothing_when_it_raises(
    store: runstore.Store,
) -> None:
    run = store.create_run(run_id="run_o")

    def instance_that_records_then_raises() -> None:
        with run.instance("inst_001"):
            run.append("instances", {"instance_id": "inst_001", "status": "failed"})
            raise RuntimeError("after the record")

    with pytest.raises(RuntimeError):
        instance_that_records_then_raises()
    assert [r["status"] for r in store.get_run("run_o").read("instances")] == ["failed"]


def test_an_async_instance_block_that_raises_records_an_error_instance() -> None:
    async def scenario() -> list[tuple[str, str]]:
        async with runstore.aio.open(f"memory://caller-async-{next(_names)}") as store:
            run = await store.create_run(run_id="run_o")
            with pytest.raises(ValueError, match="bad"):
                async with run.instance("inst_001"):
                    raise ValueError("bad")
            view = await store.get_run("run_o")
            return [(r["instance_id"], r["status"]) async for r in view.read("instances")]

    assert asyncio.run(scenario()) == [("inst_001", "error")]


# -- artifact metadata and location --------------------------------------------------------------


def test_artifact_metadata_is_stored_with_the_reference(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_a")
    ref = run.put_artifact("qa/report.json", b"{}", kind="qa_report", metadata={"lang": "ja"})
    assert ref.metadata == {"lang": "ja"}
    assert ref.uri is not None and ref.uri.endswith("run_a/artifacts/qa/report.json")
    (stored,) = store.get_run("run_a").artifacts()
    assert (stored.metadata, stored.uri) == ({"lang": "ja"}, ref.uri)


def test_identical_reput_with_other_metadata_is_a_conflict(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_a")
    run.put_artifact("a.json", b"{}", metadata={"lang": "ja"})
    assert run.put_artifact("a.json", b"{}", metadata={"lang": "ja"}).metadata == {"lang": "ja"}
    with pytest.raises(ConflictError):
        run.put_artifact("a.json", b"{}", metadata={"lang": "fr"})
    assert len(store.get_run("run_a").artifacts()) == 1


# -- copying -----------------------------------------------------------------------------------


def test_copying_a_run_carries_the_callers_data(store: runstore.Store) -> None:
    with store.create_run(run_id="run_c", metadata={"project": "demo"}) as run:
        run.set_state({"phase": "done"})
        run.log_metric("latency_ms", 3.5)
        run.put_artifact("qa/report.json", b"{}", metadata={"lang": "ja"})
    store.set_tags("run_c", add=["golden"])
    with runstore.open(f"memory://caller-copy-{next(_names)}") as other:
        copy_runs(store, other)
        view = other.get_run("run_c")
        assert (view.metadata, view.tags, view.state.data) == (
            {"project": "demo"},
            ["golden"],
            {"phase": "done"},
        )
        assert view.summary is not None and view.summary.metrics == {"latency_ms": 3.5}
        (ref,) = view.artifacts()
        assert ref.metadata == {"lang": "ja"}
        (record,) = other.list_runs()
        assert (record.metadata, record.tags) == ({"project": "demo"}, ["golden"])
