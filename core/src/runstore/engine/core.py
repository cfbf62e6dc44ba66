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

:class:`StoreCore` holds a store's backends, plugins and policies and the
runs it has open, so closing the store releases them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from runstore.context import active as _correlation
from runstore.context import correlate
from runstore.engine.sources import as_artifact_source
from runstore.engine.sources import media_type as guess_media_type
from runstore.model.errors import ConflictError, InvalidInputError, RunstoreError, UnsupportedError
from runstore.model.names import validate_stream_name
from runstore.model.records import encode_record
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
from runstore.registry.config import parse_target, select_backend
from runstore.registry.plugins import Plugins
from runstore.spi.backends import (
    ArtifactBackend,
    BackendSpec,
    Concern,
    Durability,
    LogBackend,
    StateBackend,
    StreamWriter,
)
from runstore.spi.layout import ARTIFACTS_STREAM

if TYPE_CHECKING:
    from runstore.engine.portal import Portal

__all__ = ["DEFAULT_HEARTBEAT_SECONDS", "RunCore", "StoreCore", "outcome"]

DEFAULT_HEARTBEAT_SECONDS = 30.0
"""How often a live run refreshes ``heartbeat_at`` (``heartbeat_interval`` option)."""

_KINDS = frozenset(get_args(ArtifactKind))
_FINAL_STATUSES = ("succeeded", "failed", "cancelled", "crashed")


# -- the store ------------------------------------------------------------------------


_INTERFACES: dict[Concern, type] = {
    "state": StateBackend,
    "logs": LogBackend,
    "artifacts": ArtifactBackend,
}


@dataclass
class _Chosen:
    spec: BackendSpec
    backend: object


class StoreCore:
    """A store's backends (one per concern), plugins and policies, and its open runs."""

    def __init__(
        self,
        url: str,
        *,
        routes: dict[Concern, str | None],
        durability: Durability | None,
        heartbeat_interval: float,
        plugins: Iterable[object],
        options: dict[str, Any],
    ) -> None:
        if durability is not None and durability not in get_args(Durability):
            raise InvalidInputError(
                f"unknown durability {durability!r}; "
                f"choose one of {', '.join(get_args(Durability))}",
                details={"durability": durability},
            )
        self.url = url
        self.plugins = Plugins(plugins)
        chosen, self._objects = _build_backends(self.plugins, url, routes, options)
        self.specs: dict[Concern, BackendSpec] = {c: ch.spec for c, ch in chosen.items()}
        self.state: StateBackend = chosen["state"].backend  # type: ignore[assignment]
        self.logs: LogBackend = chosen["logs"].backend  # type: ignore[assignment]
        self.artifacts: ArtifactBackend = chosen["artifacts"].backend  # type: ignore[assignment]
        self.durability = durability
        self.heartbeat_interval = heartbeat_interval
        # Strong references: a run the caller dropped unfinished still holds open
        # streams (and their locks) until aclose() releases it.
        self.live: set[RunCore] = set()

    async def aclose(self) -> None:
        """Release open runs (their records stay durable; they stay unfinished) and backends."""
        for run in list(self.live):
            await run.release()
        for obj in self._objects:
            close = getattr(obj, "aclose", None)
            if close is not None:
                await close()


def _build_backends(
    plugins: Plugins, url: str, routes: dict[Concern, str | None], options: dict[str, Any]
) -> tuple[dict[Concern, _Chosen], list[object]]:
    built: dict[str, _Chosen] = {}
    chosen: dict[Concern, _Chosen] = {}
    specs = plugins.backends()
    for concern in ("state", "logs", "artifacts"):
        concern_url = routes.get(concern) or url
        if concern_url not in built:
            forced, target = parse_target(concern_url, options if concern_url == url else None)
            spec = select_backend(forced, target, specs)
            built[concern_url] = _Chosen(spec, spec.factory(target))
        this = built[concern_url]
        if concern not in this.spec.concerns or not isinstance(this.backend, _INTERFACES[concern]):
            raise UnsupportedError(
                f"backend {this.spec.name!r} does not store {concern}; route it to another "
                f"backend, e.g. runstore.open({url!r}, {concern}='./runs')",
                details={"backend": this.spec.name, "concern": concern},
            )
        chosen[concern] = this
    return chosen, [ch.backend for ch in built.values()]


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


class StoredRun(Protocol):
    """What :meth:`RunCore.restore` reads a stored run through (an ``AsyncRunView``)."""

    async def streams(self) -> list[str]: ...

    async def artifacts(self) -> list[ArtifactRef]: ...

    def read_batches(self, stream: str) -> AsyncIterator[list[Any]]: ...


