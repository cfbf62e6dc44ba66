"""The sync API: ``store = runstore.open("runs")``.

It mirrors :mod:`runstore.aio` name for name. Slow operations run the async
implementation on a private event loop; ``append`` writes in the caller's
thread through the backend's writer, so it costs about as much as a raw
``write`` + ``flush`` of the encoded line.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from pydantic import BaseModel

from runstore.aio import AsyncRun, AsyncRunView, AsyncStore
from runstore.context import Scope, correlate, step_scope
from runstore.context import active as _correlation
from runstore.engine.core import outcome
from runstore.engine.portal import Portal
from runstore.engine.scopes import InstanceScope
from runstore.engine.store import DEFAULT_HEARTBEAT_SECONDS
from runstore.model.metadata import metric_record
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
from runstore.spi.backends import Concern, Durability
from runstore.spi.layout import METRICS_STREAM

if TYPE_CHECKING:  # imported where first used (see runstore.aio)
    from runstore.replay import InstanceBundle
    from runstore.streams import TypedStream, TypedStreamReader

__all__ = ["Run", "RunView", "Store", "open"]

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
) -> Store:
    """Open the store named by a config string.

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
    return Store(
        AsyncStore(
            url,
            routes={"state": state, "logs": logs, "artifacts": artifacts},
            durability=durability,
            heartbeat_interval=heartbeat_interval,
            plugins=plugins,
            options=options,
        )
    )


