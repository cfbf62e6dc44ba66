"""Retention policies and garbage collection (``runstore gc``).

A policy selects finished runs to delete; live runs (``created``,
``running``) and runs carrying a protected tag (``pinned`` by default) are
never selected. Policies come from keyword arguments or a TOML/JSON file::

    # retention.toml
    older_than = "30d"      # finished more than 30 days ago
    keep_last = 50          # always keep the newest 50 runs
    statuses = ["failed", "cancelled", "crashed"]
    max_total_bytes = 10_000_000_000
    keep_tags = ["pinned", "baseline"]

Log streams carry their own retention, declared when the run is created::

    store.create_run(..., log_retention={"logs": 7, "debug": 1})

Each stream's :class:`~runstore.model.run.LogRef` (:func:`log_refs`) carries its
``retention_days``. Once the run has finished that many days ago,
:func:`expire_streams` (every ``runstore gc``) deletes the stream through
:meth:`~runstore.spi.backends.LogBackend.delete_stream`; the rest of the run
stays, and ``runstore verify`` knows the stream went on purpose. Pinned runs
keep their streams; a backend that cannot delete one stream keeps it.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runstore.aio import AsyncRunView, AsyncStore
from runstore.model.errors import ConflictError, InvalidInputError, NotFoundError, UnsupportedError
from runstore.model.run import TERMINAL_STATUSES, LogRef, RunStatus, utcnow
from runstore.ops.damage import DAMAGE, DamageHandler, Damages
from runstore.spi.layout import ARTIFACTS_STREAM, stream_path

__all__ = [
    "Candidate",
    "ExpiredStream",
    "RetentionPolicy",
    "collect_garbage",
    "expire_streams",
    "expired_streams",
    "log_refs",
    "parse_age",
    "run_bytes",
]

_AGE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """``"30d"``, ``"12h"``, ``"2w"``, ``"90m"`` -> timedelta."""
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise InvalidInputError(
            f"invalid age {text!r}: use a number and a unit s, m, h, d or w (e.g. '30d')",
            details={"age": text},
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


class RetentionPolicy(BaseModel):
    """Which finished runs ``gc`` deletes. Unset rules do not select anything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    older_than: timedelta | None = None
    keep_last: int | None = Field(default=None, ge=0)
    statuses: list[RunStatus] | None = None
    max_total_bytes: int | None = Field(default=None, ge=0)
    keep_tags: list[str] = Field(default_factory=lambda: ["pinned"])

    @field_validator("older_than", mode="before")
    @classmethod
    def _age(cls, value: object) -> object:
        return parse_age(value) if isinstance(value, str) else value

    @classmethod
    def from_file(cls, path: str | Path) -> RetentionPolicy:
        """Read a policy from a ``.toml`` or ``.json`` file."""
        source = Path(path)
        try:
            raw = source.read_bytes()
            data = tomllib.loads(raw.decode()) if source.suffix == ".toml" else orjson.loads(raw)
            return cls.model_validate(data)
        except FileNotFoundError:
            raise NotFoundError(f"retention policy file {str(source)!r} not found") from None
        except (ValidationError, tomllib.TOMLDecodeError, orjson.JSONDecodeError) as exc:
            raise InvalidInputError(
                f"invalid retention policy in {str(source)!r}: {exc}", details={"path": str(source)}
            ) from None

    @property
    def selects_anything(self) -> bool:
        return (
            self.older_than is not None
            or self.keep_last is not None
            or self.max_total_bytes is not None
        )


@dataclass(frozen=True)
class Candidate:
    """A run ``gc`` deletes (or would delete, in a dry run) and why."""

    run_id: str
    reason: str
    bytes: int
    """What the run holds: its artifacts and its streams."""


@dataclass(frozen=True)
class ExpiredStream:
    """A log stream whose retention has expired: ``gc`` deletes it (the run stays)."""

    run_id: str
    stream: str
    reason: str
    bytes: int


