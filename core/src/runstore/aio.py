"""The async API: ``store = runstore.aio.open(url)``, ``run = await store.create_run(...)``.

The sync API in :mod:`runstore.store` mirrors it name for name. Both share
the same objects: the sync facade drives these coroutines on a private event
loop, except for the append hot path, which calls the backend's writer
directly in the caller's thread.

One module on purpose: ``runstore.aio`` is the async API's documented import
path and its classes (store, run, view) are that API, each method a thin face
over :mod:`runstore.engine`; their docstrings are most of its length.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Self, TypeVar

import orjson
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from runstore import __version__
from runstore.context import Scope, correlate, step_scope
from runstore.context import active as _correlation
from runstore.engine.core import RunCore, outcome
from runstore.engine.scopes import InstanceScope
from runstore.engine.store import (
    DEFAULT_HEARTBEAT_SECONDS,
    StoreCore,
    new_owner_token,
    owner_stale_after,
    released_here,
)
from runstore.model.checks import checked_async
from runstore.model.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptError,
    InvalidInputError,
    NotFoundError,
)
from runstore.model.metadata import (
    check_finite,
    json_object,
    metric_record,
    string_list,
    validate_metadata,
    validate_tags,
)
from runstore.model.names import validate_artifact_name, validate_run_id, validate_stream_name
from runstore.model.records import DamagedLines, LineDecoder, ReadErrors, encode_record
from runstore.model.run import (
    ArtifactKind,
    ArtifactRef,
    Metadata,
    PhaseStatus,
    RunManifest,
    RunRecord,
    RunState,
    RunStatus,
    RunSummary,
    utcnow,
)
from runstore.model.selection import Page
from runstore.registry.config import default_store_url
from runstore.registry.plugins import Plugins
from runstore.spi.backends import (
    ArtifactBackend,
    Concern,
    Durability,
    LogBackend,
    RunQuery,
    StateBackend,
)
from runstore.spi.layout import ARTIFACTS_STREAM, METRICS_STREAM

if TYPE_CHECKING:  # imported where first used: typed streams and replay cost ~20 ms
    from runstore.replay import AsyncInstanceBundle
    from runstore.streams import AsyncTypedStream, AsyncTypedStreamReader

__all__ = ["AsyncInstanceBundle", "AsyncRun", "AsyncRunView", "AsyncStore", "open"]


def __getattr__(name: str) -> object:
    if name == "AsyncInstanceBundle":
        from runstore.replay import AsyncInstanceBundle

        return AsyncInstanceBundle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_M = TypeVar("_M", bound=BaseModel)


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
        self.url = default_store_url() if url is None else url
        self.core = StoreCore(
            self.url,
            routes=routes or {},
            durability=durability,
            heartbeat_interval=heartbeat_interval,
            plugins=plugins,
            options=dict(options or {}),
        )
        """Internal: backends, plugins and open runs (:mod:`runstore.engine`)."""

    @property
    def plugins(self) -> Plugins:
        """The store's plugin manager (observers registered with it see this store's events)."""
        return self.core.plugins

    @property
    def durability(self) -> Durability | None:
        """The durability policy asked for (``None``: each backend's default)."""
        return self.core.durability

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between heartbeats of a live run (0: none)."""
        return self.core.heartbeat_interval

    @property
    def state_backend(self) -> StateBackend:
        """The backend serving the state concern."""
        return self.core.state

    @property
    def log_backend(self) -> LogBackend:
        """The backend serving the logs concern."""
        return self.core.logs

    @property
    def artifact_backend(self) -> ArtifactBackend:
        """The backend serving the artifacts concern."""
        return self.core.artifacts

    @property
    def backend_names(self) -> dict[Concern, str]:
        """Which backend serves each concern."""
        return {c: s.name for c, s in self.core.specs.items()}

    def __repr__(self) -> str:
        return f"<AsyncStore {self.url!r}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release open runs (their records stay durable; they stay unfinished) and backends."""
        self.core.check_loop(closing=True)
        await self.core.aclose()

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
        metadata: Mapping[str, Any] | None = None,
        correlation_id: str | None = None,
        log_retention: Mapping[str, int] | None = None,
        state: Mapping[str, Any] | BaseModel | None = None,
    ) -> AsyncRun:
        """Create a run (status ``created``) and return it for writing.

        Without ``run_id`` an id ``run_YYYYMMDD_NNN`` is generated and claimed
        atomically, so concurrent creators never collide. A given ``run_id``
        that exists raises :class:`~runstore.model.errors.AlreadyExistsError`.
        ``log_retention`` declares how many days a stream is kept once the
        run has finished (``{"logs": 7}``); ``runstore gc`` deletes it then.
        ``metadata`` and ``tags`` are the run's labels: indexed, filterable with
        ``list_runs(where=...)``, and changeable later (:meth:`set_metadata`,
        :meth:`set_tags`), also after the run finished.
        ``state`` is the caller's first state (as :meth:`AsyncRun.set_state`
        takes it), stored with the run in the same write: no reader ever sees
        the run without it, and it costs one write instead of two.
        """
        self.core.check_loop()
        now = utcnow()
        labels = validate_metadata(metadata)
        data = None if state is None else json_object(state, "state data")
        check_finite(config, "config")
        try:
            fields: dict[str, Any] = {
                "timestamp": now,
                "sut_name": sut_name,
                "scenario_ids": string_list("scenario_ids", scenario_ids),
                "seed": seed,
                "config": config or {},
                "tags": [] if tags is None else validate_tags(tags),
                "metadata": labels,
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
        owner = new_owner_token()
        if run_id is not None:
            validate_run_id(run_id)
            manifest, first = self._first_snapshots(run_id, fields, now, owner, data)
            await self.core.state.create_run(manifest, first)
        else:
            manifest, first = await self._claim_generated_id(fields, now, owner, data)
        self.plugins.run_created(manifest, first)
        return AsyncRun(self, RunCore(self.core, manifest, first, owner=owner))

    def _first_snapshots(
        self,
        run_id: str,
        fields: dict[str, Any],
        now: datetime,
        owner: str,
        data: dict[str, Any] | None,
    ) -> tuple[RunManifest, RunState]:
        manifest = RunManifest(run_id=run_id, **fields)
        state = RunState(
            run_id=run_id,
            created_at=now,
            updated_at=now,
            owner=owner,
            heartbeat_seconds=self.core.heartbeat_interval,
            data=data,
        )
        return manifest, state

    async def _claim_generated_id(
        self, fields: dict[str, Any], now: datetime, owner: str, data: dict[str, Any] | None
    ) -> tuple[RunManifest, RunState]:
        prefix = f"run_{now:%Y%m%d}_"
        number = await self.core.state.highest_run_number(prefix) + 1
        for _ in range(10_000):
            run_id = f"{prefix}{number:03d}"
            manifest, state = self._first_snapshots(run_id, fields, now, owner, data)
            try:
                await self.core.state.create_run(manifest, state)
            except AlreadyExistsError:
                number += 1
                continue
            return manifest, state
        raise ConflictError(f"could not claim a run id with prefix {prefix!r} after 10000 tries")

    async def resume_run(
        self, run_id: str, *, force: bool = False, stale_after: timedelta | None = None
    ) -> AsyncRun:
        """Reopen a run that is not finished (its writer died or handed over) for writing.

        A run whose writer is alive is a :class:`~runstore.model.errors.ConflictError`
        naming the owner and its last heartbeat: a run has one writer. Its writer
        is taken for dead when it released the run (closed it, or its store,
        without finishing), or when its heartbeat is older than ``stale_after``
        (default: three of the owner's heartbeat intervals, five minutes if it
        sends none). ``force=True`` takes the run over anyway: the old writer
        gets a conflict on its next state write or heartbeat, and stops writing.

        Counts for the summary are rebuilt from the stored streams, and each
        stream's torn tail (a write cut short by a crash) is repaired, whether
        or not the stream is written again. A finished run raises
        :class:`~runstore.model.errors.ConflictError`.
        """
        self.core.check_loop()
        view = await self.get_run(run_id)
        state = view.state
        if state.status in ("succeeded", "failed", "cancelled"):
            raise ConflictError(
                f"run {run_id!r} has finished ({state.status}); it cannot be resumed",
                details={"run_id": run_id, "status": state.status},
            )
        bound = owner_stale_after(state) if stale_after is None else stale_after
        alive = state.owner is not None and not released_here(state.owner)
        if alive and not force and not state.heartbeat_stale(utcnow(), bound):
            beat = state.heartbeat_at or state.updated_at
            raise ConflictError(
                f"run {run_id!r} is being written by {state.owner} (last heartbeat "
                f"{beat.isoformat()}); a run has one writer. Resume it once that writer "
                "has closed it or stopped, or pass force=True to take it over",
                details={"run_id": run_id, "owner": state.owner, "heartbeat_at": beat.isoformat()},
            )
        core = RunCore(self.core, view.manifest, state, owner=new_owner_token())
        try:
            await core.restore(view)
            changes: dict[str, Any] = {"heartbeat_seconds": self.core.heartbeat_interval}
            if core.state.status in ("created", "crashed"):
                changes.update(status="running", started_at=core.state.started_at or utcnow())
            # Claims the run: the old owner's next write fails.
            await core.write_state(touch="status" in changes, **changes)
            for stream, torn in sorted(view.torn_tails.items()):
                if torn:  # opening the stream's writer cuts its torn tail off
                    await core.open_writer(stream, internal=stream == ARTIFACTS_STREAM)
        except BaseException:
            await core.release()  # gives the claim up again, so that a retry may resume
            raise
        core.start_heartbeat()
        return AsyncRun(self, core)

    # -- reading --------------------------------------------------------------

    async def get_run(self, run_id: str) -> AsyncRunView:
        """Open a run for reading. Raises :class:`~runstore.model.errors.NotFoundError`."""
        self.core.check_loop()
        validate_run_id(run_id)
        view = AsyncRunView(self, await self.core.state.read_manifest(run_id))
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
        where: str | None = None,
        order_by: str | Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> Page:
        """Run index records, newest first, filtered and paginated.

        ``where`` filters in the language MLflow users know from ``search_runs``
        (``"metadata.project = 'demo' AND summary.pass_rate < 0.9"``, see
        :mod:`runstore.model.query`), on top of the other filters. ``order_by``
        sorts (``"-created_at"``, ``["metadata.lang", "summary.pass_rate DESC"]``).
        The result is a read-only sequence, a :class:`~runstore.model.selection.Page`: with a
        ``limit``, its ``next_page_token`` asks for the next page
        (``page_token=``), or is ``None`` after the last one. A malformed filter
        is an :class:`~runstore.model.errors.InvalidInputError` naming the
        position and what was expected there.
        """
        self.core.check_loop()
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
            where=where,
            order_by=order_by,
            page_token=page_token,
        )
        found = await self.core.state.list_runs(query)
        # A backend that returns a plain list cut the page itself: no next page to offer.
        return found if isinstance(found, Page) else Page(found)

    async def set_metadata(self, run_id: str, metadata: Mapping[str, Any]) -> RunRecord:
        """Merge ``metadata`` into the run's metadata (also after it finished); the new record.

        Values are JSON scalars or lists of them (:mod:`runstore.model.metadata`
        has the limits). A live writer, here or in another process, keeps
        writing: its next state write builds on the new labels.
        """
        self.core.check_loop()
        validate_run_id(run_id)
        await self.core.relabel(run_id, metadata)
        return await self._record(run_id)

    async def set_tags(
        self, run_id: str, *, add: Collection[str] = (), remove: Collection[str] = ()
    ) -> RunRecord:
        """Add and remove tags of a run (also after it finished); the new index record."""
        self.core.check_loop()
        validate_run_id(run_id)
        await self.core.relabel(run_id, add=add, remove=remove)
        return await self._record(run_id)

    async def _record(self, run_id: str) -> RunRecord:
        view = await self.get_run(run_id)
        return RunRecord.build(view.manifest, view.state, view.summary)

    async def delete_run(self, run_id: str, *, force: bool = False) -> None:
        """Delete a run's state, streams and artifacts. A live run needs ``force=True``."""
        self.core.check_loop()
        validate_run_id(run_id)
        state = await self.core.state.read_state(run_id)
        if not state.is_terminal and not force:
            raise ConflictError(
                f"run {run_id!r} is {state.status}; finish it first or pass force=True",
                details={"run_id": run_id, "status": state.status},
            )
        for live in [run for run in self.core.live if run.run_id == run_id]:
            await live.abandon()  # its buffered records must not land in a new run
        # Once per backend object (one serving several concerns deletes all it holds),
        # the state last: a run whose deletion stopped half-way is still listed.
        done: list[object] = []
        for backend in (self.core.artifacts, self.core.logs, self.core.state):
            if not any(backend is seen for seen in done):
                done.append(backend)
                await backend.delete_run(run_id)