class Store:
    """A run store: creates runs, lists them and opens them for reading."""

    def __init__(self, astore: AsyncStore) -> None:
        self.aio = astore
        self.portal = Portal(
            inline=astore.core.inline,
            heartbeat=astore.core.heartbeat_interval,
        )
        """Internal: the private event loop the async API runs on (:mod:`runstore.engine`)."""

    @property
    def url(self) -> str:
        """The config string the store was opened with."""
        return self.aio.url

    @property
    def backend_names(self) -> dict[Concern, str]:
        """Which backend serves each concern: ``{'state': 'local', ...}``."""
        return self.aio.backend_names

    def __repr__(self) -> str:
        return f"<Store {self.url!r}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release backend resources and stop the private event loop.

        In a child process after ``fork()`` it does nothing: the parent owns them.
        """
        if self.portal.was_forked:
            return
        self.portal.call_once(self.aio.aclose())
        self.portal.close()

    def create_run(
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
    ) -> Run:
        """Create a run (status ``created``); see :meth:`runstore.aio.AsyncStore.create_run`.

        ``state``: the caller's first state, stored with the run in one write.
        """
        arun = self.portal.call(
            self.aio.create_run(
                run_id,
                sut_name=sut_name,
                scenario_ids=scenario_ids,
                seed=seed,
                config=config,
                tags=tags,
                metadata=metadata,
                correlation_id=correlation_id,
                log_retention=log_retention,
                state=state,
            )
        )
        return Run(arun, self.portal)

    def resume_run(
        self, run_id: str, *, force: bool = False, stale_after: timedelta | None = None
    ) -> Run:
        """Reopen an unfinished run for writing; see :meth:`runstore.aio.AsyncStore.resume_run`."""
        resumed = self.aio.resume_run(run_id, force=force, stale_after=stale_after)
        return Run(self.portal.call(resumed), self.portal)

    def get_run(self, run_id: str) -> RunView:
        """Open a run for reading. Raises :class:`~runstore.model.errors.NotFoundError`."""
        return RunView(self.portal.call(self.aio.get_run(run_id)), self.portal)

    def list_runs(
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

        See :meth:`runstore.aio.AsyncStore.list_runs` for ``where``,
        ``order_by`` and ``page_token``.
        """
        return self.portal.call(
            self.aio.list_runs(
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
        )

    def set_metadata(self, run_id: str, metadata: Mapping[str, Any]) -> RunRecord:
        """Merge ``metadata`` into a run's metadata, also after it finished.

        See :meth:`runstore.aio.AsyncStore.set_metadata`.
        """
        return self.portal.call(self.aio.set_metadata(run_id, metadata))

    def set_tags(
        self, run_id: str, *, add: Collection[str] = (), remove: Collection[str] = ()
    ) -> RunRecord:
        """Add and remove tags of a run, also after it finished; the new index record."""
        return self.portal.call(self.aio.set_tags(run_id, add=add, remove=remove))

    def delete_run(self, run_id: str, *, force: bool = False) -> None:
        """Delete a run; a live run needs ``force=True``."""
        self.portal.call(self.aio.delete_run(run_id, force=force))


class Run:
    """A run being written: ``with run:`` marks it succeeded, or failed on an exception."""

    def __init__(self, arun: AsyncRun, portal: Portal) -> None:
        self.aio = arun
        self._portal = portal
        self._core = arun.core
        self._core.portal = portal
        self.run_id = arun.run_id

    def __repr__(self) -> str:
        return f"<Run {self.run_id!r} {self.state.status}>"

    @property
    def manifest(self) -> RunManifest:
        """The run's immutable metadata."""
        return self.aio.manifest

    @property
    def state(self) -> RunState:
        """The state snapshot this writer wrote last."""
        return self.aio.state

    @property
    def summary(self) -> RunSummary | None:
        """The summary once the run finished, else ``None``."""
        return self.aio.summary

    @property
    def record_counts(self) -> dict[str, int]:
        """Records appended per stream by this writer."""
        return self.aio.record_counts

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        status, extra = outcome(exc_type, exc)
        self.finish(status, **extra)

    def start(self) -> None:
        """Mark the run ``running`` (``with run:`` and the first append do it)."""
        self._portal.call(self.aio.start())

    def release(self) -> None:
        """Stop writing without finishing; see :meth:`runstore.aio.AsyncRun.release`."""
        self._portal.call(self.aio.release())

    def set_state(self, data: Mapping[str, Any] | BaseModel) -> RunState:
        """Replace the caller's state; see :meth:`runstore.aio.AsyncRun.set_state`."""
        return self._portal.call(self.aio.set_state(data))

    def update_state(self, patch: Mapping[str, Any] | BaseModel) -> RunState:
        """Merge ``patch`` into the caller's state (top-level keys)."""
        return self._portal.call(self.aio.update_state(patch))

    def set_metadata(self, **fields: Any) -> RunState:
        """Merge ``fields`` into the run's metadata."""
        return self._portal.call(self.aio.set_metadata(**fields))

    def set_tags(self, *, add: Collection[str] = (), remove: Collection[str] = ()) -> RunState:
        """Add and remove tags of the run."""
        return self._portal.call(self.aio.set_tags(add=add, remove=remove))

    def log_metric(self, name: str, value: float, *, step: int | None = None) -> None:
        """Append ``{name, value, step, ts}`` to the ``metrics`` stream.

        ``summary.metrics`` keeps the last value of each metric.
        """
        self.append(METRICS_STREAM, metric_record(name, value, step))

    def append(self, stream: str, record: Any) -> None:
        """Append one record (a dict or pydantic model) to ``stream``; durable on return.

        Inside ``run.instance(...)`` / ``run.step(...)`` the record gets the
        correlation ids it lacks (:mod:`runstore.context`).
        """
        core = self._core
        if _correlation() is not None:  # RunCore.encode, inlined: the hot path
            record = correlate(core.run_id, record)
        line = encode_record(record)
        writer = core.writers.get(stream) if type(stream) is str else None
        if writer is None:  # the slow path validates the name
            writer = self._portal.call(core.open_writer(stream))
        if not core.write(writer, stream, line, record) and not writer.commit_sync():
            self._portal.call(writer.commit())

    def log(self, level: str, message: str, **fields: Any) -> None:
        """Append a log line to the ``logs`` stream."""
        self.append("logs", {"ts": utcnow(), "level": level, "message": message, **fields})

    def instance(self, instance_id: str, *, trace_id: str | None = None) -> Scope:
        """``with run.instance(id):`` correlates what runs inside with that instance.

        If the block raises without having appended the instance's record, an
        ``error`` instance (type, message, traceback) is appended, then the
        exception goes on.
        """
        return InstanceScope(
            self._core,
            instance_id,
            trace_id,
            append=lambda record: self.append("instances", record),
        )

    def step(self, step_id: str, *, trace_id: str | None = None) -> Scope:
        """``with run.step(id):`` correlates what runs inside with that step."""
        return step_scope(self.run_id, step_id, trace_id)

    def stream(self, name: str, model: type[_M]) -> TypedStream[_M]:
        """A typed handle on ``name``: ``handle.append(...)`` validates against ``model``."""
        from runstore.streams import TypedStream

        return TypedStream(self, name, model)

    def flush(self) -> None:
        """Make every record appended so far durable now."""
        self._portal.call(self.aio.flush())

    def set_phase(
        self,
        name: str,
        *,
        status: PhaseStatus | None = None,
        completed: int | None = None,
        total: int | None = None,
        message: str | None = None,
    ) -> RunState:
        """Record progress of a phase in the state snapshot."""
        return self._portal.call(
            self.aio.set_phase(
                name, status=status, completed=completed, total=total, message=message
            )
        )

    def put_artifact(
        self,
        name: str,
        data: object,
        *,
        kind: ArtifactKind = "raw",
        media_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ArtifactRef:
        """Store an immutable artifact; see :meth:`runstore.aio.AsyncRun.put_artifact`."""
        return self._portal.call(
            self.aio.put_artifact(name, data, kind=kind, media_type=media_type, metadata=metadata)
        )

    def finish(
        self,
        status: RunStatus = "succeeded",
        *,
        error: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> RunSummary:
        """Close the streams, write the summary and final state. Idempotent.

        ``metrics`` adds the caller's aggregates to ``summary.metrics``.
        """
        return self._portal.call(self.aio.finish(status, error=error, metrics=metrics))


class RunView:
    """Read side of one run: ``manifest``, ``state``, ``summary``, streams, artifacts."""

    def __init__(self, aview: AsyncRunView, portal: Portal) -> None:
        self.aio = aview
        self._portal = portal
        self.run_id = aview.run_id

    def __repr__(self) -> str:
        return f"<RunView {self.run_id!r}>"

    @property
    def manifest(self) -> RunManifest:
        """The run's immutable metadata."""
        return self.aio.manifest

    @property
    def state(self) -> RunState:
        """The state snapshot, as of opening the view or the last :meth:`refresh`."""
        return self.aio.state

    @property
    def summary(self) -> RunSummary | None:
        """The summary once the run finished, else ``None`` (as of the last :meth:`refresh`)."""
        return self.aio.summary

    @property
    def metadata(self) -> Metadata:
        """The run's current metadata (as of the last :meth:`refresh`)."""
        return self.aio.metadata

    @property
    def tags(self) -> list[str]:
        """The run's current tags (as of the last :meth:`refresh`)."""
        return self.aio.tags

    def state_as(self, model: type[_M]) -> _M | None:
        """The caller's state parsed into ``model`` in JSON mode; ``None`` if never set."""
        return self.aio.state_as(model)

    @property
    def torn_tails(self) -> dict[str, int]:
        """Bytes of torn tail seen at the end of each stream read."""
        return self.aio.torn_tails

    @property
    def damaged(self) -> dict[str, DamagedLines]:
        """Lines the last ``errors="skip"`` read of each stream skipped (empty: none)."""
        return self.aio.damaged

    def refresh(self) -> None:
        """Reload ``state`` and ``summary``."""
        self._portal.call(self.aio.refresh())

    def streams(self) -> list[str]:
        """Names of the run's streams, sorted (``artifacts`` included once one is stored)."""
        return self._portal.call(self.aio.streams())

    def count_records(self, stream: str) -> int:
        """How many records ``stream`` holds (complete lines, damaged ones too), unparsed."""
        return self._portal.call(self.aio.count_records(stream))

    def read(
        self,
        stream: str,
        *,
        follow: bool = False,
        poll_interval: float = 0.5,
        errors: ReadErrors = "raise",
    ) -> Iterator[Any]:
        """Records of ``stream`` in order, streamed.

        ``follow=True`` waits for more records until the run ends. A line that
        is not JSON raises :class:`~runstore.model.errors.CorruptError` naming it
        (``errors="raise"``) or is skipped and reported in :attr:`damaged`
        (``errors="skip"``).
        """
        decoder = LineDecoder(stream, errors=errors)
        chunks = self.aio.follow_chunks(stream, decoder, follow=follow, poll_interval=poll_interval)
        for chunk in self._portal.iterate(chunks, long=follow):
            yield from decoder.records(decoder.feed(chunk))

    def read_lines(
        self, stream: str, *, follow: bool = False, poll_interval: float = 0.5
    ) -> Iterator[bytes]:
        """The records of ``stream`` as stored: one JSON line each, without its newline."""
        decoder = LineDecoder(stream)
        chunks = self.aio.follow_chunks(stream, decoder, follow=follow, poll_interval=poll_interval)
        for chunk in self._portal.iterate(chunks, long=follow):
            yield from decoder.feed(chunk)

    def artifacts(self) -> list[ArtifactRef]:
        """References of every stored artifact, in the order they were stored."""
        return self._portal.call(self.aio.artifacts())

    def artifact(self, name: str) -> ArtifactRef:
        """The reference of artifact ``name``.

        Raises :class:`~runstore.model.errors.NotFoundError` if there is none.
        """
        return self._portal.call(self.aio.artifact(name))

    def open_artifact(self, name: str, *, verify: bool = False) -> Iterator[bytes]:
        """The artifact's bytes in chunks (streamed); ``verify=True`` checks its sha256."""
        return self._portal.iterate(self.aio.open_artifact(name, verify=verify))

    def read_artifact(self, name: str, *, verify: bool = False) -> bytes:
        """The artifact's bytes (use :meth:`open_artifact` for large files)."""
        return self._portal.call(self.aio.read_artifact(name, verify=verify))

    def instance(self, instance_id: str) -> InstanceBundle:
        """The replay bundle of one instance (:mod:`runstore.replay`)."""
        from runstore.replay import sync_bundle

        return sync_bundle(self._portal.call(self.aio.instance(instance_id)), self)

    def stream(self, name: str, model: type[_M]) -> TypedStreamReader[_M]:
        """Read ``name`` parsed into ``model``: ``for record in view.stream(name, Model)``."""
        from runstore.streams import TypedStreamReader

        return TypedStreamReader(self, name, model)
