"""The domain model: what runstore persists about a run.

Optional lists follow one rule everywhere: ``None`` means unknown or not
given, ``[]`` means known to be empty.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt

__all__ = [
    "TERMINAL_STATUSES",
    "ArtifactKind",
    "ArtifactRef",
    "LogRef",
    "Metadata",
    "MetadataValue",
    "PhaseProgress",
    "PhaseStatus",
    "RunManifest",
    "RunRecord",
    "RunState",
    "RunStatus",
    "RunSummary",
    "Scalar",
    "utcnow",
]

RunStatus = Literal["created", "running", "succeeded", "failed", "cancelled", "crashed"]
"""Lifecycle of a run: ``created`` -> ``running`` -> one terminal status."""

TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "crashed"})

ArtifactKind = Literal["phase_output", "intermediate", "qa_report", "export", "log", "raw"]
"""Taxonomy of artifacts: what a pipeline or harness produced the file as."""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (every timestamp runstore writes)."""
    return datetime.now(UTC)


Scalar = str | int | float | bool | None
"""A JSON scalar."""

MetadataValue = Scalar | list[Scalar]
"""A metadata value: a JSON scalar or a list of scalars (:mod:`runstore.model.metadata`)."""

Metadata = dict[str, MetadataValue]
"""A run's metadata: the caller's labels, indexed and filterable (``metadata.<key>``)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunManifest(_Model):
    """Immutable metadata written once when the run is created (``manifest.json``)."""

    run_id: str
    timestamp: datetime
    sut_name: str | None = None
    scenario_ids: list[str] | None = None
    seed: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    """The tags the run was created with (the current ones are in :class:`RunState`)."""
    metadata: Metadata = Field(default_factory=dict)
    """The metadata the run was created with (the current ones are in :class:`RunState`)."""
    correlation_id: str | None = None
    runstore_version: str | None = None
    log_retention: dict[str, NonNegativeInt] = Field(default_factory=dict)
    """Days each named stream is kept once the run has finished (``runstore gc``
    then deletes it, the rest of the run stays); an unnamed stream lives as long
    as the run. Each stream's :class:`LogRef` carries its ``retention_days``."""


PhaseStatus = Literal["pending", "running", "done", "failed", "skipped"]
"""Where one phase of a run stands (:class:`PhaseProgress`)."""


class PhaseProgress(_Model):
    """Progress of one phase of a run (pipeline step, test batch, ...)."""

    status: PhaseStatus = "pending"
    completed: int = 0
    total: int | None = None
    message: str | None = None


class RunState(_Model):
    """The current snapshot of a run (``state.json``).

    ``revision`` grows by one with every write; a write that does not build on
    the stored revision is refused (compare-and-swap), so two writers never
    silently overwrite each other.
    """

    run_id: str
    status: RunStatus = "created"
    revision: int = 0
    created_at: datetime
    updated_at: datetime
    heartbeat_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    phases: dict[str, PhaseProgress] = Field(default_factory=dict)
    error: str | None = None
    data: dict[str, Any] | None = None
    """The caller's own state (``run.set_state`` / ``update_state``): a JSON object,
    ``None`` while never set."""
    metadata: Metadata | None = None
    """The run's current metadata; ``None`` until changed after creation (then the
    manifest's is current). It may change after the run finished."""
    tags: list[str] | None = None
    """The run's current tags; ``None`` until changed after creation (like ``metadata``)."""
    owner: str | None = None
    """The ownership token (``host:pid:random``) of the writer that holds the run, or
    ``None`` when none does (finished, or its writer closed without finishing).
    Every state write is a compare-and-swap, so a writer whose run was taken over
    gets a conflict on its next write."""
    heartbeat_seconds: float | None = None
    """The owner's heartbeat interval (0: it sends none), so a reader can tell
    a stale heartbeat from a slow one."""

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def heartbeat_stale(self, now: datetime, stale_after: timedelta) -> bool:
        """The last heartbeat (or write) is older than ``stale_after``, or further
        than ``stale_after`` in the future (the writer's or reader's clock stepped):
        either way no writer can be counted on to be alive."""
        beat = self.heartbeat_at or self.updated_at
        age = now - beat
        return age >= stale_after or -age > stale_after


class RunSummary(_Model):
    """Final aggregates written when the run finishes (``summary.json``).

    An instance record counts by its ``status`` (``passed``, ``failed``,
    ``error``, ``skipped``) or, without one, by a boolean ``passed``.
    ``pass_rate`` is ``pass_count / (pass_count + fail_count + error_count)``
    (skipped instances are not judged), ``None`` when no instance was judged.
    ``metrics`` holds the last value of each metric logged with
    ``run.log_metric`` and the caller's aggregates given to ``run.finish``.
    """

    run_id: str
    status: RunStatus
    instance_count: int = 0
    pass_count: int = 0
    fail_count: int = 0
    error_count: int = 0
    skip_count: int = 0
    pass_rate: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    stream_counts: dict[str, int] = Field(default_factory=dict)
    artifact_count: int = 0
    artifact_bytes: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)


class RunRecord(_Model):
    """One run in the run index: the light record ``list_runs`` returns.

    Distinct from :class:`RunState`: it carries what listing and filtering
    need (status, times, sut, current tags and metadata, headline results and
    metrics) and nothing else.
    """

    run_id: str
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    sut_name: str | None = None
    scenario_ids: list[str] | None = None
    tags: list[str] = Field(default_factory=list)
    seed: int | None = None
    metadata: Metadata = Field(default_factory=dict)
    instance_count: int | None = None
    pass_count: int | None = None
    fail_count: int | None = None
    error_count: int | None = None
    skip_count: int | None = None
    pass_rate: float | None = None
    duration_ms: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)

    @classmethod
    def build(
        cls, manifest: RunManifest, state: RunState, summary: RunSummary | None = None
    ) -> RunRecord:
        """Derive the index record from a run's manifest, state and summary."""
        return cls(
            run_id=manifest.run_id,
            status=state.status,
            created_at=state.created_at,
            updated_at=state.updated_at,
            finished_at=state.finished_at,
            sut_name=manifest.sut_name,
            scenario_ids=manifest.scenario_ids,
            tags=manifest.tags if state.tags is None else state.tags,
            seed=manifest.seed,
            metadata=manifest.metadata if state.metadata is None else state.metadata,
            instance_count=summary.instance_count if summary else None,
            pass_count=summary.pass_count if summary else None,
            fail_count=summary.fail_count if summary else None,
            error_count=summary.error_count if summary else None,
            skip_count=summary.skip_count if summary else None,
            pass_rate=summary.pass_rate if summary else None,
            duration_ms=summary.duration_ms if summary else None,
            metrics=summary.metrics if summary else {},
        )


class ArtifactRef(_Model):
    """Reference to one stored, immutable artifact (a line of ``artifacts.jsonl``)."""

    run_id: str
    name: str
    kind: ArtifactKind = "raw"
    sha256: str
    size: int
    media_type: str = "application/octet-stream"
    created_at: datetime
    metadata: dict[str, Any] | None = None
    """The caller's metadata, stored with the artifact and immutable like its bytes."""
    uri: str | None = None
    """Where the bytes live, in the backend's own terms (``file:///...``, ``s3://...``):
    filled in when the reference is read (:meth:`ArtifactBackend.uri`), never stored."""


class LogRef(_Model):
    """Reference to one log stream of a run and how long it is kept.

    ``retention_days`` of ``None`` means kept as long as the run.
    """

    run_id: str
    stream: str
    location: str
    record_count: int | None = None
    retention_days: int | None = None
