"""The storage interfaces a backend implements, one per concern.

A *backend* is any object implementing one or more of
:class:`StateBackend`, :class:`LogBackend` and :class:`ArtifactBackend`. It
is registered through the ``runstore_register_backends`` hook with a
:class:`BackendSpec` and built from a config string by its factory.

Every operation is ``async``. The one exception is the append hot path:
:meth:`StreamWriter.write` is a plain method so that both the sync and the
async API can hand a record to the backend without an event-loop hop; it
returns whether the record is already durable under the writer's policy, and
if not the caller awaits :meth:`StreamWriter.commit`.
"""

from __future__ import annotations

import asyncio
import hashlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from runstore.model.errors import InvalidInputError, UnsupportedError
from runstore.model.query import DEFAULT_ORDER, Expr, OrderKey, parse_order_by, parse_where
from runstore.model.run import RunManifest, RunRecord, RunState, RunStatus, RunSummary
from runstore.model.selection import Page, paginate, query_fingerprint
from runstore.model.selection import matches as matches_where

__all__ = [
    "ALL_CONCERNS",
    "ArtifactBackend",
    "ArtifactSource",
    "BackendSpec",
    "Capabilities",
    "Concern",
    "Durability",
    "LogBackend",
    "RunQuery",
    "StateBackend",
    "StoredArtifact",
    "StreamWriter",
    "Target",
    "hash_source",
]

Concern = Literal["state", "logs", "artifacts"]
ALL_CONCERNS: frozenset[Concern] = frozenset({"state", "logs", "artifacts"})

Durability = Literal["flush", "fsync", "record", "batch"]
"""When ``append`` returns, relative to the record reaching storage.

``flush``: handed to the operating system (local default); ``fsync``: on
stable storage (group-committed); ``record``: one object-store write per
append; ``batch``: buffered up to the backend's documented window (object
store default).
"""

ArtifactSource = bytes | AsyncIterable[bytes]


@dataclass(frozen=True)
class Capabilities:
    """What a backend guarantees; the conformance kit switches tests on these.

    :ivar conditional_create: create-only writes (run ids, artifacts) are
        atomic across processes and hosts.
    :ivar compare_and_swap: state revisions are checked atomically.
    :ivar native_append: streams are appended in place; ``False`` means the
        backend writes segments and compacts them when the run finishes.
    :ivar consistent_listing: a run is listed as soon as ``create_run`` returns.
    :ivar persistent: data outlives the process.
    :ivar multi_host: ``conditional_create`` and ``compare_and_swap`` hold for
        processes on several hosts; ``False``: for the processes of one host only
        (an embedded engine on a local disk). The kit's processes share one host.
    :ivar any_event_loop: the backend may be called from any event loop, one
        after another or one per thread; ``False`` when its clients belong to
        the loop that first used them (aiobotocore's, say): runstore then
        refuses calls from another loop with a clear ``invalid_input``.
    :ivar inline: the backend's coroutines do their I/O with blocking calls
        (as the local file system does) and leave nothing to run on the event
        loop after they return, so the sync API may run them in the caller's
        thread instead of hopping to its loop thread for every call.
    """

    conditional_create: bool = True
    compare_and_swap: bool = True
    native_append: bool = True
    consistent_listing: bool = True
    persistent: bool = True
    any_event_loop: bool = True
    multi_host: bool = True
    inline: bool = False

    @property
    def multi_writer(self) -> bool:
        """Several processes or hosts may write to one store safely."""
        return self.conditional_create and self.compare_and_swap


@dataclass(frozen=True)
class Target:
    """A parsed config string, as handed to a backend factory.

    :ivar url: the config string without query and without a ``backend+`` prefix.
    :ivar scheme: ``file`` for bare paths, otherwise the URL scheme.
    :ivar path: for ``file`` the absolute local path; otherwise ``netloc + path``.
    :ivar options: keyword options merged with the URL query parameters.
    :ivar durability: the store's durability policy (``None``: the backend's
        default). One rule for everything a backend writes: state snapshots,
        summaries and artifacts are as durable on return as a record is under
        this policy (under ``flush`` they survive a crash of the process, under
        ``fsync`` a power cut too).
    """

    url: str
    scheme: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)
    durability: Durability | None = None


