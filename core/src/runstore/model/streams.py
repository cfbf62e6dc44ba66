"""Schemas of a run's JSONL streams and JSON documents.

The standard streams have models here (:class:`InstanceRecord`,
:class:`StepRecord`, :class:`AssertionRecord`, :class:`LogLine`); each allows
extra fields, so a harness adds its own without declaring them.
:func:`schemas` exports a JSON Schema (draft 2020-12) for each standard
stream, for ``artifacts.jsonl`` and for the ``manifest``, ``state`` and
``summary`` documents, so tools in other languages can read the files;
``runstore schema`` prints or writes them. Typed handles that write and read
streams through these (or your own) models are in :mod:`runstore.streams`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from runstore.model.errors import NotFoundError
from runstore.model.run import ArtifactRef, RunManifest, RunState, RunSummary, utcnow

__all__ = [
    "DOCUMENTS",
    "JSON_SCHEMA_DIALECT",
    "STANDARD_STREAMS",
    "AssertionRecord",
    "InstanceRecord",
    "LogLine",
    "StepRecord",
    "StreamRecord",
    "schema",
    "schema_of",
    "schemas",
]

M = TypeVar("M", bound=BaseModel)

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


# -- the standard streams -------------------------------------------------------------


class StreamRecord(BaseModel):
    """Base of the standard stream models: extra fields are allowed and kept."""

    model_config = ConfigDict(extra="allow")


class InstanceRecord(StreamRecord):
    """One line of `instances.jsonl`: an instance (test case, work item) as it completed.

    `status` `passed` and `failed` are counted in the run's summary
    (`pass_count`, `fail_count`); any other status is stored as given.
    """

    instance_id: str = Field(description="Id of the instance, e.g. inst_001.")
    status: str | None = Field(
        default=None, description="passed, failed (both counted in the summary) or your own."
    )
    scenario_id: str | None = Field(default=None, description="Scenario the instance ran.")
    trace_id: str | None = Field(default=None, description="Trace / correlation id.")


class StepRecord(StreamRecord):
    """One line of `steps.jsonl`: one step of an instance, in execution order."""

    instance_id: str | None = Field(default=None, description="Instance the step belongs to.")
    step_name: str = Field(description="What the step did, e.g. login.")
    step_index: int | None = Field(default=None, description="Position in the instance, from 1.")
    step_id: str | None = Field(default=None, description="Id of the step scope it ran in.")
    scenario_id: str | None = Field(default=None, description="Scenario the instance ran.")
    observation: Any = Field(default=None, description="What the harness observed (any JSON).")
    trace_id: str | None = Field(default=None, description="Trace / correlation id.")


class AssertionRecord(StreamRecord):
    """One line of `assertions.jsonl`: one checked expectation."""

    instance_id: str | None = Field(default=None, description="Instance that was checked.")
    name: str = Field(description="Name of the assertion, e.g. total_matches_cart.")
    passed: bool = Field(description="Whether the expectation held.")
    expected: Any = Field(default=None, description="Expected value (any JSON).")
    actual: Any = Field(default=None, description="Actual value (any JSON).")
    message: str | None = Field(default=None, description="Explanation for humans.")
    step_name: str | None = Field(default=None, description="Step the assertion checked.")
    step_index: int | None = Field(default=None, description="Index of that step.")
    step_id: str | None = Field(default=None, description="Id of the step scope it ran in.")
    trace_id: str | None = Field(default=None, description="Trace / correlation id.")


class LogLine(StreamRecord):
    """One line of `logs.jsonl`: `run.log(...)` or a stdlib logging record.

    Named `LogLine` so it never shadows :class:`logging.LogRecord`.
    """

    ts: datetime = Field(default_factory=utcnow, description="When it was logged (UTC).")
    level: str = Field(description="debug, info, warning, error or critical (lower case).")
    message: str = Field(description="The message, formatted.")
    logger: str | None = Field(default=None, description="Name of the stdlib logger.")
    exc_text: str | None = Field(default=None, description="Formatted exception, if any.")
    stack: str | None = Field(default=None, description="Formatted stack, if requested.")
    instance_id: str | None = Field(default=None, description="Instance it was logged in.")
    step_id: str | None = Field(default=None, description="Step it was logged in.")
    trace_id: str | None = Field(default=None, description="Trace / correlation id.")


STANDARD_STREAMS: Final[Mapping[str, type[BaseModel]]] = {
    "instances": InstanceRecord,
    "steps": StepRecord,
    "assertions": AssertionRecord,
    "logs": LogLine,
    "artifacts": ArtifactRef,
}
"""Model of each stream runstore defines (``artifacts`` is written by runstore only)."""

DOCUMENTS: Final[Mapping[str, type[BaseModel]]] = {
    "manifest": RunManifest,
    "state": RunState,
    "summary": RunSummary,
}
"""Model of each JSON document of a run (``manifest.json``, ``state.json``, ``summary.json``)."""


# -- JSON Schema ----------------------------------------------------------------------


_RST_ROLE: Final = re.compile(r":[a-z]+:`~?([^`]+)`")


def _plain(text: str) -> str:
    """Docstring markup (``:class:`x```, double backticks) as plain Markdown-ish text."""
    return _RST_ROLE.sub(r"`\1`", text).replace("``", "`")


def _clean(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                node[key] = _plain(value)
            else:
                _clean(value)
    elif isinstance(node, list):
        for item in node:
            _clean(item)


def schema_of(model: type[BaseModel], *, title: str | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of records stored through ``model``."""
    body = model.model_json_schema(by_alias=True)
    _clean(body)
    if title is not None:
        body["title"] = title
    return {"$schema": JSON_SCHEMA_DIALECT, **body}


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema of a standard stream or document, by name (``steps``, ``summary``)."""
    model = STANDARD_STREAMS.get(name) or DOCUMENTS.get(name)
    if model is None:
        known = ", ".join([*STANDARD_STREAMS, *DOCUMENTS])
        raise NotFoundError(
            f"no schema named {name!r}; runstore defines: {known}",
            details={"name": name, "known": [*STANDARD_STREAMS, *DOCUMENTS]},
        )
    suffix = ".jsonl line" if name in STANDARD_STREAMS else ".json"
    return schema_of(model, title=f"{name}{suffix}")


def schemas() -> dict[str, dict[str, Any]]:
    """Every JSON Schema :func:`schema` knows, by name: the streams, then the documents."""
    return {name: schema(name) for name in [*STANDARD_STREAMS, *DOCUMENTS]}