def _fmt_age(age: timedelta) -> str:
    if age.days:
        return f"{age.days}d"
    hours, rest = divmod(int(age.total_seconds()), 3600)
    return f"{hours}h" if hours else f"{rest // 60}m"


async def run_bytes(store: AsyncStore, run_id: str) -> int:
    """Bytes a run holds: its artifacts (as recorded) and its streams (as stored)."""
    view = await store.get_run(run_id)
    if view.summary is not None:
        artifact_bytes = view.summary.artifact_bytes
    else:
        artifact_bytes = sum(ref.size for ref in await view.artifacts())
    streams = [await store.log_backend.stream_size(run_id, s) for s in await view.streams()]
    return artifact_bytes + sum(streams)


async def log_refs(view: AsyncRunView) -> list[LogRef]:
    """A reference to each stream of the run, carrying its retention.

    ``retention_days`` comes from the run's manifest (``log_retention``, given
    to ``create_run``); ``record_count`` from the summary once the run finished.
    """
    counts = view.summary.stream_counts if view.summary is not None else {}
    retention = view.manifest.log_retention
    return [
        LogRef(
            run_id=view.run_id,
            stream=stream,
            location=stream_path(view.run_id, stream),
            record_count=counts.get(stream),
            retention_days=retention.get(stream),
        )
        for stream in await view.streams()
        if stream != ARTIFACTS_STREAM
    ]


def expired_streams(view: AsyncRunView, now: datetime) -> dict[str, int]:
    """Streams of a finished run whose retention has run out: ``name -> retention_days``."""
    state = view.state
    if not state.is_terminal:
        return {}
    finished = state.finished_at or state.updated_at
    return {
        stream: days
        for stream, days in view.manifest.log_retention.items()
        if now - finished >= timedelta(days=days)
    }


async def collect_garbage(
    store: AsyncStore,
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    on_damage: DamageHandler | None = None,
) -> list[Candidate]:
    """Delete the runs ``policy`` selects; return what went (or would go, in a dry run).

    Candidates are finished runs, without a protected tag, of the selected
    statuses, and not among the newest ``keep_last`` runs of those statuses.
    Of these, a run goes when it finished more than ``older_than`` ago, when
    ``keep_last`` is the only rule, or, oldest first, while the store holds
    more than ``max_total_bytes``. A run that came back to life (resumed)
    meanwhile is kept: deletion never forces.

    A damaged run (one that cannot be read, see :mod:`runstore.ops.damage`) is
    never deleted: it is reported to ``on_damage``, counts as 0 bytes, and the
    other runs are collected all the same.
    """
    if not policy.selects_anything:
        raise InvalidInputError(
            "the retention policy selects nothing: set older_than, keep_last or max_total_bytes"
        )
    now = now or utcnow()
    damages = Damages(store, on_damage)
    out = await _select(store, policy, now, damages)
    if not dry_run:
        out = await _delete(store, out, damages)
    damages.raise_unhandled()
    return out


async def _size(store: AsyncStore, run_id: str, damages: Damages) -> int:
    """:func:`run_bytes`, or 0 for a damaged run (reported) or one deleted meanwhile."""
    try:
        return await run_bytes(store, run_id)
    except NotFoundError as exc:
        await damages.gone(run_id, exc)
    except DAMAGE as exc:
        damages.report(run_id, exc)
    return 0


