"""Store maintenance: recover runs whose writer died, verify runs, compare runs.

These are the library functions behind ``runstore recover``, ``runstore
verify`` and ``runstore diff``; each works on any backend through the public
async API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from runstore.aio import AsyncRunView, AsyncStore
from runstore.engine.core import RunCore
from runstore.model.checks import ContentCheck
from runstore.model.errors import ConflictError, CorruptError, NotFoundError, RunstoreError
from runstore.model.records import DamagedLines
from runstore.model.run import ArtifactRef, utcnow
from runstore.ops.damage import DAMAGE, DamageHandler, Damages, ReportsDamagedRuns, damaged_run
from runstore.ops.retention import expired_streams
from runstore.reading import readable_artifacts
from runstore.spi.layout import ARTIFACTS_STREAM

__all__ = [
    "DAMAGE_LISTED",
    "DEFAULT_STALE_AFTER",
    "Difference",
    "Problem",
    "Recovery",
    "diff_runs",
    "recover_runs",
    "reindex",
    "verify_run",
]

DEFAULT_STALE_AFTER = timedelta(minutes=5)
"""A live run whose heartbeat is older than this is taken for dead (10 missed beats)."""

DAMAGE_LISTED = 100
"""Damaged lines ``verify_run`` lists per stream; one more problem counts the rest."""

_END = object()
_VOLATILE_KEYS = frozenset(
    {"ts", "timestamp", "duration_ms", "run_id", "runstore_version", "revision"}
)


# -- recover ----------------------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    """What ``recover_runs`` did (or would do) to one run."""

    run_id: str
    action: Literal["marked_crashed", "alive", "skipped"]
    torn_bytes: dict[str, int] = field(default_factory=dict)
    """Bytes of torn tail repaired (or found, in a dry run) per stream."""
    reason: str = ""


async def _repair_tails(store: AsyncStore, view: AsyncRunView) -> None:
    for stream in await view.streams():
        writer = await store.log_backend.open_writer(view.run_id, stream)
        await writer.close()


async def recover_runs(
    store: AsyncStore,
    *,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    now: datetime | None = None,
    run_ids: Collection[str] | None = None,
    dry_run: bool = False,
    on_damage: DamageHandler | None = None,
) -> list[Recovery]:
    """Mark runs whose writer died ``crashed``, repairing their torn tails.

    A run is dead when it is ``created`` or ``running`` and its heartbeat is
    older than ``stale_after``. Its summary is rebuilt from the stored
    streams. A run the index still lists as live although it finished (its
    writer died between the two writes) gets its index entry brought up to
    date. Idempotent: a second call finds nothing to do. A writer that comes
    back in between wins (its state write makes ours a conflict, and the run
    is reported ``alive``).

    A damaged run (one that cannot be read) is reported to ``on_damage`` and
    left out of the result; the other runs are recovered all the same (see
    :mod:`runstore.ops.damage`).
    """
    now = now or utcnow()
    if run_ids is None:
        records = await store.list_runs(status=["created", "running"])
        candidates = [r.run_id for r in records]
    else:
        candidates = list(run_ids)
    damages = Damages(store, on_damage)
    results: list[Recovery] = []
    for run_id in candidates:
        try:
            view = await store.get_run(run_id)
            results += await _recover_run(
                store,
                view,
                stale_after=stale_after,
                now=now,
                listed=run_ids is None,
                dry_run=dry_run,
            )
        except NotFoundError as exc:
            if run_ids is not None:
                raise  # asked for by name: a run that is not there
            await damages.gone(run_id, exc)
        except DAMAGE as exc:
            damages.report(run_id, exc)
    damages.raise_unhandled()
    return results


async def _recover_run(
    store: AsyncStore,
    view: AsyncRunView,
    *,
    stale_after: timedelta,
    now: datetime,
    listed: bool,
    dry_run: bool,
) -> list[Recovery]:
    run_id, state = view.run_id, view.state
    if state.status not in ("created", "running"):
        reason = f"run is {state.status}"
        if listed and not dry_run:
            # Listed as live, stored as finished: its writer died between writing
            # state.json and the index entry. Rewriting the state re-indexes it.
            lagging = RunCore(store.core, view.manifest, state, live=False)
            await lagging.write_state(notify=False, summary=view.summary)
            reason += "; its index entry, left behind by a crash, is brought up to date"
        return [Recovery(run_id, "skipped", reason=reason)]
    beat = state.heartbeat_at or state.updated_at
    interval = timedelta(seconds=state.heartbeat_seconds or 0)
    if stale_after < 2 * interval:  # a live writer between two beats would look dead
        reason = (
            f"stale_after {stale_after} is shorter than twice its writer's heartbeat "
            f"interval ({interval}): its writer may be alive"
        )
        return [Recovery(run_id, "skipped", reason=reason)]
    if not state.heartbeat_stale(now, stale_after):
        return [Recovery(run_id, "alive", reason=f"heartbeat {beat.isoformat()}")]
    # Reading every stream once reports its torn tail.
    run = RunCore(store.core, view.manifest, state, live=False)
    await run.restore(view)
    torn = {s: n for s, n in view.torn_tails.items() if n}
    if dry_run:
        return [Recovery(run_id, "marked_crashed", torn, reason="dry run")]
    try:
        await _repair_tails(store, view)
        await run.finish("crashed", error=f"writer stopped; last heartbeat {beat.isoformat()}")
    except ConflictError as exc:
        return [Recovery(run_id, "alive", reason=exc.message)]
    return [Recovery(run_id, "marked_crashed", torn, reason=f"heartbeat {beat.isoformat()}")]


# -- reindex ----------------------------------------------------------------------


async def reindex(store: AsyncStore, *, on_damage: DamageHandler | None = None) -> int:
    """Rebuild the store's run index from the runs themselves; return how many it holds.

    The local backend's index follows its run folders by itself (folders
    copied in or deleted by hand show up at the next listing); this rebuilds
    it from scratch, e.g. after restoring a backup. A run the backend cannot
    read is left out of the index and reported to ``on_damage`` (raised once
    the index is rebuilt, without it; see :mod:`runstore.ops.damage`).
    """
    backend = store.state_backend
    count = await backend.rebuild_index()
    damages = Damages(store, on_damage)
    if isinstance(backend, ReportsDamagedRuns):
        for run_id, exc in sorted(backend.damaged_runs().items()):
            damages.report(run_id, exc)
    damages.raise_unhandled()
    return count


# -- verify -----------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One inconsistency ``verify_run`` found."""

    run_id: str
    where: str
    message: str
    line: int | None = None
    """The line of a stream (``where``) the problem is at, if it is one line's."""
    code: str | None = None
    """The typed error's code when the problem is one (``corrupt``, ``not_found``, ...)."""

    def __str__(self) -> str:
        return f"{self.run_id}/{self.where}: {self.message}"


