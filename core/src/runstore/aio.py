"""The async API: ``store = runstore.aio.open(url)``, ``run = await store.create_run(...)``.

The sync API in :mod:`runstore.store` mirrors it name for name. Both share
the same objects: the sync facade drives these coroutines on a private event
loop, except for the append hot path, which calls the backend's writer
directly in the caller's thread.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import mimetypes
import os
from collections.abc import AsyncIterable, AsyncIterator, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Literal, Self, TypeVar, get_args

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from runstore import __version__
from runstore.backends import (
    ArtifactBackend,
    ArtifactSource,
    BackendSpec,
    Concern,
    Durability,
    LogBackend,
    RunQuery,
    StateBackend,
    StreamWriter,
)
from runstore.config import default_store_url, parse_target, select_backend
from runstore.context import Scope, correlate, instance_scope, step_scope
from runstore.context import active as _correlation
from runstore.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptError,
    InvalidInputError,
    NotFoundError,
    RunstoreError,
    UnsupportedError,
)
from runstore.layout import ARTIFACTS_STREAM
from runstore.models import (
    ArtifactKind,
    ArtifactRef,
    PhaseProgress,
    RunManifest,
    RunRecord,
    RunState,
    RunStatus,
    RunSummary,
    utcnow,
)
from runstore.names import validate_artifact_name, validate_run_id, validate_stream_name
from runstore.plugins import Plugins
from runstore.records import LineDecoder, encode_record
from runstore.replay import AsyncInstanceBundle, load_instance
from runstore.streams import AsyncTypedStream, AsyncTypedStreamReader

__all__ = ["AsyncInstanceBundle", "AsyncRun", "AsyncRunView", "AsyncStore", "open"]

_CHUNK = 1 << 20
_M = TypeVar("_M", bound=BaseModel)
_KINDS = frozenset(get_args(ArtifactKind))
DEFAULT_HEARTBEAT_SECONDS = 30.0
"""How often a live run refreshes ``heartbeat_at`` (``heartbeat_interval`` option)."""


@dataclass
class _Backends:
    state: StateBackend
    logs: LogBackend
    artifacts: ArtifactBackend
    specs: dict[Concern, BackendSpec]
    objects: list[object]

    async def aclose(self) -> None:
        for obj in self.objects:
            close = getattr(obj, "aclose", None)
            if close is not None:
                await close()


_INTERFACES: dict[Concern, type] = {
    "state": StateBackend,
    "logs": LogBackend,
    "artifacts": ArtifactBackend,
}


def _build_backends(
    plugins: Plugins, url: str, routes: dict[Concern, str | None], options: dict[str, Any]
) -> _Backends:
    specs = plugins.backends()
    built: dict[str, tuple[BackendSpec, object]] = {}
    chosen: dict[Concern, tuple[BackendSpec, object]] = {}
    for concern in ("state", "logs", "artifacts"):
        concern_url = routes.get(concern) or url
        if concern_url not in built:
            forced, target = parse_target(concern_url, options if concern_url == url else None)
            spec = select_backend(forced, target, specs)
            built[concern_url] = (spec, spec.factory(target))
        spec, obj = built[concern_url]
        if concern not in spec.concerns or not isinstance(obj, _INTERFACES[concern]):
            raise UnsupportedError(
                f"backend {spec.name!r} does not store {concern}; route it to another "
                f"backend, e.g. runstore.open({url!r}, {concern}='./runs')",
                details={"backend": spec.name, "concern": concern},
            )
        chosen[concern] = (spec, obj)
    return _Backends(
        state=chosen["state"][1],  # type: ignore[arg-type]
        logs=chosen["logs"][1],  # type: ignore[arg-type]
        artifacts=chosen["artifacts"][1],  # type: ignore[arg-type]
        specs={c: s for c, (s, _) in chosen.items()},
        objects=[obj for _, obj in built.values()],
    )


def open(
    url: str | None = None,
    *,
    state: str | None = None,
    logs: str | None = None,
    artifacts: str | None = None,
    durability: Durability | None = None,
    heartbeat_interval: float = DEFAULT_HEARTBEAT_SECONDS,
    plugins: Iterable[object] = (),
    **options: Any,
) -> AsyncStore:
    """Open the store named by a config string, for use with ``await``.

    :param url: config string (``./runs``, ``s3://bucket/prefix``, ``memory://x``);
        defaults to ``$RUNSTORE_URL`` or ``./runs``.
    :param state: route the state concern to another config string.
    :param logs: route the logs concern to another config string.
    :param artifacts: route the artifacts concern to another config string.
    :param durability: when ``append`` returns (``flush``, ``fsync``, ``record``,
        ``batch``); ``None`` picks the backend default.
    :param heartbeat_interval: seconds between heartbeats of a live run; 0 disables.
    :param plugins: extra plugin objects (observers) to register.
    :param options: backend options for ``url`` (merged over its query parameters).
    """
    return AsyncStore(
        url,
        routes={"state": state, "logs": logs, "artifacts": artifacts},
        durability=durability,
        heartbeat_interval=heartbeat_interval,
        plugins=plugins,
        options=options,
    )


class AsyncStore:
    """A run store: creates runs, lists them and opens them for reading."""

    def __init__(
        self,
        url: str | None = None,
        *,
        routes: dict[Concern, str | None] | None = None,
        durability: Durability | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_SECONDS,
        plugins: Iterable[object] = (),
        options: dict[str, Any] | None = None,
    ) -> None:
        if durability is not None and durability not in get_args(Durability):
            raise InvalidInputError(
                f"unknown durability {durability!r}; "
                f"choose one of {', '.join(get_args(Durability))}",
                details={"durability": durability},
            )
        self.url = default_store_url() if url is None else url
        self.plugins = Plugins(plugins)
        self._backends = _build_backends(self.plugins, self.url, routes or {}, dict(options or {}))
        self.durability = durability
        self.heartbeat_interval = heartbeat_interval
        # Strong references: a run the caller dropped unfinished still holds open
        # streams (and their locks) until aclose() releases it.
        self._live: set[AsyncRun] = set()

    @property
    def state_backend(self) -> StateBackend:
        """The backend serving the state concern."""
        return self._backends.state

    @property
    def log_backend(self) -> LogBackend:
        """The backend serving the logs concern."""
        return self._backends.logs

    @property
    def artifact_backend(self) -> ArtifactBackend:
        """The backend serving the artifacts concern."""
        return self._backends.artifacts

    @property
    def backend_names(self) -> dict[Concern, str]:
        """Which backend serves each concern."""
        return {c: s.name for c, s in self._backends.specs.items()}

    def __repr__(self) -> str:
        return f"<AsyncStore {self.url!r}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release open runs (their records stay durable; they stay unfinished) and backends."""
        for run in list(self._live):
            await run._release()
        await self._backends.aclose()

    # -- writing --------------------------------------------------------------

    async def create_run(
        self,
        run_id: str | None = None,
        *,
        sut_name: str | None = None,
        scenario_ids: Collection[str] | None = None,
        seed: int | None = None,
        config: dict[str, Any] | None = None,
        tags: Collection[str] | None = None,
        correlation_id: str | None = None,
        log_retention: Mapping[str, int] | None = None,
    ) -> AsyncRun:
        """Create a run (status ``created``) and return it for writing.

        Without ``run_id`` an id ``run_YYYYMMDD_NNN`` is generated and claimed
        atomically, so concurrent creators never collide. A given ``run_id``
        that exists raises :class:`~runstore.errors.AlreadyExistsError`.
        ``log_retention`` declares how many days a stream is kept once the
        run has finished (``{"logs": 7}``); ``runstore gc`` deletes it then.
        """
        now = utcnow()
        try:
            fields: dict[str, Any] = {
                "timestamp": now,
                "sut_name": sut_name,
                "scenario_ids": _string_list("scenario_ids", scenario_ids),
                "seed": seed,
                "config": config or {},
                "tags": _string_list("tags", tags) or [],
                "correlation_id": correlation_id,
                "runstore_version": __version__,
                "log_retention": dict(log_retention or {}),
            }
            for stream in fields["log_retention"]:
                validate_stream_name(stream)
            # Validate, and prove the config serialises, before anything is written.
            RunManifest(run_id="x", **fields).model_dump_json()
        except (ValueError, PydanticSerializationError) as exc:
            raise InvalidInputError(f"invalid run metadata: {exc}") from None
        if run_id is not None:
            validate_run_id(run_id)
            manifest, state = self._first_snapshots(run_id, fields, now)
            await self._backends.state.create_run(manifest, state)
        else:
            manifest, state = await self._claim_generated_id(fields, now)
        self.plugins.run_created(manifest, state)
        return AsyncRun(self, manifest, state)

    @staticmethod
    def _first_snapshots(
        run_id: str, fields: dict[str, Any], now: datetime
    ) -> tuple[RunManifest, RunState]:
        manifest = RunManifest(run_id=run_id, **fields)
        return manifest, RunState(run_id=run_id, created_at=now, updated_at=now)

    async def _claim_generated_id(
        self, fields: dict[str, Any], now: datetime
    ) -> tuple[RunManifest, RunState]:
        prefix = f"run_{now:%Y%m%d}_"
        number = await self._backends.state.highest_run_number(prefix) + 1
        for _ in range(10_000):
            manifest, state = self._first_snapshots(f"{prefix}{number:03d}", fields, now)
            try:
                await self._backends.state.create_run(manifest, state)
            except AlreadyExistsError:
                number += 1
                continue
            return manifest, state
        raise ConflictError(f"could not claim a run id with prefix {prefix!r} after 10000 tries")

    async def resume_run(self, run_id: str) -> AsyncRun:
        """Reopen a run that is not finished (its writer died or handed over) for writing.

        Counts for the summary are rebuilt from the stored streams, and each
        stream's torn tail (a write cut short by a crash) is repaired, whether
        or not the stream is written again. A finished run raises
        :class:`~runstore.errors.ConflictError`.
        """
        view = await self.get_run(run_id)
        if view.state.status in ("succeeded", "failed", "cancelled"):
            raise ConflictError(
                f"run {run_id!r} has finished ({view.state.status}); it cannot be resumed",
                details={"run_id": run_id, "status": view.state.status},
            )
        run = AsyncRun(self, view.manifest, view.state)
        await run._restore(view)
        if run.state.status in ("created", "crashed"):
            await run._write_state(status="running", started_at=run.state.started_at or utcnow())
        for stream, torn in sorted(view.torn_tails.items()):
            if torn:  # opening the stream's writer cuts its torn tail off
                await run._writer(stream, internal=stream == ARTIFACTS_STREAM)
        run._start_heartbeat()
        return run

    # -- reading --------------------------------------------------------------

    async def get_run(self, run_id: str) -> AsyncRunView:
        """Open a run for reading. Raises :class:`~runstore.errors.NotFoundError`."""
        validate_run_id(run_id)
        view = AsyncRunView(self, await self._backends.state.read_manifest(run_id))
        await view.refresh()
        return view

    async def list_runs(
        self,
        *,
        status: RunStatus | Collection[RunStatus] | None = None,
        sut_name: str | None = None,
        tags: Collection[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Run index records, newest first, filtered and paginated."""
        if (limit is not None and limit < 0) or offset < 0:
            raise InvalidInputError("limit and offset must not be negative")
        for moment in (created_after, created_before):
            if moment is not None and moment.utcoffset() is None:
                raise InvalidInputError(
                    f"created_after/created_before must be timezone-aware, got {moment!r}; "
                    "use datetime(..., tzinfo=timezone.utc)",
                    details={"value": moment.isoformat()},
                )
        query = RunQuery(
            status=status,
            sut_name=sut_name,
            tags=tags,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            offset=offset,
        )
        return await self._backends.state.list_runs(query)

    async def delete_run(self, run_id: str, *, force: bool = False) -> None:
        """Delete a run's state, streams and artifacts. A live run needs ``force=True``."""
        validate_run_id(run_id)
        state = await self._backends.state.read_state(run_id)
        if not state.is_terminal and not force:
            raise ConflictError(
                f"run {run_id!r} is {state.status}; finish it first or pass force=True",
                details={"run_id": run_id, "status": state.status},
            )
        await self._backends.artifacts.delete_run(run_id)
        await self._backends.logs.delete_run(run_id)
        await self._backends.state.delete_run(run_id)


def _string_list(field: str, value: Collection[str] | None) -> list[str] | None:
    """A list of strings from a collection; a lone string is refused, not split into letters."""
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidInputError(
            f"{field} must be a list of strings such as ['checkout'], not {value!r}",
            details={"field": field, "value": repr(value)},
        )
    return list(value)


def _media_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if guessed:
        return guessed
    return "application/x-ndjson" if name.endswith(".jsonl") else "application/octet-stream"


async def _file_chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := handle.read(_CHUNK):
        yield chunk


async def _path_chunks(path: os.PathLike[str]) -> AsyncIterator[bytes]:
    with builtins.open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def as_artifact_source(data: object) -> ArtifactSource:
    """Accept bytes-like, a path, a binary file object or an async iterable of bytes."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, os.PathLike):
        return _path_chunks(data)
    if hasattr(data, "read"):
        return _file_chunks(data)  # type: ignore[arg-type]
    if isinstance(data, AsyncIterable):
        return data
    raise InvalidInputError(
        f"artifact data must be bytes, a path, a binary file or an async iterable of bytes, "
        f"got {type(data).__name__}",
        details={"type": type(data).__name__},
    )


class AsyncRun:
    """A run being written. Use it as ``async with run:``; see :class:`runstore.store.Run`."""

    def __init__(self, store: AsyncStore, manifest: RunManifest, state: RunState) -> None:
        self.store = store
        self.manifest = manifest
        self.run_id = manifest.run_id
        self._state = state
        self._summary: RunSummary | None = None
        self._writers: dict[str, StreamWriter] = {}
        # Writers of streams runstore writes itself (artifacts.jsonl), kept apart so
        # that the append fast path, which looks in _writers only, never reaches them.
        self._internal_writers: dict[str, StreamWriter] = {}
        self._counts: dict[str, int] = {}
        self._pass = 0
        self._fail = 0
        self._artifacts: dict[str, ArtifactRef] = {}
        self._state_lock: asyncio.Lock | None = None
        self._unconfirmed: RunState | None = None
        """A state whose write raised after it may have landed (see ``_write_state``)."""
        self._heartbeat: asyncio.Task[None] | None = None
        store._live.add(self)

    def __repr__(self) -> str:
        return f"<AsyncRun {self.run_id!r} {self._state.status}>"

    @property
    def state(self) -> RunState:
        """The state snapshot this writer wrote last."""
        return self._state

    @property
    def summary(self) -> RunSummary | None:
        """The summary once the run finished, else ``None``."""
        return self._summary

    @property
    def record_counts(self) -> dict[str, int]:
        """Records appended per stream by this writer."""
        return dict(self._counts)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        status, extra = _outcome(exc_type, exc)
        await self.finish(status, **extra)

    # -- state ----------------------------------------------------------------

    async def _write_state(
        self, notify: bool = True, summary: RunSummary | None = None, **changes: Any
    ) -> RunState:
        if self._state_lock is None:
            self._state_lock = asyncio.Lock()
        async with self._state_lock:
            while True:
                now = utcnow()
                new = self._state.model_copy(
                    update={
                        **changes,
                        "revision": self._state.revision + 1,
                        "updated_at": now,
                        "heartbeat_at": now,
                    }
                )
                record = RunRecord.build(self.manifest, new, summary)
                try:
                    await self.store.state_backend.write_state(
                        new, expected_revision=self._state.revision, record=record
                    )
                except ConflictError:
                    # A write that failed late (e.g. the directory fsync after the rename)
                    # may have landed: if the store holds exactly it, build on it.
                    failed, self._unconfirmed = self._unconfirmed, None
                    if failed is None or await self._stored_state() != failed:
                        raise
                    self._state = failed
                    continue
                except BaseException:  # failed, or cancelled (a heartbeat at finish) mid-write
                    self._unconfirmed = new
                    raise
                self._state, self._unconfirmed = new, None
                break
        if notify:
            self.store.plugins.state_changed(new)
        return new

    async def _stored_state(self) -> RunState | None:
        try:
            return await self.store.state_backend.read_state(self.run_id)
        except RunstoreError:
            return None

    async def start(self) -> None:
        """Mark the run ``running`` (done by ``with run:`` and by the first append)."""
        if self._state.status != "created":
            return
        await self._write_state(status="running", started_at=utcnow())
        self._start_heartbeat()

    def _start_heartbeat(self) -> None:
        interval = self.store.heartbeat_interval
        if interval > 0 and self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat(interval))

    async def _beat(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self._write_state(notify=False)
            except ConflictError:
                return  # someone else (recover, another writer) owns the state now
            except RunstoreError:
                continue

    async def set_phase(
        self,
        name: str,
        *,
        status: Literal["pending", "running", "done", "failed", "skipped"] | None = None,
        completed: int | None = None,
        total: int | None = None,
        message: str | None = None,
    ) -> RunState:
        """Record progress of a phase in the state snapshot."""
        current = self._state.phases.get(name, PhaseProgress())
        updates = {
            k: v
            for k, v in {
                "status": status,
                "completed": completed,
                "total": total,
                "message": message,
            }.items()
            if v is not None
        }
        try:
            progress = PhaseProgress.model_validate({**current.model_dump(), **updates})
        except ValueError as exc:
            raise InvalidInputError(
                f"invalid progress for phase {name!r}: {exc}", details={"phase": name}
            ) from None
        return await self._write_state(phases={**self._state.phases, name: progress})

    # -- logs -----------------------------------------------------------------

    async def _writer(self, stream: str, *, internal: bool = False) -> StreamWriter:
        validate_stream_name(stream, allow_reserved=internal)
        writers = self._internal_writers if internal else self._writers
        writer = writers.get(stream)
        if writer is not None:
            return writer
        if self._summary is not None:
            raise ConflictError(
                f"run {self.run_id!r} has finished; appends are refused",
                details={"run_id": self.run_id, "stream": stream},
            )
        await self.start()
        opened = await self.store.log_backend.open_writer(
            self.run_id, stream, durability=self.store.durability
        )
        writer = writers.setdefault(stream, opened)
        if writer is not opened:
            await opened.close()
        return writer

    def _count(self, stream: str, record: Any) -> None:
        self._counts[stream] = self._counts.get(stream, 0) + 1
        if stream == "instances":
            status = (
                record.get("status") if type(record) is dict else getattr(record, "status", None)
            )
            if status == "passed":
                self._pass += 1
            elif status == "failed":
                self._fail += 1

    async def append(self, stream: str, record: Any) -> None:
        """Append one record (a dict or pydantic model) to ``stream``; durable on return.

        Inside ``run.instance(...)`` / ``run.step(...)`` the record gets the
        correlation ids it lacks (:mod:`runstore.context`).
        """
        if _correlation() is not None:
            record = correlate(self.run_id, record)
        line = encode_record(record)
        writer = self._writers.get(stream) if type(stream) is str else None
        writer = writer or await self._writer(stream)  # the slow path validates the name
        durable = writer.write(line)
        self._count(stream, record)  # written: counted even if the commit below fails
        if not durable:
            await writer.commit()

    async def log(self, level: str, message: str, **fields: Any) -> None:
        """Append a log line (``ts``, ``level``, ``message``, extra fields) to ``logs``."""
        await self.append("logs", {"ts": utcnow(), "level": level, "message": message, **fields})

    def instance(self, instance_id: str, *, trace_id: str | None = None) -> Scope:
        """``with`` / ``async with run.instance(id):`` correlates what runs inside with it."""
        return instance_scope(self.run_id, instance_id, trace_id)

    def step(self, step_id: str, *, trace_id: str | None = None) -> Scope:
        """``with`` / ``async with run.step(id):`` correlates what runs inside with a step."""
        return step_scope(self.run_id, step_id, trace_id)

    def stream(self, name: str, model: type[_M]) -> AsyncTypedStream[_M]:
        """A typed handle on ``name``: ``await handle.append(...)`` validates against ``model``."""
        return AsyncTypedStream(self, name, model)

    async def flush(self) -> None:
        """Make every record appended so far durable now (forces a segment on object stores)."""
        for stream, writer in [*self._writers.items(), *self._internal_writers.items()]:
            await writer.commit()
            self.store.plugins.stream_flushed(self.run_id, stream, self._counts.get(stream, 0))

    # -- artifacts ------------------------------------------------------------

    async def put_artifact(
        self,
        name: str,
        data: object,
        *,
        kind: ArtifactKind = "raw",
        media_type: str | None = None,
    ) -> ArtifactRef:
        """Store an immutable artifact and return its reference.

        ``data`` is bytes, a path, a binary file object or an async iterable of
        bytes (large files are streamed, never loaded whole). Re-putting
        identical bytes is a no-op returning the stored reference; other bytes
        raise :class:`~runstore.errors.ConflictError`.
        """
        validate_artifact_name(name)
        if kind not in _KINDS:
            raise InvalidInputError(
                f"unknown artifact kind {kind!r}; choose one of {', '.join(sorted(_KINDS))}",
                details={"kind": kind},
            )
        source = as_artifact_source(data)
        if self._summary is not None:
            raise ConflictError(f"run {self.run_id!r} has finished; artifacts are refused")
        writer = await self._writer(ARTIFACTS_STREAM, internal=True)
        stored = await self.store.artifact_backend.put(self.run_id, name, source)
        known = self._artifacts.get(name)
        if known is not None and known.sha256 == stored.sha256:
            return known
        ref = ArtifactRef(
            run_id=self.run_id,
            name=name,
            kind=kind,
            sha256=stored.sha256,
            size=stored.size,
            media_type=media_type or _media_type(name),
            created_at=utcnow(),
        )
        durable = writer.write(encode_record(ref))
        self._count(ARTIFACTS_STREAM, ref)  # written: a retry must not write it again
        self._artifacts[name] = ref
        if not durable:
            await writer.commit()
        self.store.plugins.artifact_stored(ref)
        return ref

    async def _release(self) -> None:
        """Stop the heartbeat and close the stream writers (records stay durable)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        writers = [*self._writers.items(), *self._internal_writers.items()]
        self._writers, self._internal_writers = {}, {}
        for stream, writer in writers:
            await writer.close()
            self.store.plugins.stream_flushed(self.run_id, stream, self._counts.get(stream, 0))
        self.store._live.discard(self)

    async def _restore(self, view: AsyncRunView) -> None:
        """Rebuild counters from what is stored (for a resumed run)."""
        for stream in await view.streams():
            if stream == ARTIFACTS_STREAM:
                for ref in await view.artifacts():
                    self._artifacts[ref.name] = ref
                    self._count(stream, ref)
                continue
            async for batch in view.read_batches(stream):
                for record in batch:
                    self._count(stream, record)

    # -- finishing ------------------------------------------------------------

    async def finish(
        self, status: RunStatus = "succeeded", *, error: str | None = None
    ) -> RunSummary:
        """Close the streams, write the summary and the final state. Idempotent."""
        if self._summary is not None:
            return self._summary
        if status not in ("succeeded", "failed", "cancelled", "crashed"):
            raise InvalidInputError(
                f"a run finishes as succeeded, failed, cancelled or crashed, not {status!r}"
            )
        await self._release()
        await self.store.log_backend.finalize(self.run_id)
        finished = utcnow()
        started = self._state.started_at or self._state.created_at
        judged = self._pass + self._fail
        summary = RunSummary(
            run_id=self.run_id,
            status=status,
            instance_count=self._counts.get("instances", 0),
            pass_count=self._pass,
            fail_count=self._fail,
            pass_rate=self._pass / judged if judged else None,
            started_at=started,
            finished_at=finished,
            duration_ms=round((finished - started).total_seconds() * 1000),
            stream_counts={
                k: self._counts[k] for k in sorted(self._counts) if k != ARTIFACTS_STREAM
            },
            artifact_count=len(self._artifacts),
            artifact_bytes=sum(ref.size for ref in self._artifacts.values()),
        )
        # A writer whose state is stale (recover marked the run crashed, another
        # writer took over) must not leave a summary behind: check first.
        stored = await self.store.state_backend.read_state(self.run_id)
        if stored.revision != self._state.revision and stored == self._unconfirmed:
            # our own state write raised (or its heartbeat was cancelled) after it landed
            self._state, self._unconfirmed = stored, None
        if stored.revision != self._state.revision:
            raise ConflictError(
                f"run {self.run_id!r} was updated by another writer (revision "
                f"{stored.revision}, this writer has {self._state.revision}); not finishing it",
                details={"run_id": self.run_id, "stored": stored.revision},
            )
        await self.store.state_backend.write_summary(summary)
        await self._write_state(summary=summary, status=status, finished_at=finished, error=error)
        self._summary = summary
        self.store.plugins.run_finished(summary)
        return summary


def _outcome(
    exc_type: type[BaseException] | None, exc: BaseException | None
) -> tuple[RunStatus, dict[str, Any]]:
    if exc_type is None:
        return "succeeded", {}
    if issubclass(exc_type, KeyboardInterrupt | asyncio.CancelledError):
        return "cancelled", {"error": exc_type.__name__}
    return "failed", {"error": f"{exc_type.__name__}: {exc}"}


class AsyncRunView:
    """Read side of one run: ``manifest``, ``state``, ``summary``, streams, artifacts."""

    def __init__(self, store: AsyncStore, manifest: RunManifest) -> None:
        self.store = store
        self.manifest = manifest
        self.run_id = manifest.run_id
        self.state: RunState
        self.summary: RunSummary | None = None
        self.torn_tails: dict[str, int] = {}
        """Bytes of torn tail seen at the end of each stream read (crash mid-write)."""

    def __repr__(self) -> str:
        return f"<AsyncRunView {self.run_id!r}>"

    async def refresh(self) -> None:
        """Reload ``state`` and ``summary``."""
        self.state = await self.store.state_backend.read_state(self.run_id)
        self.summary = await self.store.state_backend.read_summary(self.run_id)

    async def streams(self) -> list[str]:
        """Names of the run's streams, sorted (``artifacts`` included once one is stored)."""
        return await self.store.log_backend.list_streams(self.run_id)

    async def read_chunks(self, stream: str, offset: int = 0) -> AsyncIterator[bytes]:
        async for chunk in self.store.log_backend.read_bytes(self.run_id, stream, offset):
            yield chunk

    async def follow_chunks(
        self, stream: str, decoder: LineDecoder, *, follow: bool = False, poll_interval: float = 0.5
    ) -> AsyncIterator[bytes]:
        """Raw chunks of ``stream`` from ``decoder.offset`` on, for a consumer feeding ``decoder``.

        Decoding stays with the consumer (in the sync API, the caller's
        thread) so the event loop only moves bytes. With ``follow=True`` it
        polls for more until the run has finished, then drains once more.
        """
        validate_stream_name(stream, allow_reserved=True)
        while True:
            decoder.pending = b""
            async for chunk in self.store.log_backend.read_bytes(
                self.run_id, stream, decoder.offset
            ):
                yield chunk
            self.torn_tails[stream] = decoder.torn_tail
            if not follow or self.state.is_terminal:
                return
            await asyncio.sleep(poll_interval)
            await self.refresh()
            # Once the writer has finished, one last drain picks up its final records.
            follow = not self.state.is_terminal

    async def read_batches(
        self, stream: str, *, follow: bool = False, poll_interval: float = 0.5
    ) -> AsyncIterator[list[Any]]:
        """Records of ``stream`` in batches (one per chunk read): the streaming primitive."""
        decoder = LineDecoder(stream)
        async for chunk in self.follow_chunks(
            stream, decoder, follow=follow, poll_interval=poll_interval
        ):
            lines = decoder.feed(chunk)
            if lines:
                yield decoder.decode(lines)

    async def read(
        self, stream: str, *, follow: bool = False, poll_interval: float = 0.5
    ) -> AsyncIterator[Any]:
        """Records of ``stream`` in order. ``follow=True`` waits for more until the run ends."""
        decoder = LineDecoder(stream)
        async for chunk in self.follow_chunks(
            stream, decoder, follow=follow, poll_interval=poll_interval
        ):
            for record in decoder.records(decoder.feed(chunk)):
                yield record

    async def artifacts(self) -> list[ArtifactRef]:
        """References of every stored artifact, in the order they were stored."""
        refs: dict[str, ArtifactRef] = {}
        line = 0
        async for batch in self.read_batches(ARTIFACTS_STREAM):
            for data in batch:
                line += 1
                try:
                    ref = ArtifactRef.model_validate(data)
                except ValueError as exc:  # pydantic's ValidationError
                    raise CorruptError(
                        f"{ARTIFACTS_STREAM}.jsonl line {line} of run {self.run_id!r} is not an "
                        f"artifact reference ({exc.__class__.__name__}); "
                        "run 'runstore verify' to see every damaged record",
                        details={"run_id": self.run_id, "stream": ARTIFACTS_STREAM, "line": line},
                    ) from exc
                refs.setdefault(ref.name, ref)
        return list(refs.values())

    async def artifact(self, name: str) -> ArtifactRef:
        """The reference of artifact ``name``. Raises :class:`~runstore.errors.NotFoundError`."""
        validate_artifact_name(name)
        for ref in await self.artifacts():
            if ref.name == name:
                return ref
        raise NotFoundError(
            f"artifact {name!r} not found in run {self.run_id!r}; "
            f"'runstore show {self.run_id}' lists them",
            details={"run_id": self.run_id, "name": name},
        )

    async def open_artifact(self, name: str, *, verify: bool = False) -> AsyncIterator[bytes]:
        """The artifact's bytes in chunks; ``verify=True`` checks the sha256 at the end."""
        validate_artifact_name(name)
        expected = (await self.artifact(name)) if verify else None
        digest = hashlib.sha256()
        async for chunk in self.store.artifact_backend.read_chunks(self.run_id, name):
            if expected is not None:
                digest.update(chunk)
            yield chunk
        if expected is not None and digest.hexdigest() != expected.sha256:
            raise CorruptError(
                f"artifact {name!r} of run {self.run_id!r} does not match its sha256; "
                "it was modified or damaged after it was stored",
                details={
                    "run_id": self.run_id,
                    "name": name,
                    "expected": expected.sha256,
                    "actual": digest.hexdigest(),
                },
            )

    async def read_artifact(self, name: str, *, verify: bool = False) -> bytes:
        """The artifact's bytes (use :meth:`open_artifact` for large files)."""
        return b"".join([chunk async for chunk in self.open_artifact(name, verify=verify)])

    async def instance(self, instance_id: str) -> AsyncInstanceBundle:
        """The replay bundle of one instance (:mod:`runstore.replay`)."""
        return await load_instance(self, instance_id)

    def stream(self, name: str, model: type[_M]) -> AsyncTypedStreamReader[_M]:
        """Read ``name`` parsed into ``model``: ``async for record in view.stream(...)``."""
        return AsyncTypedStreamReader(self, name, model)