class RunCore:
    """Everything one writer of one run holds; the only code that writes a run.

    :param store: the store the run lives in.
    :param manifest: the run's manifest.
    :param state: the stored state this writer builds on.
    :param live: register with the store, so closing the store releases the run
        (maintenance works on detached cores).
    """

    def __init__(
        self, store: StoreCore, manifest: RunManifest, state: RunState, *, live: bool = True
    ) -> None:
        self.store = store
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
        self._pass = 0
        self._fail = 0
        self._artifacts: dict[str, ArtifactRef] = {}
        self._state_lock: asyncio.Lock | None = None
        self._unconfirmed: RunState | None = None
        """A state whose write raised after it may have landed (see :meth:`write_state`)."""
        self._heartbeat: asyncio.Task[None] | None = None
        self._deleted = False
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

    def encode(self, record: Any) -> bytes:
        """The JSONL line for ``record``, with the correlation ids of the current scope."""
        if _correlation() is not None:
            record = correlate(self.run_id, record)
        return encode_record(record)

    def write(self, writer: StreamWriter, stream: str, line: bytes, record: Any) -> bool:
        """Hand ``line`` to ``writer`` and count it; ``True`` if it is durable already.

        When it returns ``False`` the caller commits (:meth:`StreamWriter.commit`,
        or ``commit_sync``) before it acknowledges the record. The hot path:
        every face calls it once per record, so it is written out flat.
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
        """Count one record written to ``stream`` (instances also by outcome)."""
        status = None
        if stream == "instances":
            status = (
                record.get("status") if type(record) is dict else getattr(record, "status", None)
            )
        with self._lock:
            tally = self._tallies.get(stream)
            if tally is None:
                tally = self._tallies[stream] = _Tally()
                if stream != "instances":  # instances are also counted by outcome
                    self._bumps[stream] = tally.bump
            tally.bump()
            if status == "passed":
                self._pass += 1
            elif status == "failed":
                self._fail += 1

    async def open_writer(self, stream: str, *, internal: bool = False) -> StreamWriter:
        """The writer of ``stream``, opened (and the run started) on first use."""
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
        self, notify: bool = True, summary: RunSummary | None = None, **changes: Any
    ) -> RunState:
        """Write the next state revision (compare-and-swap on the current one)."""
        self._check_not_deleted()
        if self._state_lock is None:
            self._state_lock = asyncio.Lock()
        async with self._state_lock:
            while True:
                now = utcnow()
                new = self.state.model_copy(
                    update={
                        **changes,
                        "revision": self.state.revision + 1,
                        "updated_at": now,
                        "heartbeat_at": now,
                    }
                )
                record = RunRecord.build(self.manifest, new, summary)
                try:
                    await self.store.state.write_state(
                        new, expected_revision=self.state.revision, record=record
                    )
                except ConflictError:
                    # A write that failed late (e.g. the directory fsync after the rename)
                    # may have landed: if the store holds exactly it, build on it.
                    failed, self._unconfirmed = self._unconfirmed, None
                    if failed is None or await self._stored_state() != failed:
                        raise
                    self.state = failed
                    continue
                except BaseException:  # failed, or cancelled (a heartbeat at finish) mid-write
                    self._unconfirmed = new
                    raise
                self.state, self._unconfirmed = new, None
                break
        if notify:
            self.store.plugins.state_changed(new)
        return new

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
            except ConflictError:
                return  # someone else (recover, another writer) owns the state now
            except RunstoreError:
                continue

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
        self, name: str, data: object, *, kind: ArtifactKind, media_type: str | None
    ) -> ArtifactRef:
        """Store an artifact and append its reference to ``artifacts.jsonl``."""
        if kind not in _KINDS:
            raise InvalidInputError(
                f"unknown artifact kind {kind!r}; choose one of {', '.join(sorted(_KINDS))}",
                details={"kind": kind},
            )
        source = as_artifact_source(data)
        if self.summary is not None:
            raise ConflictError(f"run {self.run_id!r} has finished; artifacts are refused")
        writer = await self.open_writer(ARTIFACTS_STREAM, internal=True)
        stored = await self.store.artifacts.put(self.run_id, name, source)
        with self._lock:
            known = self._artifacts.get(name)
        if known is not None and known.sha256 == stored.sha256:
            return known
        ref = ArtifactRef(
            run_id=self.run_id,
            name=name,
            kind=kind,
            sha256=stored.sha256,
            size=stored.size,
            media_type=media_type or guess_media_type(name),
            created_at=utcnow(),
        )
        durable = self.write(writer, ARTIFACTS_STREAM, encode_record(ref), ref)
        with self._lock:
            self._artifacts[name] = ref  # written: a retry must not write it again
        if not durable:
            await writer.commit()
        self.store.plugins.artifact_stored(ref)
        return ref

    # -- resuming, releasing, finishing -------------------------------------------------

    async def restore(self, stored: StoredRun) -> None:
        """Rebuild the counters from what is stored (for a resumed or recovered run)."""
        for stream in await stored.streams():
            if stream == ARTIFACTS_STREAM:
                for ref in await stored.artifacts():
                    with self._lock:
                        self._artifacts[ref.name] = ref
                    self.count(stream, ref)
                continue
            async for batch in stored.read_batches(stream):
                for record in batch:
                    self.count(stream, record)

    async def abandon(self) -> None:
        """The run is being deleted: drop unstored records, refuse every later write."""
        self._deleted = True
        await self.release(discard=True)

    def _check_not_deleted(self) -> None:
        if self._deleted:
            raise ConflictError(
                f"run {self.run_id!r} was deleted while this writer had it open; "
                "nothing more is written to it",
                details={"run_id": self.run_id},
            )

    async def release(self, *, discard: bool = False) -> None:
        """Stop the heartbeat and close the stream writers (records stay durable)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        with self._lock:
            writers = [*self.writers.items(), *self._internal.items()]
            self.writers, self._internal = {}, {}
        for stream, writer in writers:
            if discard:
                await writer.discard()
                continue
            await writer.close()
            self._flushed(stream)
        self.store.live.discard(self)

    async def finish(
        self, status: RunStatus = "succeeded", *, error: str | None = None
    ) -> RunSummary:
        """Close the streams, write the summary and the final state. Idempotent."""
        if self.summary is not None:
            return self.summary
        if status not in _FINAL_STATUSES:
            raise InvalidInputError(
                f"a run finishes as succeeded, failed, cancelled or crashed, not {status!r}"
            )
        self._check_not_deleted()
        await self.release()
        await self.store.logs.finalize(self.run_id)
        summary = self._summarise(status)
        # A writer whose state is stale (recover marked the run crashed, another
        # writer took over) must not leave a summary behind: check first.
        stored = await self.store.state.read_state(self.run_id)
        if stored.revision != self.state.revision and stored == self._unconfirmed:
            # our own state write raised (or its heartbeat was cancelled) after it landed
            self.state, self._unconfirmed = stored, None
        if stored.revision != self.state.revision:
            raise ConflictError(
                f"run {self.run_id!r} was updated by another writer (revision "
                f"{stored.revision}, this writer has {self.state.revision}); not finishing it",
                details={"run_id": self.run_id, "stored": stored.revision},
            )
        await self.store.state.write_summary(summary)
        await self.write_state(
            summary=summary, status=status, finished_at=summary.finished_at, error=error
        )
        self.summary = summary
        self.store.plugins.run_finished(summary)
        return summary

    def _summarise(self, status: RunStatus) -> RunSummary:
        finished = utcnow()
        started = self.state.started_at or self.state.created_at
        counts = self._counts()
        with self._lock:
            passed, failed = self._pass, self._fail
            refs = list(self._artifacts.values())
        judged = passed + failed
        return RunSummary(
            run_id=self.run_id,
            status=status,
            instance_count=counts.get("instances", 0),
            pass_count=passed,
            fail_count=failed,
            pass_rate=passed / judged if judged else None,
            started_at=started,
            finished_at=finished,
            duration_ms=round((finished - started).total_seconds() * 1000),
            stream_counts={k: counts[k] for k in sorted(counts) if k != ARTIFACTS_STREAM},
            artifact_count=len(refs),
            artifact_bytes=sum(ref.size for ref in refs),
        )


def outcome(
    exc_type: type[BaseException] | None, exc: BaseException | None
) -> tuple[Literal["succeeded", "failed", "cancelled"], dict[str, Any]]:
    """How ``with run:`` ends: the status and error for the exception that left the block."""
    if exc_type is None:
        return "succeeded", {}
    if issubclass(exc_type, KeyboardInterrupt | asyncio.CancelledError):
        return "cancelled", {"error": exc_type.__name__}
    return "failed", {"error": f"{exc_type.__name__}: {exc}"}