class AsyncRun:
    """A run being written. Use it as ``async with run:``; see :class:`runstore.store.Run`.

    A face of the run's :class:`~runstore.engine.core.RunCore`, which the sync
    :class:`runstore.Run` and the :mod:`runstore.logging` handler share.
    """

    def __init__(self, store: AsyncStore, core: RunCore) -> None:
        self.store = store
        self.core = core
        """Internal: the run's write path (:mod:`runstore.engine`); not part of the API."""
        self.manifest = core.manifest
        self.run_id = core.run_id

    def __repr__(self) -> str:
        return f"<AsyncRun {self.run_id!r} {self.core.state.status}>"

    @property
    def state(self) -> RunState:
        """The state snapshot this writer wrote last."""
        return self.core.state

    @property
    def summary(self) -> RunSummary | None:
        """The summary once the run finished, else ``None``."""
        return self.core.summary

    @property
    def record_counts(self) -> dict[str, int]:
        """Records appended per stream by this writer."""
        return self.core.record_counts

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        status, extra = outcome(exc_type, exc)
        await self.finish(status, **extra)

    async def start(self) -> None:
        """Mark the run ``running`` (done by ``with run:`` and by the first append)."""
        await self.core.start()

    async def release(self) -> None:
        """Stop writing without finishing: close the streams (every record stays
        durable) and give up ownership, so ``resume_run`` may take the run at once.
        Closing the store does the same for every run it still has open."""
        await self.core.release()

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
        return await self.core.set_phase(
            name, status=status, completed=completed, total=total, message=message
        )

    async def set_state(self, data: Mapping[str, Any] | BaseModel) -> RunState:
        """Replace the caller's state (``state.data``), compare-and-swap; the new state.

        ``data`` is a JSON object: a dict or a pydantic model (stored in JSON
        mode). Another writer that got there first makes it a
        :class:`~runstore.model.errors.ConflictError`; nothing is written.
        """
        return await self.core.set_data(json_object(data, "state data"), merge=False)

    async def update_state(self, patch: Mapping[str, Any] | BaseModel) -> RunState:
        """Merge ``patch`` into the caller's state (top-level keys), like :meth:`set_state`."""
        return await self.core.set_data(json_object(patch, "state patch"), merge=True)

    async def set_metadata(self, **fields: Any) -> RunState:
        """Merge ``fields`` into the run's metadata (see :meth:`AsyncStore.set_metadata`)."""
        return await self.core.relabel(fields)

    async def set_tags(
        self, *, add: Collection[str] = (), remove: Collection[str] = ()
    ) -> RunState:
        """Add and remove tags of the run."""
        return await self.core.relabel(add=add, remove=remove)

    async def log_metric(self, name: str, value: float, *, step: int | None = None) -> None:
        """Append ``{name, value, step, ts}`` to the ``metrics`` stream.

        ``summary.metrics`` keeps the last value of each metric; it is
        filterable as ``metrics.<name>``. A non-finite value is refused.
        """
        await self.append(METRICS_STREAM, metric_record(name, value, step))

    async def append(self, stream: str, record: Any) -> None:
        """Append one record (a dict or pydantic model) to ``stream``; durable on return.

        Inside ``run.instance(...)`` / ``run.step(...)`` the record gets the
        correlation ids it lacks (:mod:`runstore.context`).
        """
        core = self.core  # the fast path, flat: see RunCore.write
        if _correlation() is not None:  # RunCore.encode, inlined: the hot path
            record = correlate(core.run_id, record)
        line = encode_record(record)
        writer = core.writers.get(stream) if type(stream) is str else None
        if writer is None or core.loop_bound:  # the slow path validates the name (and loop)
            writer = await core.open_writer(stream)
        if not core.write(writer, stream, line, record):
            await writer.commit()

    async def log(self, level: str, message: str, **fields: Any) -> None:
        """Append a log line (``ts``, ``level``, ``message``, extra fields) to ``logs``."""
        await self.append("logs", {"ts": utcnow(), "level": level, "message": message, **fields})

    def instance(self, instance_id: str, *, trace_id: str | None = None) -> Scope:
        """``async with run.instance(id):`` correlates what runs inside with the instance.

        If the block raises without having appended the instance's record, an
        ``error`` instance (type, message, traceback) is appended, then the
        exception goes on.
        """
        return InstanceScope(
            self.core,
            instance_id,
            trace_id,
            append_async=lambda record: self.append("instances", record),
        )

    def step(self, step_id: str, *, trace_id: str | None = None) -> Scope:
        """``with`` / ``async with run.step(id):`` correlates what runs inside with a step."""
        return step_scope(self.run_id, step_id, trace_id)

    def stream(self, name: str, model: type[_M]) -> AsyncTypedStream[_M]:
        """A typed handle on ``name``: ``await handle.append(...)`` validates against ``model``."""
        from runstore.streams import AsyncTypedStream

        return AsyncTypedStream(self, name, model)

    async def flush(self) -> None:
        """Make every record appended so far durable now (forces a segment on object stores)."""
        await self.core.flush()

    async def put_artifact(
        self,
        name: str,
        data: object,
        *,
        kind: ArtifactKind = "raw",
        media_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ArtifactRef:
        """Store an immutable artifact and return its reference.

        ``data`` is bytes, a path, a binary file object or an async iterable of
        bytes (large files are streamed, never loaded whole). Re-putting
        identical bytes is a no-op returning the stored reference; other bytes
        raise :class:`~runstore.model.errors.ConflictError`. ``metadata`` (a JSON
        object) is stored on the reference and is as immutable as the bytes.
        """
        validate_artifact_name(name)
        return await self.core.put_artifact(
            name, data, kind=kind, media_type=media_type, metadata=metadata
        )

    async def finish(
        self,
        status: RunStatus = "succeeded",
        *,
        error: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> RunSummary:
        """Close the streams, write the summary and the final state. Idempotent.

        ``metrics`` adds the caller's aggregates (``{"p95_latency_ms": 212.5}``)
        to ``summary.metrics``, filterable as ``metrics.<name>``.
        """
        return await self.core.finish(status, error=error, metrics=metrics)


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
        self.damaged: dict[str, DamagedLines] = {}
        """Lines the last ``errors="skip"`` read of each stream skipped (empty: none)."""

    def __repr__(self) -> str:
        return f"<AsyncRunView {self.run_id!r}>"

    @property
    def metadata(self) -> Metadata:
        """The run's current metadata (it may change after the run finished)."""
        return self.manifest.metadata if self.state.metadata is None else self.state.metadata

    @property
    def tags(self) -> list[str]:
        """The run's current tags."""
        return self.manifest.tags if self.state.tags is None else self.state.tags

    def state_as(self, model: type[_M]) -> _M | None:
        """The caller's state (``state.data``) parsed into ``model`` in JSON mode.

        JSON mode means what was stored as JSON is read as JSON, so models with
        ``strict=True`` work (a datetime stored as a string parses back). ``None``
        while the run has no caller state.
        """
        if self.state.data is None:
            return None
        try:
            return model.model_validate_json(orjson.dumps(self.state.data))
        except ValueError as exc:  # pydantic's ValidationError
            raise InvalidInputError(
                f"the state data of run {self.run_id!r} does not match {model.__name__}: "
                f"{exc.__class__.__name__}; read it as view.state.data",
                details={"run_id": self.run_id, "model": model.__name__},
            ) from None

    async def refresh(self) -> None:
        """Reload ``state`` and ``summary``."""
        self.store.core.check_loop()
        self.state = await self.store.state_backend.read_state(self.run_id)
        self.summary = await self.store.state_backend.read_summary(self.run_id)

    async def streams(self) -> list[str]:
        """Names of the run's streams, sorted (``artifacts`` included once one is stored)."""
        self.store.core.check_loop()
        return await self.store.log_backend.list_streams(self.run_id)

    async def follow_chunks(
        self,
        stream: str,
        decoder: LineDecoder,
        *,
        follow: bool = False,
        poll_interval: float = 0.5,
        stale_after: timedelta | None = None,
    ) -> AsyncIterator[bytes]:
        """Raw chunks of ``stream`` from ``decoder.offset`` on, for a consumer feeding ``decoder``.

        Decoding stays with the consumer (in the sync API, the caller's
        thread) so the event loop only moves bytes. With ``follow=True`` it
        waits for more (the log backend's ``wait_for_append``: at most
        ``poll_interval``) until the run has finished, then drains once more.
        With ``stale_after`` it also stops once the run's heartbeat is older
        than that (its writer stopped without finishing): ``state`` tells which.
        """
        self.store.core.check_loop()
        validate_stream_name(stream, allow_reserved=True)
        if decoder.errors == "skip":
            self.damaged[stream] = decoder.damaged  # filled as the consumer decodes
        while True:
            decoder.pending = b""
            async for chunk in self.store.log_backend.read_bytes(
                self.run_id, stream, decoder.offset
            ):
                yield chunk
            self.torn_tails[stream] = decoder.torn_tail
            if not follow or self.state.is_terminal:
                return
            if stale_after is not None and self.state.heartbeat_stale(utcnow(), stale_after):
                return  # its writer stopped: nothing more will come
            await self.store.log_backend.wait_for_append(
                self.run_id, stream, decoder.offset, poll_interval
            )
            await self.refresh()
            # Once the writer has finished, one last drain picks up its final records.
            follow = not self.state.is_terminal

    async def count_records(self, stream: str) -> int:
        """How many records ``stream`` holds: its complete lines, damaged ones too.

        Nothing is parsed (bytes are only counted), so it costs a fraction of
        reading; a torn tail is not a record and is reported in ``torn_tails``.
        """
        decoder = LineDecoder(stream)
        total = 0
        async for chunk in self.follow_chunks(stream, decoder):
            total += decoder.count(chunk)
        return total

    async def read_batches(
        self,
        stream: str,
        *,
        follow: bool = False,
        poll_interval: float = 0.5,
        errors: ReadErrors = "raise",
    ) -> AsyncIterator[list[Any]]:
        """Records of ``stream`` in batches (one per chunk read): the streaming primitive.

        ``errors`` as in :meth:`read`.
        """
        self.store.core.check_loop()
        decoder = LineDecoder(stream, errors=errors)
        async for chunk in self.follow_chunks(
            stream, decoder, follow=follow, poll_interval=poll_interval
        ):
            batch = decoder.decode(decoder.feed(chunk))
            if batch:
                yield batch

    async def read(
        self,
        stream: str,
        *,
        follow: bool = False,
        poll_interval: float = 0.5,
        errors: ReadErrors = "raise",
    ) -> AsyncIterator[Any]:
        """Records of ``stream`` in order. ``follow=True`` waits for more until the run ends.

        A line that is not JSON raises :class:`~runstore.model.errors.CorruptError`
        naming it (``errors="raise"``), or is skipped and reported in
        ``damaged[stream]`` (``errors="skip"``). A torn tail is never damage.
        """
        decoder = LineDecoder(stream, errors=errors)
        async for chunk in self.follow_chunks(
            stream, decoder, follow=follow, poll_interval=poll_interval
        ):
            for record in decoder.records(decoder.feed(chunk)):
                yield record

    async def read_lines(
        self, stream: str, *, follow: bool = False, poll_interval: float = 0.5
    ) -> AsyncIterator[bytes]:
        """The records of ``stream`` as stored: one JSON line each, without its newline.

        For your own parser (``Model.model_validate_json(line)``); a torn tail
        is held back as in :meth:`read`.
        """
        self.store.core.check_loop()
        decoder = LineDecoder(stream)
        async for chunk in self.follow_chunks(
            stream, decoder, follow=follow, poll_interval=poll_interval
        ):
            for line in decoder.feed(chunk):
                yield line

    async def artifacts(self) -> list[ArtifactRef]:
        """References of every stored artifact, in the order they were stored."""
        self.store.core.check_loop()
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
        backend = self.store.artifact_backend
        return [
            ref.model_copy(update={"uri": backend.uri(self.run_id, n)}) for n, ref in refs.items()
        ]

    async def artifact(self, name: str) -> ArtifactRef:
        """The reference of artifact ``name``.

        Raises :class:`~runstore.model.errors.NotFoundError` if there is none.
        """
        self.store.core.check_loop()
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
        self.store.core.check_loop()
        validate_artifact_name(name)
        chunks = self.store.artifact_backend.read_chunks(self.run_id, name)
        if verify:
            chunks = checked_async(chunks, await self.artifact(name))
        async for chunk in chunks:
            yield chunk

    async def read_artifact(self, name: str, *, verify: bool = False) -> bytes:
        """The artifact's bytes (use :meth:`open_artifact` for large files)."""
        return b"".join([chunk async for chunk in self.open_artifact(name, verify=verify)])

    async def instance(self, instance_id: str) -> AsyncInstanceBundle:
        """The replay bundle of one instance (:mod:`runstore.replay`)."""
        from runstore.replay import load_instance

        return await load_instance(self, instance_id)

    def stream(self, name: str, model: type[_M]) -> AsyncTypedStreamReader[_M]:
        """Read ``name`` parsed into ``model``: ``async for record in view.stream(...)``."""
        from runstore.streams import AsyncTypedStreamReader

        return AsyncTypedStreamReader(self, name, model)
