"""The one owner of a run's write path, and the store it belongs to.

:class:`RunCore` holds everything a writer of one run keeps: its stream
writers, its record counters, its last state (and revision), the heartbeat
task and the summary once it finished. Every write of a run goes through it:
the async :class:`runstore.aio.AsyncRun`, the sync :class:`runstore.Run`,
the :mod:`runstore.logging` handler and the maintenance functions are faces
that only decide *how to wait* (await, the sync portal, or not at all).

Concurrency: a core is driven by one event loop (the caller's for the async
API, the private portal loop for the sync API), while the append fast path
(:meth:`RunCore.encode` + :meth:`RunCore.write`) may run in any thread. The
counters and the writer tables are guarded by one :class:`threading.Lock`
(uncontended it costs ~50 ns an append); state writes are serialised by an
:class:`asyncio.Lock` on the driving loop.

:class:`~runstore.engine.store.StoreCore` holds a store's backends, plugins
and policies and the runs it has open.

One class on purpose: :class:`RunCore` is the single owner of a run's write
path, so everything that writes a run (appends, state, labels, artifacts,
finishing) is in one place under one lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, get_args

from runstore.engine.fork import forked_error, guard
from runstore.engine.sources import as_artifact_source
from runstore.engine.sources import media_type as guess_media_type
from runstore.model.errors import ConflictError, InvalidInputError, RunstoreError
from runstore.model.metadata import (
    json_object,
    validate_metadata,
    validate_metric,
    validate_tags,
)
from runstore.model.names import validate_stream_name
from runstore.model.records import DamagedLines, ReadErrors, encode_record
from runstore.model.run import (
    ArtifactKind,
    ArtifactRef,
    PhaseProgress,
    PhaseStatus,
    RunManifest,
    RunRecord,
    RunState,
    RunStatus,
    RunSummary,
    utcnow,
)
from runstore.spi.backends import (
    StreamWriter,
)
from runstore.spi.layout import ARTIFACTS_STREAM, METRICS_STREAM

if TYPE_CHECKING:
    from runstore.engine.portal import Portal
    from runstore.engine.store import StoreCore

__all__ = ["RunCore", "outcome"]


_KINDS = frozenset(get_args(ArtifactKind))
_FINAL_STATUSES = ("succeeded", "failed", "cancelled", "crashed")


# -- a run's write path -----------------------------------------------------------------


class _Tally:
    """A record counter that appending threads bump without taking a lock.

    ``next()`` on an :func:`itertools.count` is one C call, atomic under the
    GIL, where ``d[k] += 1`` is not; a lock around it costs ~0.2 us an append,
    6% of the whole append path. Reading takes one tick, which is remembered;
    reads happen under the run's lock.
    """

    __slots__ = ("_reads", "_ticks", "bump")

    def __init__(self) -> None:
        self._ticks = itertools.count()
        self._reads = 0
        self.bump = self._ticks.__next__

    def value(self) -> int:
        value = next(self._ticks) - self._reads
        self._reads += 1
        return value

    def add(self, count: int) -> None:
        """``count`` more (under the run's lock, as reads are)."""
        self._reads -= count


LIVE_OWNERS: set[str] = set()
"""Ownership tokens of this process's writers that hold their run."""


class StoredRun(Protocol):
    """What :meth:`RunCore.restore` reads a stored run through (an ``AsyncRunView``)."""

    async def streams(self) -> list[str]: ...

    async def artifacts(self) -> list[ArtifactRef]: ...

    async def count_records(self, stream: str) -> int: ...

    def read_batches(self, stream: str, *, errors: ReadErrors) -> AsyncIterator[list[Any]]: ...

    @property
    def damaged(self) -> Mapping[str, DamagedLines]: ...


class RunCore:
    """Everything one writer of one run holds; the only code that writes a run.

    :param store: the store the run lives in.
    :param manifest: the run's manifest.
    :param state: the stored state this writer builds on.
    :param live: register with the store, so closing the store releases the run
        (maintenance works on detached cores).
    :param owner: the ownership token this writer writes into every state it
        writes (``None``: a detached core keeps the stored owner).
    """

    def __init__(
        self,
        store: StoreCore,
        manifest: RunManifest,
        state: RunState,
        *,
        live: bool = True,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.owner = owner
        if owner is not None:
            LIVE_OWNERS.add(owner)
        self.loop_bound = store.loop_bound
        """Appends take the slow path, which checks the loop (``StoreCore.check_loop``)."""
        self.manifest = manifest
        self.run_id = manifest.run_id
        self.state = state
        """The state snapshot this writer wrote last."""
        self.summary: RunSummary | None = None
        self.writers: dict[str, StreamWriter] = {}
        """Open writers of the caller's streams: the append fast path looks here only."""
        self._internal: dict[str, StreamWriter] = {}
        """Writers of streams runstore writes itself (``artifacts.jsonl``)."""
        self.portal: Portal | None = None
        """The sync API's loop, when a sync :class:`runstore.Run` drives this core."""
        self._lock = threading.Lock()
        self._tallies: dict[str, _Tally] = {}
        self._bumps: dict[str, Callable[[], int]] = {}
        """The fast path's counters: a stream's tally, once it has one."""
        self._outcomes = dict.fromkeys(_OUTCOMES, 0)
        self._metrics: dict[str, float] = {}
        """The last value of each metric (the ``metrics`` stream), for the summary."""
        self._open_instances: dict[str, int] = {}
        """Instance ids of open ``run.instance(...)`` scopes -> their records seen."""
        self._artifacts: dict[str, ArtifactRef] = {}
        self._state_lock: asyncio.Lock | None = None
        self._unconfirmed: RunState | None = None
        """A state whose write raised after it may have landed (see :meth:`write_state`)."""
        self._heartbeat: asyncio.Task[None] | None = None
        self._deleted = False
        self._lost: ConflictError | None = None
        """Why this writer no longer owns the run (another took it over), once it knows."""
        self._started_mono: float | None = None
        self._forked = False
        guard(self)
        if live:
            store.live.add(self)

    # -- what the faces read -----------------------------------------------------------

    @property
    def record_counts(self) -> dict[str, int]:
        """Records appended per stream by this writer."""
        return self._counts()

    def _counts(self) -> dict[str, int]:
        with self._lock:
            return {stream: tally.value() for stream, tally in self._tallies.items()}

    @property
    def released(self) -> bool:
        """The run finished, or its store released it: nothing more can be written."""
        return self.summary is not None or self not in self.store.live

    # -- appending: the fast path, in the caller's thread --------------------------------

    def write(self, writer: StreamWriter, stream: str, line: bytes, record: Any) -> bool:
        """Hand ``line`` to ``writer`` and count it; ``True`` if it is durable already.

        The faces encode ``record`` first (correlation ids, then
        :func:`~runstore.model.records.encode_record`, inlined there: the hot
        path). When it returns ``False`` the caller commits
        (:meth:`StreamWriter.commit`, or ``commit_sync``) before it acknowledges
        the record.
        """
        durable = writer.write(line)
        # written: counted even if the commit fails
        bump = self._bumps.get(stream)
        if bump is None:
            self.count(stream, record)
        else:
            bump()
        return durable

    def count(self, stream: str, record: Any) -> None:
        """Count one record written to ``stream``; instances by outcome, metrics by value."""
        with self._lock:
            self._tally(stream).bump()
            if stream == "instances":
                outcome = _outcome_of(record)
                if outcome is not None:
                    self._outcomes[outcome] += 1
                instance_id = _field(record, "instance_id")
                if instance_id in self._open_instances:
                    self._open_instances[instance_id] += 1
            elif stream == METRICS_STREAM:
                name, value = _field(record, "name"), _field(record, "value")
                if isinstance(name, str) and isinstance(value, int | float):
                    self._metrics[name] = float(value)

    def open_instance(self, instance_id: str) -> None:
        """A ``run.instance(id)`` scope opened: watch for the instance's own record."""
        with self._lock:
            self._open_instances.setdefault(instance_id, 0)

    def close_instance(self, instance_id: str) -> int:
        """The scope closed: how many records of the instance it saw."""
        with self._lock:
            return self._open_instances.pop(instance_id, 0)

    async def open_writer(self, stream: str, *, internal: bool = False) -> StreamWriter:
        """The writer of ``stream``, opened (and the run started) on first use."""
        self.store.check_loop()
        validate_stream_name(stream, allow_reserved=internal)
        writers = self._internal if internal else self.writers
        writer = writers.get(stream)
        if writer is not None:
            return writer
        if self.summary is not None:
            raise ConflictError(
                f"run {self.run_id!r} has finished; appends are refused",
                details={"run_id": self.run_id, "stream": stream},
            )
        self._check_not_deleted()
        await self.start()
        opened = await self.store.logs.open_writer(
            self.run_id, stream, durability=self.store.durability
        )
        with self._lock:
            writer = writers.setdefault(stream, opened)
        if writer is not opened:
            await opened.close()
        return writer

    async def flush(self) -> None:
        """Make every record written so far durable."""
        self.store.check_loop()
        for stream, writer in self._all_writers():
            await writer.commit()
            self._flushed(stream)

    def _all_writers(self) -> list[tuple[str, StreamWriter]]:
        with self._lock:
            return [*self.writers.items(), *self._internal.items()]

    def _flushed(self, stream: str) -> None:
        count = self._counts().get(stream, 0)
        self.store.plugins.stream_flushed(self.run_id, stream, count)

    # -- state ------------------------------------------------------------------------

    async def write_state(
        self,
        notify: bool = True,
        summary: RunSummary | None = None,
        *,
        beat: bool = True,
        touch: bool = True,
        edit: Callable[[RunState], dict[str, Any]] | None = None,
        **changes: Any,
    ) -> RunState:
        """Write the next state revision (compare-and-swap on the current one).

        :param beat: refresh ``heartbeat_at`` (a writer's own writes do; a change
            of labels by someone who does not own the run does not).
        :param touch: refresh ``updated_at``. Taking a run over and letting it
            go (``owner`` alone) change nothing of the run itself, nor of its
            index record, which a stateless caller would otherwise rewrite twice
            a call.
        :param edit: computes more changes from the state it builds on, so a
            write retried on a newer state (see below) applies to that state.

        Someone else may change the run's labels (metadata, tags) at any time,
        also while it is written: a write refused because the stored state
        differs from this writer's only in labels is rebuilt on the stored one.
        """
        self.store.check_loop()
        self._check_not_deleted()
        if self._state_lock is None:
            self._state_lock = asyncio.Lock()
        async with self._state_lock:
            while True:
                now = utcnow()
                base = self.state
                update = {**changes, **(edit(base) if edit is not None else {})}
                update["revision"] = base.revision + 1
                if touch:
                    update["updated_at"] = now
                if self.owner is not None and "owner" not in update:
                    update["owner"] = self.owner
                if beat:
                    update["heartbeat_at"] = now
                new = base.model_copy(update=update)
                record = RunRecord.build(self.manifest, new, summary or self.summary)
                try:
                    await self.store.state.write_state(
                        new, expected_revision=base.revision, record=record
                    )
                except ConflictError:
                    if self._adopt(await self._stored_state()):
                        continue
                    raise
                except BaseException:  # failed, or cancelled (a heartbeat at finish) mid-write
                    self._unconfirmed = new
                    raise
                self.state, self._unconfirmed = new, None
                break
        if notify:
            self.store.plugins.state_changed(new)
        return new

    async def set_data(self, data: dict[str, Any], *, merge: bool) -> RunState:
        """Replace (or shallowly merge into) the caller's state ``data``."""
        if self.summary is not None:
            raise ConflictError(
                f"run {self.run_id!r} has finished; its state data is final",
                details={"run_id": self.run_id},
            )

        def edit(base: RunState) -> dict[str, Any]:
            return {"data": {**(base.data or {}), **data} if merge else data}

        return await self.write_state(edit=edit)

    async def relabel(
        self,
        metadata: Mapping[str, Any] | None = None,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        beat: bool = True,
    ) -> RunState:
        """Merge ``metadata`` into the run's metadata, add and remove tags."""
        added, removed = validate_tags(add, "add"), validate_tags(remove, "remove")
        validate_metadata(metadata)  # refused before anything is written

        def edit(base: RunState) -> dict[str, Any]:
            changes: dict[str, Any] = {}
            if metadata:
                current = self.manifest.metadata if base.metadata is None else base.metadata
                changes["metadata"] = validate_metadata(metadata, base=current)
            if added or removed:
                current_tags = self.manifest.tags if base.tags is None else base.tags
                kept = [t for t in current_tags if t not in removed]
                changes["tags"] = kept + [t for t in added if t not in kept and t not in removed]
            return changes

        return await self.write_state(edit=edit, beat=beat, summary=self.summary)

    def _adopt(self, stored: RunState | None) -> bool:
        """Build on ``stored`` when it is this writer's own state after all, else ``False``.

        Two cases: a write of ours that raised late (a directory fsync after the
        rename, a heartbeat cancelled mid-write) but landed, and a change of
        labels someone else made meanwhile.
        """
        unconfirmed, self._unconfirmed = self._unconfirmed, None
        if stored is None:
            return False
        mine = [self.state] if unconfirmed is None else [self.state, unconfirmed]
        if stored == unconfirmed or any(_only_labels_differ(stored, m) for m in mine):
            self.state = stored
            return True
        return False

    async def _stored_state(self) -> RunState | None:
        try:
            return await self.store.state.read_state(self.run_id)
        except RunstoreError:
            return None

    async def start(self) -> None:
        """Mark the run ``running`` (the first write does it)."""
        if self.state.status != "created":
            return
        await self.write_state(status="running", started_at=utcnow())
        self._started_mono = time.monotonic()
        self.start_heartbeat()

    def start_heartbeat(self) -> None:
        """Refresh ``heartbeat_at`` every ``heartbeat_interval`` seconds on the driving loop."""
        interval = self.store.heartbeat_interval
        if interval > 0 and self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat(interval))

    async def _beat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.write_state(notify=False)
            except ConflictError as exc:  # recover or another writer took the run over
                await self._dispossessed(exc)
                return
            except RunstoreError:
                continue

    async def _dispossessed(self, cause: ConflictError) -> None:
        """Another writer owns the run now: close the stream writers (what they hold
        stays durable) so that every later write of this one is a conflict."""
        self._lost = ConflictError(
            f"run {self.run_id!r} was taken over by another writer or marked crashed "
            f"by recover; this writer no longer owns it ({cause.message})",
            details={"run_id": self.run_id, **cause.details},
        )
        with self._lock:
            writers = [*self.writers.values(), *self._internal.values()]
            self.writers, self._internal = {}, {}
        for writer in writers:
            with contextlib.suppress(RunstoreError, OSError):
                await writer.close()

    async def set_phase(
        self,
        name: str,
        *,
        status: PhaseStatus | None = None,
        completed: int | None = None,
        total: int | None = None,
        message: str | None = None,
    ) -> RunState:
        """Record progress of a phase in the state snapshot."""
        current = self.state.phases.get(name, PhaseProgress())
        given = {"status": status, "completed": completed, "total": total, "message": message}
        updates = {k: v for k, v in given.items() if v is not None}
        try:
            progress = PhaseProgress.model_validate({**current.model_dump(), **updates})
        except ValueError as exc:
            raise InvalidInputError(
                f"invalid progress for phase {name!r}: {exc}", details={"phase": name}
            ) from None
        return await self.write_state(phases={**self.state.phases, name: progress})

    # -- artifacts --------------------------------------------------------------------

    async def put_artifact(
        self,
        name: str,
        data: object,
        *,
        kind: ArtifactKind,
        media_type: str | None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ArtifactRef:
        """Store an artifact and append its reference to ``artifacts.jsonl``.

        Its ``metadata`` is as immutable as its bytes: putting identical bytes
        again with other metadata is a :class:`~runstore.model.errors.ConflictError`.
        """
        self.store.check_loop()
        if kind not in _KINDS:
            raise InvalidInputError(
                f"unknown artifact kind {kind!r}; choose one of {', '.join(sorted(_KINDS))}",
                details={"kind": kind},
            )
        meta = None if metadata is None else json_object(metadata, "artifact metadata")
        source = as_artifact_source(data)
        if self.summary is not None:
            raise ConflictError(f"run {self.run_id!r} has finished; artifacts are refused")
        writer = await self.open_writer(ARTIFACTS_STREAM, internal=True)
        stored = await self.store.artifacts.put(self.run_id, name, source)
        with self._lock:
            known = self._artifacts.get(name)
        if known is not None and known.sha256 == stored.sha256:
            if known.metadata != (meta or None):
                raise ConflictError(
                    f"artifact {name!r} of run {self.run_id!r} is stored with other metadata; "
                    "an artifact's metadata is immutable, like its bytes",
                    details={"run_id": self.run_id, "name": name},
                )
            return self._located(known)
        ref = ArtifactRef(
            run_id=self.run_id,
            name=name,
            kind=kind,
            sha256=stored.sha256,
            size=stored.size,
            media_type=media_type or guess_media_type(name),
            created_at=utcnow(),
            metadata=meta,
        )
        durable = self.write(writer, ARTIFACTS_STREAM, encode_record(ref), ref)
        with self._lock:
            self._artifacts[name] = ref  # written: a retry must not write it again
        if not durable:
            await writer.commit()
        ref = self._located(ref)
        self.store.plugins.artifact_stored(ref)
        return ref

    def _located(self, ref: ArtifactRef) -> ArtifactRef:
        return ref.model_copy(update={"uri": self.store.artifacts.uri(self.run_id, ref.name)})

    # -- resuming, releasing, finishing -------------------------------------------------

    async def restore(self, stored: StoredRun) -> None:
        """Rebuild the counters from what is stored (for a resumed or recovered run).

        Every complete line counts as a record written, damaged or not: damage
        is for ``verify`` to report, and never stops a run from being resumed.
        Only the streams whose records are looked at are parsed; the others'
        lines are just counted (a resume costs a fraction of a read).
        """
        for stream in await stored.streams():
            if stream == ARTIFACTS_STREAM:
                for ref in await stored.artifacts():
                    with self._lock:
                        self._artifacts[ref.name] = ref
                    self.count(stream, ref)
            elif stream in _WATCHED_STREAMS:
                async for batch in stored.read_batches(stream, errors="skip"):
                    for record in batch:
                        self.count(stream, record)
                self._add(stream, stored.damaged[stream].total)
            else:
                self._add(stream, await stored.count_records(stream))

    def _add(self, stream: str, records: int) -> None:
        """Count ``records`` more records of ``stream`` without looking at them."""
        with self._lock:
            self._tally(stream).add(records)

    def _tally(self, stream: str) -> _Tally:
        """The counter of ``stream`` (the run's lock held); a plain stream's is bumped
        by the appending thread directly (:meth:`write`)."""
        tally = self._tallies.get(stream)
        if tally is None:
            tally = self._tallies[stream] = _Tally()
            if stream not in _WATCHED_STREAMS:
                self._bumps[stream] = tally.bump
        return tally

    async def abandon(self) -> None:
        """The run is being deleted: drop unstored records, refuse every later write."""
        self._deleted = True
        await self.release(discard=True)

    def forked(self) -> None:
        """In a child after ``fork()``: the parent's writers and heartbeat are not ours."""
        self.writers, self._internal = {}, {}
        self._heartbeat, self._state_lock = None, None
        self._forked = True

    def _check_not_deleted(self) -> None:
        if self._forked:
            raise forked_error("run")
        if self._lost is not None:
            raise self._lost
        if self._deleted:
            raise ConflictError(
                f"run {self.run_id!r} was deleted while this writer had it open; "
                "nothing more is written to it",
                details={"run_id": self.run_id},
            )

    async def release(self, *, discard: bool = False, disown: bool = True) -> None:
        """Stop the heartbeat and close the stream writers (records stay durable).

        With ``disown`` (closing without finishing), the state says no writer
        holds the run any more, so the next ``resume_run`` takes it at once.
        """
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        with self._lock:
            writers = [*self.writers.items(), *self._internal.items()]
            self.writers, self._internal = {}, {}
        try:
            for stream, writer in writers:
                if discard:
                    await writer.discard()
                    continue
                await writer.close()
                self._flushed(stream)
        finally:
            self.store.live.discard(self)
            if self.owner is not None:
                await self._disown(write=disown and not discard)

    async def _disown(self, *, write: bool) -> None:
        """This writer stops holding the run (``write``: and says so in the state)."""
        holds = self.state.owner == self.owner and self._lost is None
        try:
            if write and holds and not (self._forked or self.summary):
                with contextlib.suppress(RunstoreError):  # taken over: not ours to release
                    await self.write_state(notify=False, beat=False, touch=False, owner=None)
        finally:  # stored or not, this process knows the writer is gone (released_here)
            LIVE_OWNERS.discard(self.owner or "")
            if write and self._lost is None:
                self._lost = ConflictError(
                    f"this writer released run {self.run_id!r}; resume_run it to write again",
                    details={"run_id": self.run_id},
                )

    async def finish(
        self,
        status: RunStatus = "succeeded",
        *,
        error: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> RunSummary:
        """Close the streams, write the summary and the final state. Idempotent.

        ``metrics`` are the caller's own aggregates (``p95_latency_ms``): they
        join the last values of the logged metrics in ``summary.metrics``.
        """
        self.store.check_loop()
        if self.summary is not None:
            return self.summary
        if status not in _FINAL_STATUSES:
            raise InvalidInputError(
                f"a run finishes as succeeded, failed, cancelled or crashed, not {status!r}"
            )
        given = dict(
            validate_metric(name, value, "summary metric")
            for name, value in (metrics or {}).items()
        )
        self._check_not_deleted()
        await self.release(disown=False)
        await self.store.logs.finalize(self.run_id)
        summary = self._summarise(status, given)
        # A writer whose state is stale (recover marked the run crashed, another
        # writer took over) must not leave a summary behind: check first.
        stored = await self.store.state.read_state(self.run_id)
        if stored.revision != self.state.revision and not self._adopt(stored):
            raise ConflictError(
                f"run {self.run_id!r} was updated by another writer (revision "
                f"{stored.revision}, this writer has {self.state.revision}); not finishing it",
                details={"run_id": self.run_id, "stored": stored.revision},
            )
        await self.store.state.write_summary(summary)
        await self.write_state(
            summary=summary,
            status=status,
            finished_at=summary.finished_at,
            error=error,
            owner=None,
        )
        self.summary = summary
        self.store.plugins.run_finished(summary)
        return summary

    def _summarise(self, status: RunStatus, metrics: dict[str, float]) -> RunSummary:
        finished = utcnow()
        started = self.state.started_at or self.state.created_at
        if self._started_mono is not None:  # started by this writer: a clock step cannot skew it
            elapsed = time.monotonic() - self._started_mono
        else:
            elapsed = max((finished - started).total_seconds(), 0.0)
        counts = self._counts()
        with self._lock:
            outcomes = dict(self._outcomes)
            refs = list(self._artifacts.values())
            logged = dict(self._metrics)
        judged = outcomes["passed"] + outcomes["failed"] + outcomes["error"]
        return RunSummary(
            run_id=self.run_id,
            status=status,
            instance_count=counts.get("instances", 0),
            pass_count=outcomes["passed"],
            fail_count=outcomes["failed"],
            error_count=outcomes["error"],
            skip_count=outcomes["skipped"],
            pass_rate=outcomes["passed"] / judged if judged else None,
            started_at=started,
            finished_at=finished,
            duration_ms=round(elapsed * 1000),
            stream_counts={k: counts[k] for k in sorted(counts) if k != ARTIFACTS_STREAM},
            artifact_count=len(refs),
            artifact_bytes=sum(ref.size for ref in refs),
            metrics={**logged, **metrics},
        )


_OUTCOMES: Final = ("passed", "failed", "error", "skipped")
_WATCHED_STREAMS: Final = frozenset({"instances", METRICS_STREAM})
"""Streams whose records are looked at when counted (outcomes, metric values)."""
_LABELS: Final = frozenset({"revision", "updated_at", "metadata", "tags"})


def _field(record: Any, name: str) -> Any:
    return record.get(name) if type(record) is dict else getattr(record, name, None)


def _outcome_of(record: Any) -> str | None:
    """``status`` (passed, failed, error, skipped), else a boolean ``passed``."""
    status = _field(record, "status")
    if status in _OUTCOMES:
        return str(status)
    if status is None:
        passed = _field(record, "passed")
        if passed is True:
            return "passed"
        if passed is False:
            return "failed"
    return None


def _only_labels_differ(stored: RunState, mine: RunState) -> bool:
    """The stored state is this writer's but for labels someone else changed."""
    keep = set(RunState.model_fields) - _LABELS
    return stored.model_dump(include=keep) == mine.model_dump(include=keep)


def outcome(
    exc_type: type[BaseException] | None, exc: BaseException | None
) -> tuple[Literal["succeeded", "failed", "cancelled"], dict[str, Any]]:
    """How ``with run:`` ends: the status and error for the exception that left the block."""
    if exc_type is None:
        return "succeeded", {}
    if issubclass(exc_type, KeyboardInterrupt | asyncio.CancelledError):
        return "cancelled", {"error": exc_type.__name__}
    return "failed", {"error": f"{exc_type.__name__}: {exc}"}
