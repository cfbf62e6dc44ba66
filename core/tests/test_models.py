"""The domain model: JSON round trips, the index record, no unknown fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest
from pydantic import BaseModel, ValidationError

from runstore.model.run import (
    TERMINAL_STATUSES,
    ArtifactKind,
    ArtifactRef,
    LogRef,
    PhaseProgress,
    RunManifest,
    RunRecord,
    RunState,
    RunSummary,
    utcnow,
)
from runstore.spi import layout

T0 = datetime(2024, 1, 15, 9, 30, tzinfo=UTC)
T1 = T0 + timedelta(seconds=90, microseconds=123456)

MANIFEST = RunManifest(
    run_id="run_20240115_001",
    timestamp=T0,
    sut_name="ecommerce",
    scenario_ids=["checkout", "refund"],
    seed=42,
    config={"workers": 4, "nested": {"a": [1, 2.5, None, True]}},
    tags=["nightly"],
    correlation_id="corr-1",
    runstore_version="0.1.0",
)
STATE = RunState(
    run_id="run_20240115_001",
    status="succeeded",
    revision=5,
    created_at=T0,
    updated_at=T1,
    heartbeat_at=T1,
    started_at=T0,
    finished_at=T1,
    phases={"translate": PhaseProgress(status="done", completed=10, total=10, message="ok")},
    error=None,
)
SUMMARY = RunSummary(
    run_id="run_20240115_001",
    status="succeeded",
    instance_count=3,
    pass_count=2,
    fail_count=1,
    pass_rate=2 / 3,
    started_at=T0,
    finished_at=T1,
    duration_ms=90123,
    stream_counts={"instances": 3, "steps": 12},
    artifact_count=1,
    artifact_bytes=14,
)
ARTIFACT = ArtifactRef(
    run_id="run_20240115_001",
    name="inst_001/step_001_request.json",
    kind="intermediate",
    sha256="0" * 64,
    size=14,
    media_type="application/json",
    created_at=T1,
)
LOG = LogRef(
    run_id="run_20240115_001",
    stream="steps",
    location="runs/run_20240115_001/steps.jsonl",
    record_count=12,
    retention_days=30,
)
MODELS: dict[str, BaseModel] = {
    "manifest": MANIFEST,
    "manifest-minimal": RunManifest(run_id="r", timestamp=T0),
    "manifest-empty-scenarios": RunManifest(run_id="r", timestamp=T0, scenario_ids=[]),
    "state": STATE,
    "state-minimal": RunState(run_id="r", created_at=T0, updated_at=T0),
    "phase": PhaseProgress(),
    "summary": SUMMARY,
    "summary-minimal": RunSummary(run_id="r", status="failed"),
    "record": RunRecord.build(MANIFEST, STATE, SUMMARY),
    "artifact": ARTIFACT,
    "log": LOG,
}


@pytest.mark.parametrize("model", MODELS.values(), ids=MODELS.keys())
def test_model_round_trips_through_json(model: BaseModel) -> None:
    assert type(model).model_validate_json(model.model_dump_json()) == model


@pytest.mark.parametrize("model", MODELS.values(), ids=MODELS.keys())
def test_model_round_trips_through_the_snapshot_format(model: BaseModel) -> None:
    assert type(model).model_validate_json(layout.dump_snapshot(model)) == model


@pytest.mark.parametrize("model", MODELS.values(), ids=MODELS.keys())
def test_model_refuses_unknown_fields(model: BaseModel) -> None:
    data = model.model_dump(mode="json")
    data["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        type(model).model_validate(data)


@pytest.mark.parametrize("model", MODELS.values(), ids=MODELS.keys())
def test_model_is_immutable(model: BaseModel) -> None:
    field = next(iter(type(model).model_fields))
    with pytest.raises(ValidationError):
        setattr(model, field, getattr(model, field))


def test_none_and_empty_scenario_ids_stay_distinct_in_json() -> None:
    unknown = RunManifest(run_id="r", timestamp=T0)
    empty = RunManifest(run_id="r", timestamp=T0, scenario_ids=[])
    assert RunManifest.model_validate_json(unknown.model_dump_json()).scenario_ids is None
    assert RunManifest.model_validate_json(empty.model_dump_json()).scenario_ids == []


def test_timestamps_keep_their_timezone_through_json() -> None:
    state = RunState.model_validate_json(STATE.model_dump_json())
    assert state.created_at.utcoffset() == timedelta(0)
    assert state.updated_at == T1


def test_utcnow_is_timezone_aware_utc() -> None:
    assert utcnow().utcoffset() == timedelta(0)


def test_run_record_is_built_from_manifest_state_and_summary() -> None:
    record = RunRecord.build(MANIFEST, STATE, SUMMARY)
    assert record == RunRecord(
        run_id="run_20240115_001",
        status="succeeded",
        created_at=T0,
        updated_at=T1,
        finished_at=T1,
        sut_name="ecommerce",
        scenario_ids=["checkout", "refund"],
        tags=["nightly"],
        seed=42,
        instance_count=3,
        pass_count=2,
        fail_count=1,
        error_count=0,
        skip_count=0,
        pass_rate=2 / 3,
        duration_ms=90123,
    )


def test_run_record_without_summary_has_unknown_results() -> None:
    live = STATE.model_copy(update={"status": "running", "finished_at": None})
    record = RunRecord.build(MANIFEST, live)
    assert (record.status, record.finished_at) == ("running", None)
    assert (record.pass_count, record.fail_count, record.pass_rate, record.duration_ms) == (
        None,
        None,
        None,
        None,
    )


def test_run_record_keeps_empty_scenario_ids_empty() -> None:
    manifest = MANIFEST.model_copy(update={"scenario_ids": []})
    assert RunRecord.build(manifest, STATE).scenario_ids == []


def test_run_record_is_lighter_than_the_state() -> None:
    assert "phases" not in RunRecord.model_fields
    assert "config" not in RunRecord.model_fields


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled", "crashed"])
def test_terminal_statuses_are_terminal(status: str) -> None:
    state = STATE.model_copy(update={"status": status})
    assert state.is_terminal
    assert status in TERMINAL_STATUSES


@pytest.mark.parametrize("status", ["created", "running"])
def test_live_statuses_are_not_terminal(status: str) -> None:
    assert not STATE.model_copy(update={"status": status}).is_terminal


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValidationError):
        RunState.model_validate(
            {"run_id": "r", "status": "paused", "created_at": T0, "updated_at": T0}
        )


def test_unknown_artifact_kind_is_refused() -> None:
    data = ARTIFACT.model_dump()
    data["kind"] = "screenshot"
    with pytest.raises(ValidationError):
        ArtifactRef.model_validate(data)


def test_artifact_kind_taxonomy_is_the_documented_one() -> None:
    annotation: object = ArtifactRef.model_fields["kind"].annotation
    assert annotation == ArtifactKind
    assert set(get_args(ArtifactKind)) == {
        "phase_output",
        "intermediate",
        "qa_report",
        "export",
        "log",
        "raw",
    }