def _damage(view: AsyncRunView, stream: str, damaged: DamagedLines) -> list[Problem]:
    """One problem per damaged line (the first :data:`DAMAGE_LISTED`), one for the rest."""
    where = f"{stream}.jsonl"
    found = [Problem(view.run_id, where, str(d), d.line) for d in damaged[:DAMAGE_LISTED]]
    if damaged.total > len(found):
        more = damaged.total - len(found)
        found.append(Problem(view.run_id, where, f"and {more} more damaged lines"))
    if view.torn_tails.get(stream):
        found.append(Problem(view.run_id, where, f"torn tail of {view.torn_tails[stream]} bytes"))
    return found


async def _read_streams(
    view: AsyncRunView,
) -> tuple[dict[str, int], tuple[int, int], list[Problem]]:
    """Records per stream (but artifacts), instances passed and failed, problems met."""
    problems: list[Problem] = []
    counts: dict[str, int] = {}
    passed = failed = 0
    for stream in await view.streams():
        if stream == ARTIFACTS_STREAM:
            continue  # read with the artifact references
        counted = 0
        try:
            async for batch in view.read_batches(stream, errors="skip"):
                counted += len(batch)
                if stream == "instances":
                    for record in batch:
                        status = record.get("status") if isinstance(record, dict) else None
                        passed += status == "passed"
                        failed += status == "failed"
        except CorruptError as exc:  # the backend could not read it at all
            problems.append(Problem(view.run_id, f"{stream}.jsonl", exc.message))
            continue
        damaged = view.damaged.get(stream, DamagedLines())
        problems += _damage(view, stream, damaged)
        counts[stream] = counted + damaged.total
    return counts, (passed, failed), problems


async def verify_run(store: AsyncStore, run_id: str) -> list[Problem]:
    """Re-hash every artifact, parse every stream, check snapshots against streams.

    Every damaged line of every stream is a problem of its own, naming its
    line number and what is wrong (at most :data:`DAMAGE_LISTED` per stream,
    then how many more); the other checks go on past them. A damaged line
    counts as a record when the summary's counts are checked. A run that
    cannot be read at all (a garbage ``state.json``, a symbolic link in place
    of its directory) is one problem carrying the typed error's ``code``, its
    path and cause (:func:`~runstore.ops.damage.damaged_run`).
    """
    try:
        return await _verify(store, run_id)
    except DAMAGE as exc:
        error = damaged_run(store, run_id, exc)
        # the damaged file: local backends name it, object stores give its key
        where = str(exc.details.get("file") or exc.details.get("key") or "run").rsplit("/")[-1]
        return [Problem(run_id, where, error.message, code=error.code)]


