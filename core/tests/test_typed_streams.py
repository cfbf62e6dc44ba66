"""Typed streams: pydantic models on append and on read, and the JSON Schemas of the files."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, Field

import runstore
import runstore.streams
from runstore.model.errors import InvalidInputError, NotFoundError
from runstore.model.run import ArtifactRef
from runstore.streams import AssertionRecord, InstanceRecord, LogLine, StepRecord

_names = itertools.count()


@pytest.fixture
def store() -> Iterator[runstore.Store]:
    with runstore.open(f"memory://typed-{os.getpid()}-{next(_names)}") as store:
        yield store


class PhaseOutput(BaseModel):
    phase: str
    artifact: str
    tokens: int = 0
    reviewer: str | None = None
    source_language: str = Field(default="en", alias="sourceLanguage")


# -- writing ---------------------------------------------------------------------------


def test_append_validates_a_dict_and_stores_what_was_given(store: runstore.Store) -> None:
    with store.create_run(run_id="run_po") as run:
        outputs = run.stream("phase_outputs", PhaseOutput)
        stored = outputs.append({"phase": "translate", "artifact": "out/fr.json", "tokens": "12"})
    assert stored == PhaseOutput(phase="translate", artifact="out/fr.json", tokens=12)
    # Coerced values are stored validated; a None default left unset is not written,
    # other defaults are, under their alias.
    assert list(store.get_run("run_po").read("phase_outputs")) == [
        {"phase": "translate", "artifact": "out/fr.json", "tokens": 12, "sourceLanguage": "en"}
    ]


def test_an_explicit_none_is_stored(store: runstore.Store) -> None:
    with store.create_run(run_id="run_none") as run:
        run.stream("phase_outputs", PhaseOutput).append(
            PhaseOutput(phase="qa", artifact="qa.json", reviewer=None)
        )
    [record] = store.get_run("run_none").read("phase_outputs")
    assert record["reviewer"] is None


def test_a_record_that_does_not_match_is_refused_and_nothing_is_written(
    store: runstore.Store,
) -> None:
    with store.create_run(run_id="run_bad") as run:
        outputs = run.stream("phase_outputs", PhaseOutput)
        with pytest.raises(InvalidInputError) as info:
            outputs.append({"phase": "translate", "tokens": "many"})
        outputs.append({"phase": "translate", "artifact": "a.json"})
    error = info.value
    assert "PhaseOutput" in error.message
    assert error.details["stream"] == "phase_outputs"
    assert {e["loc"] for e in error.details["errors"]} == {"artifact", "tokens"}
    assert len(list(store.get_run("run_bad").read("phase_outputs"))) == 1


def test_an_instance_of_another_model_is_validated_from_its_data(store: runstore.Store) -> None:
    class Other(BaseModel):
        phase: str
        artifact: str

    with store.create_run(run_id="run_other") as run:
        stored = run.stream("phase_outputs", PhaseOutput).append(Other(phase="p", artifact="a"))  # type: ignore[arg-type]
    assert isinstance(stored, PhaseOutput)


def test_a_typed_stream_needs_a_model_class_and_a_writable_name(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_args")
    with pytest.raises(InvalidInputError):
        run.stream("phase_outputs", dict)  # type: ignore[type-var]
    with pytest.raises(InvalidInputError):
        run.stream("artifacts", ArtifactRef)
    with pytest.raises(InvalidInputError):
        run.stream("Bad Name", PhaseOutput)
    run.finish()


def test_typed_appends_get_correlation_ids_for_fields_they_were_not_given(
    store: runstore.Store,
) -> None:
    with store.create_run(run_id="run_ctx") as run, run.instance("inst_001"), run.step("login"):
        run.stream("steps", StepRecord).append({"step_name": "login", "step_index": 1})
    assert list(store.get_run("run_ctx").read("steps")) == [
        {"step_name": "login", "step_index": 1, "instance_id": "inst_001", "step_id": "login"}
    ]


def test_typed_instances_count_in_the_summary(store: runstore.Store) -> None:
    with store.create_run(run_id="run_sum") as run:
        instances = run.stream("instances", InstanceRecord)
        instances.append({"instance_id": "i1", "status": "passed"})
        instances.append(InstanceRecord(instance_id="i2", status="failed"))
    assert run.summary is not None
    assert (run.summary.pass_count, run.summary.fail_count) == (1, 1)


# -- the standard models -----------------------------------------------------------------


def test_standard_models_keep_the_fields_a_harness_adds() -> None:
    step = StepRecord.model_validate({"step_name": "login", "latency_ms": 12, "http": {"s": 200}})
    assert step.model_extra == {"latency_ms": 12, "http": {"s": 200}}
    assertion = AssertionRecord(name="total", passed=False, expected=5, actual=4, severity="high")
    assert assertion.model_dump()["severity"] == "high"


def test_standard_models_require_what_the_stream_is_about() -> None:
    with pytest.raises(ValueError, match="instance_id"):
        InstanceRecord.model_validate({"status": "passed"})
    with pytest.raises(ValueError, match="passed"):
        AssertionRecord.model_validate({"name": "x"})
    with pytest.raises(ValueError, match="message"):
        LogLine.model_validate({"level": "info"})


def test_the_demo_runs_streams_parse_with_the_standard_models(store: runstore.Store) -> None:
    from runstore.cli.demo import run_demo

    summary = run_demo(store, seed=3, instances=4, run_id="run_demo")
    view = store.get_run("run_demo")
    instances = list(view.stream("instances", InstanceRecord))
    assert [i.instance_id for i in instances] == ["inst_001", "inst_002", "inst_003", "inst_004"]
    assert sum(i.status == "passed" for i in instances) == summary.pass_count
    assert all(s.step_name for s in view.stream("steps", StepRecord))
    assert all(isinstance(a.passed, bool) for a in view.stream("assertions", AssertionRecord))
    assert all(
        line.level == "info" or line.level == "error" for line in view.stream("logs", LogLine)
    )
    refs = list(view.stream("artifacts", ArtifactRef))
    assert {r.name for r in refs} == {r.name for r in view.artifacts()}


# -- reading ---------------------------------------------------------------------------


def test_reading_parses_each_record_into_the_model(store: runstore.Store) -> None:
    with store.create_run(run_id="run_read") as run:
        outputs = run.stream("phase_outputs", PhaseOutput)
        for n in range(3):
            outputs.append({"phase": f"p{n}", "artifact": f"a{n}.json", "sourceLanguage": "de"})
    reader = store.get_run("run_read").stream("phase_outputs", PhaseOutput)
    parsed = list(reader)
    assert [p.phase for p in parsed] == ["p0", "p1", "p2"]
    assert all(p.source_language == "de" for p in parsed)
    assert list(reader.read()) == parsed


def test_a_stored_record_that_does_not_match_names_its_position(store: runstore.Store) -> None:
    with store.create_run(run_id="run_mismatch") as run:
        run.append("phase_outputs", {"phase": "a", "artifact": "a.json"})
        run.append("phase_outputs", {"phase": "b"})
    reader = store.get_run("run_mismatch").stream("phase_outputs", PhaseOutput)
    with pytest.raises(InvalidInputError) as info:
        list(reader)
    assert info.value.details["record"] == 2
    assert "record 2 of stream 'phase_outputs'" in info.value.message


def test_async_typed_streams() -> None:
    async def main() -> None:
        async with runstore.aio.open(f"memory://typed-aio-{next(_names)}") as store:
            run = await store.create_run(run_id="run_async")
            async with run:
                outputs = run.stream("phase_outputs", PhaseOutput)
                await outputs.append({"phase": "p", "artifact": "a.json"})
                with pytest.raises(InvalidInputError):
                    await outputs.append({"phase": "p"})
            view = await store.get_run("run_async")
            parsed = [p async for p in view.stream("phase_outputs", PhaseOutput)]
            assert parsed == [PhaseOutput(phase="p", artifact="a.json")]

    asyncio.run(main())


# -- JSON Schema ---------------------------------------------------------------------------


def test_schemas_cover_the_standard_streams_and_documents() -> None:
    schemas = runstore.streams.schemas()
    assert list(schemas) == [
        "instances",
        "steps",
        "assertions",
        "logs",
        "artifacts",
        "manifest",
        "state",
        "summary",
    ]
    for name, schema in schemas.items():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["title"].startswith(name)
    assert "step_name" in schemas["steps"]["required"]
    assert schemas["steps"]["additionalProperties"] is True
    assert schemas["manifest"]["additionalProperties"] is False


def test_stored_files_validate_against_their_schemas(store: runstore.Store) -> None:
    from runstore.cli.demo import run_demo

    run_demo(store, seed=5, instances=3, run_id="run_schema")
    view = store.get_run("run_schema")
    for stream in ("instances", "steps", "assertions", "logs", "artifacts"):
        validator = jsonschema.Draft202012Validator(runstore.streams.schema(stream))
        records = list(view.read(stream))
        assert records
        for record in records:
            validator.validate(record)
    documents: dict[str, Any] = {
        "manifest": view.manifest.model_dump(mode="json"),
        "state": view.state.model_dump(mode="json"),
        "summary": view.summary.model_dump(mode="json") if view.summary else None,
    }
    for name, document in documents.items():
        jsonschema.Draft202012Validator(runstore.streams.schema(name)).validate(document)


def test_a_record_missing_a_required_field_fails_schema_validation() -> None:
    validator = jsonschema.Draft202012Validator(runstore.streams.schema("assertions"))
    assert not validator.is_valid({"name": "total"})
    assert validator.is_valid({"name": "total", "passed": True, "extra": [1, 2]})


def test_schema_of_a_user_model_uses_its_aliases() -> None:
    schema = runstore.streams.schema_of(PhaseOutput)
    assert "sourceLanguage" in schema["properties"]
    assert schema["required"] == ["phase", "artifact"]


def test_an_unknown_schema_name_lists_the_known_ones() -> None:
    with pytest.raises(NotFoundError) as info:
        runstore.streams.schema("phase_outputs")
    assert "instances" in info.value.message
