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
    "INDEX_RECORDS_DIR",
    "INDEX_SNAPSHOT",
    "MANIFEST",
    "METRICS_STREAM",
    "SEGMENTS_DIR",
    "STATE",
    "STREAM_SUFFIX",
    "SUMMARY",
    "artifact_path",
    "dump_snapshot",
    "index_record_path",
    "manifest_path",
    "parse_segment_name",
    "segment_path",
    "segments_dir",
    "state_path",
    "stream_path",
    "summary_path",
]

MANIFEST: Final = "manifest.json"
STATE: Final = "state.json"
SUMMARY: Final = "summary.json"
ARTIFACTS_DIR: Final = "artifacts"
ARTIFACTS_STREAM: Final = "artifacts"
METRICS_STREAM: Final = "metrics"
"""Where ``run.log_metric`` appends (``name``, ``value``, ``step``, ``ts``)."""
STREAM_SUFFIX: Final = ".jsonl"
BOOKKEEPING_DIR: Final = ".runstore"
"""Per-store bookkeeping (index, locks); never a valid run id."""


SEGMENTS_DIR: Final = ".segments"
"""Per-run directory of stream segments (object stores without append).

``<run_id>/.segments/<stream>/<start>.jsonl`` holds the bytes of the logical
stream from byte ``start`` on (16 zero-padded digits, so names sort by
offset). When the run finishes they are compacted into ``<stream>.jsonl``,
which equals the segments concatenated, and removed.
"""
INDEX_RECORDS_DIR: Final = f"{BOOKKEEPING_DIR}/records"
"""One small index object per run: ``.runstore/records/<run_id>.json``."""
INDEX_SNAPSHOT: Final = f"{BOOKKEEPING_DIR}/records.snapshot.json"
"""A compacted copy of the per-run index objects (a cache; they stay the truth)."""
_SEGMENT_DIGITS: Final = 16


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


def segments_dir(run_id: str, stream: str) -> str:
    return f"{run_id}/{SEGMENTS_DIR}/{stream}"


def segment_path(run_id: str, stream: str, start: int) -> str:
    """The segment holding the stream's bytes from logical offset ``start`` on."""
    return f"{run_id}/{SEGMENTS_DIR}/{stream}/{start:0{_SEGMENT_DIGITS}d}{STREAM_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """The start offset of a segment file name (its last path component), or ``None``."""
    base = name.rsplit("/", 1)[-1]
    if not base.endswith(STREAM_SUFFIX):
        return None
    digits = base[: -len(STREAM_SUFFIX)]
    if len(digits) != _SEGMENT_DIGITS or not (digits.isascii() and digits.isdigit()):
        return None
    return int(digits)


def index_record_path(run_id: str) -> str:
    return f"{INDEX_RECORDS_DIR}/{run_id}.json"


def dump_snapshot(model: BaseModel) -> bytes:
    """Serialise a snapshot (manifest, state, summary) the same way on every backend."""
    data: Any = model.model_dump(mode="json")
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
