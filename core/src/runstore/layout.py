"""The on-disk layout every file-like backend produces (the Windtunnel tree).

One module so the local and the fsspec backends write the same tree::

    <root>/<run_id>/manifest.json
    <root>/<run_id>/state.json
    <root>/<run_id>/<stream>.jsonl          instances, steps, assertions, logs, artifacts, ...
    <root>/<run_id>/summary.json
    <root>/<run_id>/artifacts/<name>

Paths are POSIX strings relative to the store root. Names that cannot be run
ids (they start with ``.`` or ``_``) hold backend bookkeeping, so they never
collide with a run.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from pydantic import BaseModel

__all__ = [
    "ARTIFACTS_DIR",
    "ARTIFACTS_STREAM",
    "BOOKKEEPING_DIR",
    "MANIFEST",
    "STANDARD_STREAMS",
    "STATE",
    "SUMMARY",
    "artifact_path",
    "dump_snapshot",
    "manifest_path",
    "state_path",
    "stream_path",
    "summary_path",
]

MANIFEST: Final = "manifest.json"
STATE: Final = "state.json"
SUMMARY: Final = "summary.json"
ARTIFACTS_DIR: Final = "artifacts"
ARTIFACTS_STREAM: Final = "artifacts"
STREAM_SUFFIX: Final = ".jsonl"
BOOKKEEPING_DIR: Final = ".runstore"
"""Per-store bookkeeping (index, locks); never a valid run id."""

STANDARD_STREAMS: Final = ("instances", "steps", "assertions", "logs")


def manifest_path(run_id: str) -> str:
    return f"{run_id}/{MANIFEST}"


def state_path(run_id: str) -> str:
    return f"{run_id}/{STATE}"


def summary_path(run_id: str) -> str:
    return f"{run_id}/{SUMMARY}"


def stream_path(run_id: str, stream: str) -> str:
    return f"{run_id}/{stream}{STREAM_SUFFIX}"


def artifact_path(run_id: str, name: str) -> str:
    return f"{run_id}/{ARTIFACTS_DIR}/{name}"


def dump_snapshot(model: BaseModel) -> bytes:
    """Serialise a snapshot (manifest, state, summary) the same way on every backend."""
    data: Any = model.model_dump(mode="json")
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
