"""The fsspec backend: runs on S3 (s3fs) or any fsspec filesystem.

It writes the Windtunnel tree of :mod:`runstore.spi.layout` under the store
root (``s3://bucket/prefix``, ``fsspec+memory://name``, ...) and serves all
three concerns.

Streams without append
    Object stores cannot append, so a stream is written as immutable
    *segment* objects ``<run>/.segments/<stream>/<start>.jsonl``, named by the
    logical byte offset of their first byte. When the run finishes
    (:meth:`FsspecBackend.finalize`) they are concatenated into the canonical
    ``<run>/<stream>.jsonl`` and deleted. Readers assemble one byte stream
    from the canonical file (bytes ``[0, size)``) and the segments after it,
    so an offset means the same byte before, during and after compaction
    (``runstore tail -f`` keeps its place while a live run is compacted).

Durability (``runstore.open(url, durability=...)``)
    ``record``
        one PUT per ``append`` (concurrent appenders share one): a record is
        stored before ``append`` returns.
    ``batch`` (default)
        records are buffered and written as one segment when
        ``batch_records`` records (default 5000) or ``batch_bytes`` bytes
        (default 4 MiB) are buffered, ``batch_interval`` seconds (default 1)
        after the oldest buffered record, on ``run.flush()`` and when the run
        finishes or the store is closed. **Window:** a record acknowledged by
        ``append`` is lost if the process dies within that window (at most
        ``batch_interval`` seconds or one batch). While the store is
        unreachable, buffered records are kept and retried, appends raise
        :class:`~runstore.model.errors.BackendUnavailableError` (the failing record
        may still be written later), and the buffer never exceeds twice
        ``batch_bytes``.

Concurrency
    On S3 (``conditional_create`` and ``compare_and_swap``), run creation,
    artifacts, segments and the index use ``If-None-Match: *`` and the state
    snapshot uses ``If-Match: <ETag>``, so writers on many hosts never claim
    one run id twice, never lose an index entry and never overwrite a newer
    state. Other fsspec filesystems have no conditional writes: the backend
    checks under a process-wide lock (exact for one writing process, and for
    ``memory``, whose data lives in the process) and declares
    ``conditional_create=False``/``compare_and_swap=False`` for the others,
    so callers that need several writing processes refuse it.

    S3 endpoints are not trusted blindly: before the first write the backend
    checks that the endpoint refuses a second ``If-None-Match: *`` PUT and a
    stale ``If-Match`` PUT with ``412`` (:mod:`runstore_fsspec._conditional`).
    One that does not (``s3rver``, older MinIO, some Ceph gateways) is served
    like a filesystem without conditional writes: capabilities off, each
    conditional write checked inside the process, and one writing process at
    a time under a writer lease built from claims and a listing
    (:class:`~runstore_fsspec._lease.ListingLease`); with
    ``require=multi_writer`` the backend refuses to write instead.

Run index
    One small object per run, ``.runstore/records/<run_id>.json``
    (``{"revision": n, "record": {...}}``), written with the state. ``list_runs``
    lists that directory (1 request per 1000 runs) and reads only the objects
    whose ETag differs from the compacted snapshot
    ``.runstore/records.snapshot.json``, which it rewrites once
    ``index_compact_after`` objects were stale. So listing 10 000 runs is
    about a dozen requests.

Options (keyword arguments or URL query parameters): ``batch_records``,
``batch_bytes``, ``batch_interval``, ``part_size`` (multipart part size,
default 8 MiB), ``upload_concurrency`` (parts in flight, default 4),
``index_compact_after`` (default 64), and for S3 ``retries`` (attempts,
default 3), ``connect_timeout``, ``read_timeout``, ``region``; every other
option goes to the filesystem (``endpoint_url``, ``anon``, ``key``,
``secret``, ``token``, ``profile``, ``client_kwargs``, ...); they are parsed in
:mod:`runstore_fsspec._open`.

One class serves the three concerns because they share one object store, one
writer lease and the segment bookkeeping that ``finalize`` compacts; the
object-store primitives live in :mod:`runstore_fsspec._objects`, the segment
writer in :mod:`runstore_fsspec._streams`, the lease in
:mod:`runstore_fsspec._lease`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Sequence
from typing import Any, Final, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from runstore.model.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptError,
    NotFoundError,
    RunstoreError,
    UnsupportedError,
)
from runstore.model.run import RunManifest, RunRecord, RunState, RunSummary
from runstore.spi.backends import (
    ArtifactBackend,
    ArtifactSource,
    Capabilities,
    Durability,
    LogBackend,
    RunQuery,
    StateBackend,
    StoredArtifact,
    StreamWriter,
)
from runstore.spi.layout import (
    INDEX_RECORDS_DIR,
    INDEX_SNAPSHOT,
    SEGMENTS_DIR,
    STREAM_SUFFIX,
    artifact_path,
    dump_snapshot,
    index_record_path,
    manifest_path,
    parse_segment_name,
    segment_path,
    segments_dir,
    state_path,
    stream_path,
    summary_path,
)
from runstore_fsspec._conditional import ConditionalWrites, Verdict
from runstore_fsspec._errors import PreconditionFailed
from runstore_fsspec._lease import ListingLease, WriterLease
from runstore_fsspec._objects import ObjectInfo, ObjectStore
from runstore_fsspec._streams import BatchPolicy, SegmentWriter

__all__ = ["BatchPolicy", "FsspecBackend"]

_log = logging.getLogger("runstore_fsspec")
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

_CONCURRENT_READS: Final = 64
_READ_RETRIES: Final = 5
_SNAPSHOT_VERSION: Final = 1


class _Segment:
    __slots__ = ("key", "size", "start")

    def __init__(self, start: int, info: ObjectInfo) -> None:
        self.start = start
        self.key = info.key
        self.size = info.size

    @property
    def end(self) -> int:
        return self.start + self.size


class FsspecBackend(StateBackend, LogBackend, ArtifactBackend):
    """State, logs and artifacts on an object store (see the module docstring)."""

    def __init__(
        self,
        objects: ObjectStore,
        *,
        policy: BatchPolicy | None = None,
        index_compact_after: int = 64,
        conditional: ConditionalWrites | None = None,
    ) -> None:
        self.objects = objects
        self.policy = policy or BatchPolicy()
        self.index_compact_after = max(index_compact_after, 1)
        atomic = objects.conditional_writes
        self.capabilities = Capabilities(
            conditional_create=atomic,
            compare_and_swap=atomic,
            native_append=False,
            consistent_listing=True,
            persistent=objects.persistent,
            any_event_loop=False,  # s3fs/aiobotocore clients belong to their loop
        )
        self._state_tags: dict[str, tuple[int, str | None]] = {}
        self._index_tags: dict[str, tuple[int, str | None]] = {}
        self._index_cache: dict[str, tuple[str, RunRecord]] = {}
        self._artifact_dirs: dict[str, set[str]] = {}
        self._writers: weakref.WeakSet[SegmentWriter] = weakref.WeakSet()
        self._lease: WriterLease | None = (
            WriterLease(objects) if not atomic and objects.persistent else None
        )
        self._conditional = conditional
        self._refused: RunstoreError | None = None
        self._single_writer = False
        if conditional is not None and conditional.verdict is not None:
            self._apply(conditional.verdict)  # this process knows the endpoint already

    def __repr__(self) -> str:
        return f"<FsspecBackend {self.objects.url!r}>"

    # -- helpers --------------------------------------------------------------

    async def _writable(self) -> None:
        """Without conditional writes, only the process holding the writer lease writes.

        On S3 the endpoint's conditional writes are checked first (once per store).
        """
        if self._conditional is not None:
            self._apply(await self._conditional.check())
        if self._refused is not None:
            raise self._refused
        if self._lease is not None:
            await self._lease.acquire()

    def _apply(self, verdict: Verdict) -> None:
        """Serve the store as the endpoint's verdict allows (idempotent)."""
        guard = self._conditional
        if guard is None or verdict.honoured or self._refused is not None or self._single_writer:
            return
        if guard.require_multi_writer:
            self._refused = guard.refusal(verdict)
            return
        guard.objects.emulate_conditions(send_headers=not verdict.headers_rejected)
        self._single_writer = True
        self.capabilities = dataclasses.replace(
            self.capabilities, conditional_create=False, compare_and_swap=False
        )
        self._lease = ListingLease(self.objects)
        guard.announce(verdict)

    async def verify_capabilities(self) -> Capabilities:
        """Probe the endpoint's conditional writes (S3), then the capabilities it has."""
        await self.check_conditional_writes()
        return self.capabilities

    async def check_conditional_writes(self) -> Verdict | None:
        """The verdict on the endpoint's conditional writes (S3 only; ``None`` elsewhere).

        Probes the endpoint unless this process or the store prefix already
        holds a fresh verdict, and serves the store accordingly from then on.
        """
        if self._conditional is None:
            return None
        verdict = await self._conditional.check()
        self._apply(verdict)
        return verdict

    async def _holds(self, key: str, data: bytes) -> bool:
        """Whether ``key`` stores exactly ``data`` (our own retried write landed)."""
        return (await self._holds_tagged(key, data))[0]

    async def _holds_tagged(self, key: str, data: bytes) -> tuple[bool, str | None]:
        """:meth:`_holds`, and the stored version's tag."""
        try:
            stored, tag = await self.objects.get(key)
        except NotFoundError:
            return False, None
        return stored == data, tag

    def _parse(self, model: type[M], data: bytes, key: str) -> M:
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            raise CorruptError(
                f"{self.objects.describe(key)} is not a valid {model.__name__}: {exc}",
                details={"key": key},
            ) from exc

    @staticmethod
    def _run_not_found(run_id: str) -> NotFoundError:
        return NotFoundError(f"run {run_id!r} not found", details={"run_id": run_id})

    async def _gather(self, coros: list[Coroutine[Any, Any, T]]) -> list[T]:
        limit = asyncio.Semaphore(_CONCURRENT_READS)

        async def bounded(coro: Coroutine[Any, Any, T]) -> T:
            async with limit:
                return await coro

        return list(await asyncio.gather(*(bounded(c) for c in coros)))

    # -- state ----------------------------------------------------------------

    async def create_run(self, manifest: RunManifest, state: RunState) -> None:
        await self._writable()
        run_id = manifest.run_id
        body = dump_snapshot(manifest)
        try:
            await self.objects.put(manifest_path(run_id), body, create_only=True)
        except PreconditionFailed:
            if not await self._holds(manifest_path(run_id), body):
                raise AlreadyExistsError(
                    f"run {run_id!r} already exists; pick another run id",
                    details={"run_id": run_id},
                ) from None
        body = dump_snapshot(state)
        try:
            # Create-only too: two creators whose manifests came out byte-identical (the
            # same id, sut and microsecond) both pass the manifest check above; the state
            # names its creator's owner token, so only one of them holds it.
            tag = await self.objects.put(state_path(run_id), body, create_only=True)
        except PreconditionFailed:
            holds, tag = await self._holds_tagged(state_path(run_id), body)
            if not holds:  # another creator's run: not ours to free
                raise AlreadyExistsError(
                    f"run {run_id!r} already exists; pick another run id",
                    details={"run_id": run_id},
                ) from None
        try:
            self._state_tags[run_id] = (state.revision, tag)
            await self._write_index(run_id, state.revision, RunRecord.build(manifest, state))
        except BaseException:
            # all or nothing: free the id again (best effort; the store may be down)
            with contextlib.suppress(Exception):
                await self.objects.delete(
                    [index_record_path(run_id), state_path(run_id), manifest_path(run_id)]
                )
            self._state_tags.pop(run_id, None)
            self._index_tags.pop(run_id, None)
            raise

    async def read_manifest(self, run_id: str) -> RunManifest:
        key = manifest_path(run_id)
        try:
            data, _ = await self.objects.get(key)
        except NotFoundError as exc:
            raise self._run_not_found(run_id) from exc
        return self._parse(RunManifest, data, key)

    async def read_state(self, run_id: str) -> RunState:
        key = state_path(run_id)
        try:
            data, tag = await self.objects.get(key)
        except NotFoundError as exc:
            raise self._run_not_found(run_id) from exc
        state = self._parse(RunState, data, key)
        self._state_tags[run_id] = (state.revision, tag)
        return state

    def _stale(self, run_id: str, stored: int, expected: int) -> ConflictError:
        return ConflictError(
            f"state of run {run_id!r} is at revision {stored}, "
            f"not {expected}: another writer updated it; re-read and retry",
            details={"run_id": run_id, "stored": stored, "expected": expected},
        )

    async def write_state(
        self, state: RunState, *, expected_revision: int, record: RunRecord
    ) -> None:
        await self._writable()
        run_id = state.run_id
        key = state_path(run_id)
        known = self._state_tags.get(run_id)
        if known is None or known[0] != expected_revision:
            stored = await self.read_state(run_id)
            if stored.revision != expected_revision:
                raise self._stale(run_id, stored.revision, expected_revision)
            known = self._state_tags[run_id]
        body = dump_snapshot(state)
        try:
            tag = await self.objects.put(key, body, if_match=known[1])
        except (PreconditionFailed, NotFoundError):
            self._state_tags.pop(run_id, None)
            try:
                data, tag = await self.objects.get(key)
            except NotFoundError as exc:
                raise self._run_not_found(run_id) from exc
            if data != body:
                stored_revision = self._parse(RunState, data, key).revision
                raise self._stale(run_id, stored_revision, expected_revision) from None
        self._state_tags[run_id] = (state.revision, tag)
        await self._write_index(run_id, state.revision, record)

    async def write_summary(self, summary: RunSummary) -> None:
        await self._writable()
        if await self.objects.head(manifest_path(summary.run_id)) is None:
            raise self._run_not_found(summary.run_id)
        await self.objects.put(summary_path(summary.run_id), dump_snapshot(summary))

    async def read_summary(self, run_id: str) -> RunSummary | None:
        key = summary_path(run_id)
        try:
            data, _ = await self.objects.get(key)
        except NotFoundError:
            if await self.objects.head(manifest_path(run_id)) is None:
                raise self._run_not_found(run_id) from None
            return None
        return self._parse(RunSummary, data, key)

    async def list_run_ids(self, prefix: str = "") -> list[str]:
        dirs, _ = await self.objects.listdir("", prefix)
        return [name for name in dirs if name[:1] not in (".", "_")]

    async def delete_run(self, run_id: str) -> None:
        await self._writable()
        await self.objects.delete([index_record_path(run_id)])
        keep = manifest_path(run_id)  # deleted last: the id stays claimed until the end
        keys = [info.key for info in await self.objects.list_tree(run_id) if info.key != keep]
        await self.objects.delete(keys)
        await self.objects.delete([keep])
        await self.objects.delete_tree(run_id)
        for table in (self._state_tags, self._index_tags, self._index_cache, self._artifact_dirs):
            table.pop(run_id, None)

    # -- run index --------------------------------------------------------------

    async def _write_index(self, run_id: str, revision: int, record: RunRecord) -> None:
        """Store the run's index object unless a newer revision is already there."""
        key = index_record_path(run_id)
        body = orjson.dumps({"revision": revision, "record": record.model_dump(mode="json")})
        known = self._index_tags.get(run_id)
        if known is not None and known[0] > revision:
            return  # this process already indexed a newer state
        for _ in range(8):
            try:
                if known is None:
                    tag = await self.objects.put(key, body, create_only=True)
                else:
                    tag = await self.objects.put(key, body, if_match=known[1])
            except (PreconditionFailed, NotFoundError):
                try:
                    stored, stored_tag = await self.objects.get(key)
                except NotFoundError:
                    known = None
                    continue
                if stored == body:
                    tag = stored_tag
                else:
                    stored_revision = int(orjson.loads(stored).get("revision", -1))
                    if stored_revision > revision:
                        return  # a newer state already indexed itself
                    known = (stored_revision, stored_tag)
                    continue
            self._index_tags[run_id] = (revision, tag)
            return
        raise ConflictError(
            f"could not update the index entry of run {run_id!r}: it keeps changing",
            details={"run_id": run_id},
        )

    def _decode_index(self, data: bytes, key: str) -> RunRecord:
        try:
            return RunRecord.model_validate(orjson.loads(data)["record"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
            raise CorruptError(
                f"index entry {self.objects.describe(key)} is damaged ({exc}); "
                "rebuild the index (StateBackend.rebuild_index) to restore it",
                details={"key": key},
            ) from exc

    async def _load_snapshot(self) -> dict[str, tuple[str, RunRecord]]:
        try:
            data, _ = await self.objects.get(INDEX_SNAPSHOT)
            entries = orjson.loads(data)["entries"]
            return {
                run_id: (entry["etag"], RunRecord.model_validate(entry["record"]))
                for run_id, entry in entries.items()
            }
        except NotFoundError:
            return {}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
            _log.warning("runstore-fsspec: ignoring a damaged index snapshot: %s", exc)
            return {}

    async def _save_snapshot(self, entries: dict[str, tuple[str, RunRecord]]) -> None:
        body = orjson.dumps(
            {
                "version": _SNAPSHOT_VERSION,
                "entries": {
                    run_id: {"etag": etag, "record": record.model_dump(mode="json")}
                    for run_id, (etag, record) in entries.items()
                },
            }
        )
        try:
            await self.objects.put(INDEX_SNAPSHOT, body)
        except RunstoreError as exc:  # a cache: listing already succeeded without it
            _log.warning("runstore-fsspec: could not save the index snapshot: %s", exc)

    async def _index_records(self) -> list[RunRecord]:
        listed = {
            info.key.rsplit("/", 1)[-1].removesuffix(".json"): info
            for info in await self.objects.list_tree(INDEX_RECORDS_DIR)
            if info.key.endswith(".json")
        }
        cache = self._index_cache
        for run_id in [r for r in cache if r not in listed]:
            del cache[run_id]
        versioned = all(info.etag for info in listed.values())

        def stale() -> list[str]:
            return [
                run_id
                for run_id, info in listed.items()
                if not (info.etag and run_id in cache and cache[run_id][0] == info.etag)
            ]

        missing = stale()
        if versioned and len(missing) > 1:
            for run_id, entry in (await self._load_snapshot()).items():
                info = listed.get(run_id)
                if info is not None and info.etag == entry[0]:
                    cache[run_id] = entry
            missing = stale()

        async def fetch(run_id: str) -> tuple[str, str | None, RunRecord] | None:
            key = index_record_path(run_id)
            try:
                data, tag = await self.objects.get(key)
            except NotFoundError:
                return None  # deleted while listing
            return run_id, tag, self._decode_index(data, key)

        fetched = [f for f in await self._gather([fetch(r) for r in missing]) if f is not None]
        records = {run_id: entry[1] for run_id, entry in cache.items() if run_id in listed}
        for run_id, tag, record in fetched:
            records[run_id] = record
            if versioned and tag:
                cache[run_id] = (tag, record)
        if versioned and len(fetched) >= self.index_compact_after:
            await self._save_snapshot({r: e for r, e in cache.items() if r in listed})
        return list(records.values())

    async def list_runs(self, query: RunQuery) -> Sequence[RunRecord]:
        return query.apply(await self._index_records())

    async def rebuild_index(self) -> int:
        await self._writable()
        run_ids = await self.list_run_ids()
        indexed = {
            info.key.rsplit("/", 1)[-1].removesuffix(".json")
            for info in await self.objects.list_tree(INDEX_RECORDS_DIR)
        }

        async def rebuild(run_id: str) -> bool:
            try:
                manifest = await self.read_manifest(run_id)
                state = await self.read_state(run_id)
                summary = await self.read_summary(run_id)
            except NotFoundError:
                return False
            self._index_tags.pop(run_id, None)
            record = RunRecord.build(manifest, state, summary)
            await self._write_index(run_id, state.revision, record)
            return True

        built = await self._gather([rebuild(r) for r in run_ids])
        live = {r for r, ok in zip(run_ids, built, strict=True) if ok}
        await self.objects.delete([index_record_path(r) for r in sorted(indexed - live)])
        self._index_cache.clear()
        return len(live)

    # -- logs -----------------------------------------------------------------

    async def _segments(self, run_id: str, stream: str) -> list[_Segment]:
        found = []
        for info in await self.objects.list_tree(segments_dir(run_id, stream)):
            start = parse_segment_name(info.key)
            if start is not None and info.key.count("/") == 3:
                found.append(_Segment(start, info))
        found.sort(key=lambda s: s.start)
        return found

    async def _put_segment(self, run_id: str, stream: str, start: int, data: bytes) -> None:
        """Store ``data`` as the segment at ``start``, create-only."""
        for _ in range(_READ_RETRIES):
            key = segment_path(run_id, stream, start)
            try:
                await self.objects.put(key, data, create_only=True)
                return
            except PreconditionFailed:
                try:
                    stored, _ = await self.objects.get(key)
                except NotFoundError:
                    continue  # compacted away meanwhile: the write is retried
                if stored == data:
                    return  # an earlier attempt of ours landed
                if stored and data.startswith(stored):
                    # an earlier, shorter attempt landed (the request timed out, the
                    # bytes were kept and more were appended): store the rest after it
                    start += len(stored)
                    data = data[len(stored) :]
                    continue
                raise ConflictError(
                    f"stream {stream!r} of run {run_id!r} has another writer "
                    f"(offset {start} is taken); one writer per stream",
                    details={"run_id": run_id, "stream": stream, "offset": start},
                ) from None
        raise ConflictError(
            f"could not append to stream {stream!r} of run {run_id!r}: it keeps changing",
            details={"run_id": run_id, "stream": stream},
        )

    async def _repair_tail(self, key: str, size: int) -> int:
        """Cut a torn last line off object ``key``; returns its new size."""
        last = b"".join([chunk async for chunk in self.objects.read(key, size - 1)])
        if last.endswith(b"\n"):
            return size
        data, tag = await self.objects.get(key)
        keep = data[: data.rfind(b"\n") + 1]
        _log.warning(
            "runstore-fsspec: dropping a torn last line (%d bytes) of %s",
            len(data) - len(keep),
            self.objects.describe(key),
        )
        if keep:
            await self.objects.put(
                key, keep, if_match=tag if self.capabilities.compare_and_swap else None
            )
        else:
            await self.objects.delete([key])
        return len(keep)

    async def open_writer(
        self, run_id: str, stream: str, *, durability: Durability | None = None
    ) -> StreamWriter:
        if durability not in (None, "batch", "record"):
            raise UnsupportedError(
                f"the fsspec backend has no durability {durability!r}; "
                "it offers 'batch' (default) and 'record'",
                details={"durability": durability},
            )
        await self._writable()
        segments = await self._segments(run_id, stream)
        canonical = await self.objects.head(stream_path(run_id, stream))
        end = canonical.size if canonical else 0
        last: tuple[str, int, int] | None = (
            (stream_path(run_id, stream), 0, end) if canonical and end else None
        )
        for segment in segments:
            if segment.end > end:
                end = segment.end
                last = (segment.key, segment.start, segment.size)
        if last is not None:
            key, start, size = last
            end = start + await self._repair_tail(key, size)

        async def put_segment(offset: int, data: bytes) -> None:
            await self._put_segment(run_id, stream, offset, data)

        writer = SegmentWriter(
            put_segment,
            start=end,
            durability=durability or "batch",
            policy=self.policy,
            loop=asyncio.get_running_loop(),
        )
        self._writers.add(writer)
        return writer

    async def read_bytes(self, run_id: str, stream: str, offset: int = 0) -> AsyncIterator[bytes]:
        position = offset
        for _ in range(_READ_RETRIES):
            # segments first, then the canonical file: compaction writes the file
            # before deleting segments, so this order never misses bytes
            segments = await self._segments(run_id, stream)
            canonical_key = stream_path(run_id, stream)
            canonical = await self.objects.head(canonical_key)
            try:
                if canonical is not None and position < canonical.size:
                    async for chunk in self.objects.read(canonical_key, position):
                        position += len(chunk)
                        yield chunk
                for segment in segments:
                    if segment.end <= position:
                        continue
                    if segment.start > position:
                        raise CorruptError(
                            f"stream {stream!r} of run {run_id!r} is missing bytes "
                            f"{position}-{segment.start} (a segment was removed)",
                            details={"run_id": run_id, "stream": stream, "offset": position},
                        )
                    async for chunk in self.objects.read(segment.key, position - segment.start):
                        position += len(chunk)
                        yield chunk
                return
            except NotFoundError:
                continue  # compacted or deleted while reading: look again from `position`
        raise CorruptError(
            f"stream {stream!r} of run {run_id!r} kept changing while it was read",
            details={"run_id": run_id, "stream": stream, "offset": position},
        )

    async def list_streams(self, run_id: str) -> list[str]:
        _, files = await self.objects.listdir(run_id)
        names = {
            info.key.rsplit("/", 1)[-1][: -len(STREAM_SUFFIX)]
            for info in files
            if info.key.endswith(STREAM_SUFFIX)
        }
        segment_dirs, _ = await self.objects.listdir(f"{run_id}/{SEGMENTS_DIR}")
        return sorted(names | set(segment_dirs))

    async def stream_size(self, run_id: str, stream: str) -> int:
        canonical = await self.objects.head(stream_path(run_id, stream))
        end = canonical.size if canonical else 0
        for segment in await self._segments(run_id, stream):
            end = max(end, segment.end)
        return end

    async def delete_stream(self, run_id: str, stream: str) -> None:
        await self._writable()
        keys = [segment.key for segment in await self._segments(run_id, stream)]
        await self.objects.delete([stream_path(run_id, stream), *keys])

    async def finalize(self, run_id: str) -> None:
        await self._writable()
        streams, _ = await self.objects.listdir(f"{run_id}/{SEGMENTS_DIR}")
        for stream in streams:
            await self._compact(run_id, stream)
        await self.objects.prune(f"{run_id}/{SEGMENTS_DIR}")

    async def _compact(self, run_id: str, stream: str) -> None:
        """Fold the stream's segments into ``<stream>.jsonl``, then delete them."""
        key = stream_path(run_id, stream)
        for _ in range(_READ_RETRIES):
            segments = await self._segments(run_id, stream)
            canonical = await self.objects.head(key)
            covered = canonical.size if canonical else 0
            tail = [s for s in segments if s.end > covered]
            end = covered
            for segment in tail:
                if segment.start > end:
                    raise CorruptError(
                        f"stream {stream!r} of run {run_id!r} is missing bytes "
                        f"{end}-{segment.start}; it cannot be compacted",
                        details={"run_id": run_id, "stream": stream, "offset": end},
                    )
                end = segment.end
            if tail:
                try:
                    await self.objects.upload(
                        key,
                        self._concat(key, covered, tail),
                        create_only=canonical is None,
                        if_match=canonical.etag if canonical else None,
                    )
                except (PreconditionFailed, NotFoundError):
                    continue  # another process compacted meanwhile: look again
            done = [s.key for s in segments if s.end <= end]
            await self.objects.delete(done)
            return
        raise ConflictError(
            f"could not compact stream {stream!r} of run {run_id!r}: it keeps changing",
            details={"run_id": run_id, "stream": stream},
        )

    async def _concat(
        self, canonical_key: str, covered: int, tail: list[_Segment]
    ) -> AsyncIterator[bytes]:
        if covered:
            async for chunk in self.objects.read(canonical_key):
                yield chunk
        position = covered
        for segment in tail:
            async for chunk in self.objects.read(segment.key, position - segment.start):
                position += len(chunk)
                yield chunk

    # -- artifacts --------------------------------------------------------------

    async def _check_no_path_clash(self, run_id: str, name: str) -> None:
        """A name may not be a directory of another artifact, nor have one as its directory."""
        known = self._artifact_dirs.setdefault(run_id, set())
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in known:
                continue
            if await self.objects.head(artifact_path(run_id, parent)) is not None:
                raise ConflictError(
                    f"artifact name {name!r} uses {parent!r} as a directory, "
                    "but that is an artifact",
                    details={"run_id": run_id, "name": name},
                )
        if await self.objects.has_children(artifact_path(run_id, name)):
            raise ConflictError(
                f"artifact name {name!r} is a directory of other artifacts",
                details={"run_id": run_id, "name": name},
            )

    async def _stored_sha256(self, key: str) -> str:
        info = await self.objects.head(key)
        if info is not None and info.metadata.get("sha256"):
            return info.metadata["sha256"]
        digest = hashlib.sha256()
        async for chunk in self.objects.read(key):
            digest.update(chunk)
        return digest.hexdigest()

    async def put(self, run_id: str, name: str, source: ArtifactSource) -> StoredArtifact:
        await self._writable()
        key = artifact_path(run_id, name)
        await self._check_no_path_clash(run_id, name)
        digest = hashlib.sha256()
        size = 0

        async def hashed() -> AsyncGenerator[bytes, None]:
            nonlocal size
            if isinstance(source, bytes):
                digest.update(source)
                size = len(source)
                yield source
                return
            async for chunk in source:
                if len(chunk) >= 1 << 18:
                    await asyncio.to_thread(digest.update, chunk)  # hashlib drops the GIL
                else:
                    digest.update(chunk)
                size += len(chunk)
                yield chunk

        chunks = hashed()
        created = True
        try:
            await self.objects.upload(
                key, chunks, create_only=True, metadata=lambda: {"sha256": digest.hexdigest()}
            )
        except PreconditionFailed:
            async for _ in chunks:  # hash the rest of what the caller handed over
                pass
            if await self._stored_sha256(key) != digest.hexdigest():
                raise ConflictError(
                    f"artifact {name!r} of run {run_id!r} already exists with different "
                    "bytes; artifacts are immutable, store the new version under a new name",
                    details={"run_id": run_id, "name": name},
                ) from None
            created = False
        finally:
            await chunks.aclose()
        self._artifact_dirs.setdefault(run_id, set()).update(
            "/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1)
        )
        return StoredArtifact(sha256=digest.hexdigest(), size=size, created=created)

    def uri(self, run_id: str, name: str) -> str:
        return self.objects.describe(artifact_path(run_id, name))

    async def read_chunks(self, run_id: str, name: str) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.objects.read(artifact_path(run_id, name)):
                yield chunk
        except NotFoundError as exc:
            raise NotFoundError(
                f"artifact {name!r} not found in run {run_id!r}",
                details={"run_id": run_id, "name": name},
            ) from exc

    # -- lifecycle --------------------------------------------------------------

    async def aclose(self) -> None:
        """Write what open stream writers still buffer, then close connections."""
        failure: BaseException | None = None
        for writer in list(self._writers):
            if writer.broken is not None:
                continue  # its conflict was raised to its appender; nothing is left to store
            try:
                await writer.commit()
            except RunstoreError as exc:
                failure = failure or exc
        self._writers = weakref.WeakSet()
        if self._lease is not None:
            try:
                await self._lease.release()
            except RunstoreError as exc:
                failure = failure or exc
        await self.objects.aclose()
        if failure is not None:
            raise failure