@dataclass(frozen=True)
class BackendSpec:
    """A backend registration: what a plugin passes to ``register``.

    :ivar name: user-visible name, also usable as ``name+scheme://`` to force it.
    :ivar factory: builds the backend object from a :class:`Target`.
    :ivar schemes: URL schemes claimed (``file`` covers bare paths).
    :ivar concerns: which of state, logs and artifacts the object serves.
    :ivar fallback: also claim any scheme no other backend claims.
    :ivar distribution: the package that provides it (for error messages).
    :ivar accepts: for a fallback backend, which unclaimed schemes it can serve.
    """

    name: str
    factory: Callable[[Target], object]
    schemes: tuple[str, ...] = ()
    concerns: frozenset[Concern] = ALL_CONCERNS
    fallback: bool = False
    description: str = ""
    distribution: str | None = None
    accepts: Callable[[str], bool] | None = None
    """For a fallback backend: whether it can serve a scheme (``None``: any)."""


_STATUSES: frozenset[str] = frozenset(get_args(RunStatus))


class RunQuery:
    """Filter, order and page for ``list_runs``; :meth:`matches` and :meth:`apply`
    are the reference semantics (:mod:`runstore.model.selection`).

    ``where`` is a filter in the language of :mod:`runstore.model.query` (text is
    parsed here, so a bad one raises :class:`~runstore.model.errors.InvalidInputError`
    at once; blank text is no filter) and applies on top of the classic filters
    (``status`` ... ``created_before``).
    ``order_by`` defaults to newest first (``created_at``, then ``run_id``, descending).
    ``page_token`` is the ``next_page_token`` of the previous page of the same query;
    it replaces ``offset``.
    """

    __slots__ = (
        "created_after",
        "created_before",
        "limit",
        "offset",
        "order_by",
        "page_token",
        "status",
        "sut_name",
        "tags",
        "where",
    )

    def __init__(
        self,
        *,
        status: RunStatus | Collection[RunStatus] | None = None,
        sut_name: str | None = None,
        tags: Collection[str] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int | None = None,
        offset: int = 0,
        where: str | Expr | None = None,
        order_by: str | Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> None:
        self.status: frozenset[str] | None = (
            None if status is None else frozenset([status] if isinstance(status, str) else status)
        )
        unknown = sorted(self.status - _STATUSES) if self.status else []
        if unknown:
            raise InvalidInputError(
                f"unknown run status {', '.join(map(repr, unknown))}; "
                f"choose from {', '.join(get_args(RunStatus))}",
                details={"status": unknown},
            )
        self.sut_name = sut_name
        # One tag may be given as a plain string, like one status (not as its characters).
        self.tags: frozenset[str] | None = (
            None if tags is None else frozenset([tags] if isinstance(tags, str) else tags)
        )
        self.created_after = created_after
        self.created_before = created_before
        self.limit = limit
        self.offset = offset
        # Blank text is no filter (as MLflow's filter_string); anything else but a tree
        # or None goes to the parser, which refuses what is not a filter.
        if where is not None and not isinstance(where, Expr):
            where = parse_where(where) if not isinstance(where, str) or where.strip() else None
        self.where: Expr | None = where
        self.order_by: tuple[OrderKey, ...] = parse_order_by(order_by)
        self.page_token = page_token
        if (limit is not None and limit < 0) or offset < 0:
            raise InvalidInputError(
                "limit and offset must not be negative",
                details={"limit": limit, "offset": offset},
            )
        if page_token is not None and offset:
            raise InvalidInputError(
                "give a page_token or an offset, not both", details={"offset": offset}
            )

    @property
    def classic(self) -> bool:
        """Only the classic filters, newest first and no page token: what a backend
        that does not push ``where``, ``order_by`` and pages down can answer itself
        (otherwise it falls back to :meth:`apply`)."""
        return self.where is None and self.order_by == DEFAULT_ORDER and self.page_token is None

    @property
    def fingerprint(self) -> str:
        """What this query's page tokens are bound to: every filter and the order."""
        classic = [
            None if self.status is None else sorted(self.status),
            self.sut_name,
            None if self.tags is None else sorted(self.tags),
            None if self.created_after is None else self.created_after.isoformat(),
            None if self.created_before is None else self.created_before.isoformat(),
        ]
        extra = [classic] if any(value is not None for value in classic) else []
        return query_fingerprint(self.where, self.order_by, *extra)

    def matches(self, record: RunRecord) -> bool:
        return (
            (self.status is None or record.status in self.status)
            and (self.sut_name is None or record.sut_name == self.sut_name)
            and (self.tags is None or self.tags.issubset(record.tags))
            and (self.created_after is None or record.created_at >= self.created_after)
            and (self.created_before is None or record.created_at < self.created_before)
            and (self.where is None or matches_where(self.where, record))
        )

    def apply(self, records: Collection[RunRecord]) -> Page:
        """Filter, order and page ``records`` (for backends that filter in memory).

        The result is a list (a :class:`~runstore.model.selection.Page`) whose
        ``next_page_token`` fetches the next page when ``limit`` cut it short.
        """
        return paginate(
            (r for r in records if self.matches(r)),
            self.order_by,
            fingerprint=self.fingerprint,
            limit=self.limit,
            offset=self.offset,
            page_token=self.page_token,
        )


class StateBackend(ABC):
    """Manifest, state snapshot, summary and the run index."""

    capabilities: Capabilities = Capabilities()

    async def verify_capabilities(self) -> Capabilities:
        """The capabilities, after checking those the backend can check against its
        storage (an S3 endpoint's conditional writes, say): runstore calls it before
        relying on them where it matters (``runstore backends --check``). The
        default checks nothing and returns :attr:`capabilities`."""
        return self.capabilities

    @abstractmethod
    async def create_run(self, manifest: RunManifest, state: RunState) -> None:
        """Create the run: manifest, first state and index record, all or nothing.

        Raises :class:`~runstore.model.errors.AlreadyExistsError` if the run id is taken.
        """

    @abstractmethod
    async def read_manifest(self, run_id: str) -> RunManifest:
        """Raises :class:`~runstore.model.errors.NotFoundError` for an unknown run."""

    @abstractmethod
    async def read_state(self, run_id: str) -> RunState:
        """Raises :class:`~runstore.model.errors.NotFoundError` for an unknown run."""

    @abstractmethod
    async def write_state(
        self, state: RunState, *, expected_revision: int, record: RunRecord
    ) -> None:
        """Replace the state if the stored revision is ``expected_revision``.

        ``state.revision`` is ``expected_revision + 1``; the index record is
        updated to ``record``. Raises :class:`~runstore.model.errors.ConflictError`
        when another writer got there first.
        """

    @abstractmethod
    async def write_summary(self, summary: RunSummary) -> None:
        """Write (or replace) ``summary.json``."""

    @abstractmethod
    async def read_summary(self, run_id: str) -> RunSummary | None:
        """The summary, or ``None`` while the run has not finished."""

    @abstractmethod
    async def list_runs(self, query: RunQuery) -> Sequence[RunRecord]:
        """Index records matching ``query``, in its order, one page of them.

        ``query.apply`` is the reference (it returns a :class:`~runstore.model.selection.Page`
        with the next page's token); a backend that pushes down only the classic
        filters uses it whenever ``query.classic`` is false.
        """

    @abstractmethod
    async def list_run_ids(self, prefix: str = "") -> list[str]:
        """Ids of every run whose id starts with ``prefix`` (any order)."""

    async def highest_run_number(self, prefix: str) -> int:
        """The largest ``N`` among run ids that are ``prefix`` followed by digits (0 if none).

        Used to generate run ids; override it when the backend can answer
        without listing every id (the default lists them).
        """
        numbers = [
            int(suffix)
            for suffix in (r[len(prefix) :] for r in await self.list_run_ids(prefix))
            if suffix.isascii() and suffix.isdigit()
        ]
        return max(numbers, default=0)

    @abstractmethod
    async def delete_run(self, run_id: str) -> None:
        """Remove the run's state files and index record (idempotent)."""

    async def rebuild_index(self) -> int:
        """Rebuild the run index from the runs themselves; returns how many runs it holds."""
        return len(await self.list_run_ids())

    async def aclose(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release resources (connections, file handles)."""


class StreamWriter(ABC):
    """Appends complete JSONL lines to one stream of one run.

    One writer per stream per run; it may be called from several asyncio
    tasks of one loop, or from several threads of the sync API.
    """

    durability: Durability = "flush"

    @abstractmethod
    def write(self, data: bytes) -> bool:
        """Hand ``data`` (one or more complete lines, each ending in ``\\n``) over.

        Must be cheap and never block for long: it is the append hot path.
        Returns ``True`` if the data is durable under the writer's policy,
        ``False`` if the caller must :meth:`commit` before acknowledging.
        Raises a :class:`~runstore.model.errors.RunstoreError` if the data could
        not be written; then nothing was acknowledged.
        """

    @abstractmethod
    async def commit(self) -> None:
        """Make everything written so far durable. Concurrent callers share one commit."""

    def commit_sync(self) -> bool:
        """Blocking :meth:`commit` for the sync API, if the backend has one.

        Returns ``False`` when not supported; the sync API then runs
        :meth:`commit` on its event loop.
        """
        return False

    @abstractmethod
    async def close(self) -> None:
        """Commit and release the stream. Writing after close is an error."""

    async def discard(self) -> None:
        """Release the stream, dropping what is not stored yet: its run is being deleted.

        The default closes the writer (a writer that stores every record on
        ``write`` has nothing to drop); a writer that buffers overrides it, so
        the records of a deleted run never land in a new run of the same id.
        """
        await self.close()


class LogBackend(ABC):
    """Append-only JSONL streams."""

    capabilities: Capabilities = Capabilities()

    @abstractmethod
    async def open_writer(
        self, run_id: str, stream: str, *, durability: Durability | None = None
    ) -> StreamWriter:
        """Open ``stream`` of ``run_id`` for appending, repairing a torn last line.

        ``durability=None`` picks the backend default. Raises
        :class:`~runstore.model.errors.UnsupportedError` for a policy it cannot honour.
        """

    @abstractmethod
    def read_bytes(self, run_id: str, stream: str, offset: int = 0) -> AsyncIterator[bytes]:
        """Yield the stream's bytes from byte ``offset`` on, in chunks, as currently stored.

        A stream that was never written yields nothing. The logical stream is
        the same byte sequence whether it is stored whole or in segments, so
        an offset stays valid while a live run is compacted.
        """

    @abstractmethod
    async def list_streams(self, run_id: str) -> list[str]:
        """Names of the streams the run has (sorted)."""

    async def finalize(self, run_id: str) -> None:  # noqa: B027 - optional
        """The run finished: compact segments into canonical files, if the backend has any."""

    async def wait_for_append(self, run_id: str, stream: str, offset: int, timeout: float) -> None:
        """Wait until ``stream`` may hold bytes past ``offset``, at most ``timeout`` seconds.

        A follower (``view.read(follow=True)``, ``runstore tail -f``) calls it
        between reads of a live run, ``timeout`` being its poll interval. The
        default sleeps ``timeout``: polling. A backend that is told of commits
        (PostgreSQL's LISTEN/NOTIFY) returns as soon as a record lands, and when
        the run finishes if it serves state too. Start listening *before*
        checking for bytes past ``offset``, so an append between the follower's
        read and this call is not missed. Returning early is always safe: the
        follower reads and waits again.
        """
        await asyncio.sleep(timeout)

    async def stream_size(self, run_id: str, stream: str) -> int:
        """Bytes ``stream`` holds (0 if it was never written): what deleting it frees.

        The default reads the stream through; backends override it with a
        cheaper look-up (a ``stat``, an object listing).
        """
        size = 0
        async for chunk in self.read_bytes(run_id, stream):
            size += len(chunk)
        return size

    async def delete_stream(self, run_id: str, stream: str) -> None:
        """Remove one stream of a finished run (idempotent): how log retention expires it.

        Called only for runs that have finished. The default raises
        :class:`~runstore.model.errors.UnsupportedError`; ``runstore gc`` then keeps
        the stream and says so.
        """
        raise UnsupportedError(
            f"the {type(self).__name__} log backend cannot delete a single stream",
            details={"run_id": run_id, "stream": stream},
        )

    @abstractmethod
    async def delete_run(self, run_id: str) -> None:
        """Remove every stream of the run (idempotent)."""

    async def aclose(self) -> None:  # noqa: B027 - optional
        """Release resources."""


@dataclass(frozen=True)
class StoredArtifact:
    """What an artifact backend reports after ``put``."""

    sha256: str
    size: int
    created: bool
    """``False`` when identical bytes were already stored (the put was a no-op)."""


class ArtifactBackend(ABC):
    """Immutable, content-hashed files."""

    capabilities: Capabilities = Capabilities()

    @abstractmethod
    async def put(self, run_id: str, name: str, source: ArtifactSource) -> StoredArtifact:
        """Store ``source`` as artifact ``name``, hashing it on the way, write-once.

        Identical bytes already stored: a no-op (``created=False``). Other
        bytes: :class:`~runstore.model.errors.ConflictError`, nothing changed.
        ``name`` is already validated.
        """

    @abstractmethod
    def read_chunks(self, run_id: str, name: str) -> AsyncIterator[bytes]:
        """Yield the artifact's bytes. Raises :class:`~runstore.model.errors.NotFoundError`."""

    def uri(self, run_id: str, name: str) -> str | None:
        """Where artifact ``name`` of ``run_id`` lives, in the backend's own terms.

        ``file:///...``, ``s3://bucket/...``: for tools that need a location.
        Computed, never stored (a copied store answers with its own place); no
        I/O. The default, ``None``, means the backend has no such address.
        """
        return None

    @abstractmethod
    async def delete_run(self, run_id: str) -> None:
        """Remove every artifact of the run (idempotent)."""

    async def aclose(self) -> None:  # noqa: B027 - optional
        """Release resources."""


async def hash_source(source: ArtifactSource) -> AsyncIterator[tuple[bytes, Any]]:
    """Yield ``(chunk, running_sha256)`` pairs: a helper for backends that stream."""
    digest = hashlib.sha256()
    if isinstance(source, bytes):
        digest.update(source)
        yield source, digest
        return
    async for chunk in source:
        digest.update(chunk)
        yield chunk, digest