async def _verify(store: AsyncStore, run_id: str) -> list[Problem]:
    try:
        view = await store.get_run(run_id)
    except NotFoundError as exc:
        return [Problem(run_id, "manifest.json", exc.message, code=exc.code)]
    counts, (passed, failed), problems = await _read_streams(view)
    refs: list[ArtifactRef] = []
    try:
        refs, unreadable = await readable_artifacts(view)
        problems += _damage(view, ARTIFACTS_STREAM, unreadable)
    except (CorruptError, ValueError) as exc:
        problems.append(Problem(run_id, "artifacts.jsonl", str(exc)))
    for ref in refs:
        where = f"artifacts/{ref.name}"
        check = ContentCheck(ref)
        try:
            async for chunk in store.artifact_backend.read_chunks(run_id, ref.name):
                check.update(chunk)
        except RunstoreError as exc:
            problems.append(Problem(run_id, where, exc.message))
            continue
        mismatch = check.mismatch()
        if mismatch is not None:
            problems.append(Problem(run_id, where, mismatch))
    summary, state = view.summary, view.state
    if state.is_terminal and summary is None and state.status != "crashed":
        problems.append(Problem(run_id, "summary.json", f"missing for a {state.status} run"))
    if summary is not None:
        expected = {k: v for k, v in counts.items() if k != ARTIFACTS_STREAM}
        # a stream deleted by its log retention (runstore gc) is gone on purpose
        for stream in expired_streams(view, utcnow()):
            if stream not in counts and stream in summary.stream_counts:
                expected[stream] = summary.stream_counts[stream]
        if summary.stream_counts != expected:
            problems.append(
                Problem(
                    run_id, "summary.json", f"stream counts {summary.stream_counts} != {expected}"
                )
            )
        if (summary.pass_count, summary.fail_count) != (passed, failed):
            problems.append(
                Problem(
                    run_id,
                    "summary.json",
                    f"pass/fail {summary.pass_count}/{summary.fail_count} "
                    f"!= instances {passed}/{failed}",
                )
            )
        if summary.artifact_count != len(refs):
            problems.append(
                Problem(
                    run_id,
                    "summary.json",
                    f"artifact count {summary.artifact_count} != {len(refs)}",
                )
            )
        if summary.status != state.status:
            problems.append(
                Problem(run_id, "state.json", f"status {state.status} != summary {summary.status}")
            )
    return problems


# -- diff -------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """One place where two runs differ."""

    where: str
    left: Any
    right: Any

    def __str__(self) -> str:
        return f"{self.where}: {self.left!r} != {self.right!r}"


def _stable(value: Any) -> Any:
    """Drop what legitimately differs between two identical runs: times, ids."""
    if isinstance(value, dict):
        return {
            k: _stable(v)
            for k, v in value.items()
            if k not in _VOLATILE_KEYS and not k.endswith("_at")
        }
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


async def _records(view: AsyncRunView, stream: str) -> AsyncIterator[Any]:
    async for record in view.read(stream):
        yield _stable(record)


async def diff_runs(
    left: AsyncRunView, right: AsyncRunView, *, limit: int = 100
) -> list[Difference]:
    """Structural and content differences, ignoring timestamps and run ids.

    Empty when the runs match (e.g. two runs with the same seed and config).
    Stops after ``limit`` differences.
    """
    out: list[Difference] = []
    for name, a, b in (
        (
            "manifest.json",
            left.manifest.model_dump(mode="json"),
            right.manifest.model_dump(mode="json"),
        ),
        ("state.json", {"status": left.state.status}, {"status": right.state.status}),
        (
            "summary.json",
            left.summary and left.summary.model_dump(mode="json"),
            right.summary and right.summary.model_dump(mode="json"),
        ),
    ):
        if _stable(a) != _stable(b):
            out.append(Difference(name, _stable(a), _stable(b)))
    left_streams, right_streams = set(await left.streams()), set(await right.streams())
    for stream in sorted(left_streams ^ right_streams):
        out.append(Difference(f"{stream}.jsonl", stream in left_streams, stream in right_streams))
    for stream in sorted((left_streams & right_streams) - {ARTIFACTS_STREAM}):
        left_records, right_records = _records(left, stream), _records(right, stream)
        line = 0
        while len(out) < limit:
            line += 1
            mine: Any = await anext(left_records, _END)
            theirs: Any = await anext(right_records, _END)
            if mine is _END and theirs is _END:
                break
            if mine != theirs:
                out.append(
                    Difference(
                        f"{stream}.jsonl line {line}",
                        None if mine is _END else mine,
                        None if theirs is _END else theirs,
                    )
                )
    a_refs = {r.name: r.sha256 for r in await left.artifacts()}
    b_refs = {r.name: r.sha256 for r in await right.artifacts()}
    for name in sorted(a_refs.keys() | b_refs.keys()):
        if a_refs.get(name) != b_refs.get(name):
            out.append(Difference(f"artifacts/{name}", a_refs.get(name), b_refs.get(name)))
    return out[:limit]