async def _select(
    store: AsyncStore, policy: RetentionPolicy, now: datetime, damages: Damages
) -> list[Candidate]:
    records = await store.list_runs()  # newest first
    protected = set(policy.keep_tags)
    considered = [r for r in records if policy.statuses is None or r.status in policy.statuses]
    newest = {r.run_id for r in considered[: policy.keep_last]} if policy.keep_last else set()
    eligible = [
        r
        for r in considered
        if r.status in TERMINAL_STATUSES
        and not protected.intersection(r.tags)
        and r.run_id not in newest
    ]
    chosen: dict[str, str] = {}
    keep_last_alone = policy.older_than is None and policy.max_total_bytes is None
    for record in eligible:
        if policy.keep_last is not None and keep_last_alone:
            chosen[record.run_id] = f"not among the newest {policy.keep_last}"
        finished = record.finished_at or record.updated_at
        if policy.older_than is not None and now - finished > policy.older_than:
            chosen[record.run_id] = f"finished {_fmt_age(now - finished)} ago"
    sizes = {r.run_id: await _size(store, r.run_id, damages) for r in eligible}
    eligible = [r for r in eligible if r.run_id not in damages]
    if policy.max_total_bytes is not None:
        total = sum(
            [
                sizes[r.run_id] if r.run_id in sizes else await _size(store, r.run_id, damages)
                for r in records
            ]
        )
        total -= sum(sizes[run_id] for run_id in chosen)
        for record in reversed(eligible):  # oldest first
            if total <= policy.max_total_bytes:
                break
            if record.run_id not in chosen:
                chosen[record.run_id] = f"store over {policy.max_total_bytes} bytes"
                total -= sizes[record.run_id]
    return [
        Candidate(r.run_id, chosen[r.run_id], sizes[r.run_id])
        for r in eligible
        if r.run_id in chosen
    ]


async def _delete(store: AsyncStore, chosen: list[Candidate], damages: Damages) -> list[Candidate]:
    deleted = []
    for candidate in chosen:
        try:
            await store.delete_run(candidate.run_id)  # refuses a run that is live again
        except ConflictError:
            continue
        except NotFoundError:
            pass  # deleted by someone else meanwhile: gone all the same
        except DAMAGE as exc:
            damages.report(candidate.run_id, exc)
            continue
        deleted.append(candidate)
    return deleted


async def expire_streams(
    store: AsyncStore,
    policy: RetentionPolicy | None = None,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    skip: Collection[str] = (),
    on_damage: DamageHandler | None = None,
) -> list[ExpiredStream]:
    """Delete the log streams of finished runs whose retention has expired.

    A stream's retention is declared when the run is created
    (``create_run(..., log_retention={"logs": 7})``) and counts from the
    run's finish. Live runs, runs with one of ``policy.keep_tags`` and runs
    in ``skip`` are left alone; the rest of each run stays. A backend that
    cannot delete a single stream is skipped (its streams stay). A damaged
    run is reported to ``on_damage`` and the other runs' streams expire all
    the same (see :mod:`runstore.ops.damage`).
    """
    now = now or utcnow()
    protected = set(policy.keep_tags if policy is not None else RetentionPolicy().keep_tags)
    damages = Damages(store, on_damage)
    out: list[ExpiredStream] = []
    for record in await store.list_runs(status=sorted(TERMINAL_STATUSES)):  # type: ignore[arg-type]
        if record.run_id in skip or protected.intersection(record.tags):
            continue
        try:
            out += await _expire_run(store, record.run_id, now, dry_run=dry_run)
        except NotFoundError as exc:
            await damages.gone(record.run_id, exc)
        except DAMAGE as exc:
            damages.report(record.run_id, exc)
    damages.raise_unhandled()
    return out


async def _expire_run(
    store: AsyncStore, run_id: str, now: datetime, *, dry_run: bool
) -> list[ExpiredStream]:
    view = await store.get_run(run_id)
    expired = expired_streams(view, now)
    if not expired:
        return []
    present = set(await view.streams())
    finished = view.state.finished_at or view.state.updated_at
    out = []
    for stream, days in sorted(expired.items()):
        if stream not in present:
            continue
        size = await store.log_backend.stream_size(run_id, stream)
        if not dry_run:
            try:
                await store.log_backend.delete_stream(run_id, stream)
            except UnsupportedError:
                continue
        reason = f"retention {days}d; run finished {_fmt_age(now - finished)} ago"
        out.append(ExpiredStream(run_id, stream, reason, size))
    return out
