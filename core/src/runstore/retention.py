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
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runstore.aio import AsyncStore
from runstore.errors import InvalidInputError, NotFoundError
from runstore.models import RunRecord, RunStatus, utcnow

__all__ = ["Candidate", "RetentionPolicy", "collect_garbage", "parse_age"]

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


async def _run_bytes(store: AsyncStore, record: RunRecord) -> int:
    view = await store.get_run(record.run_id)
    return view.summary.artifact_bytes if view.summary else 0


async def collect_garbage(
    store: AsyncStore,
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[Candidate]:
    """Delete the runs ``policy`` selects (newest kept first); return what went."""
    if not policy.selects_anything:
        raise InvalidInputError(
            "the retention policy selects nothing: set older_than, keep_last or max_total_bytes"
        )
    now = now or utcnow()
    records = await store.list_runs()  # newest first
    protected = set(policy.keep_tags)
    chosen: dict[str, str] = {}
    eligible: list[RunRecord] = []
    for position, record in enumerate(records):
        if record.status in ("created", "running") or protected.intersection(record.tags):
            continue
        if policy.statuses is not None and record.status not in policy.statuses:
            continue
        if policy.keep_last is not None and position < policy.keep_last:
            continue
        eligible.append(record)
        if policy.keep_last is not None:
            chosen[record.run_id] = f"beyond the newest {policy.keep_last}"
        finished = record.finished_at or record.updated_at
        if policy.older_than is not None and now - finished > policy.older_than:
            chosen[record.run_id] = f"finished {now - finished} ago"
    sizes = {r.run_id: await _run_bytes(store, r) for r in eligible}
    if policy.max_total_bytes is not None:
        total = sum([await _run_bytes(store, r) for r in records])
        for record in reversed(eligible):  # oldest first
            if total <= policy.max_total_bytes:
                break
            if record.run_id not in chosen:
                chosen[record.run_id] = f"store over {policy.max_total_bytes} bytes"
            total -= sizes[record.run_id]
    out = [
        Candidate(r.run_id, chosen[r.run_id], sizes[r.run_id])
        for r in eligible
        if r.run_id in chosen
    ]
    if not dry_run:
        for candidate in out:
            await store.delete_run(candidate.run_id)
    return out
