"""Copy runs between any two stores (local <-> S3, memory -> local, ...).

>>> report = copy_runs(runstore.open("runs"), runstore.open("s3://bucket/runs"))  # doctest: +SKIP

What is copied is the run exactly as stored: manifest, final state and
summary (timestamps and revision included), every stream byte for byte, and
every artifact. It goes through the backend interfaces, so the destination
produces its own layout (segments on object stores, ...).

* **Verified**: every stream is hashed (sha256) on both sides after the copy;
  every artifact is hashed while it streams and must match the sha256 in the
  source's ``artifacts.jsonl`` before the destination keeps it.
* **Resumable**: a run whose destination state already equals the source
  state is skipped (the state is written last, so it marks a complete copy);
  an interrupted copy continues where it stopped: streams are appended from
  the destination's length on (after checking that what is there is a prefix
  of the source), artifacts already stored with the right sha256 are kept.
* **Live runs** (not finished) are left alone and reported, since they are
  still changing.
* **Damage stays in one run**: a run that cannot be read (a garbage
  ``state.json``, a symbolic link in place of its directory, bytes that do not
  match their sha256) is reported (``on_damage``, :attr:`CopyReport.damaged`)
  and the other runs are copied all the same (see :mod:`runstore.ops.damage`).

* **Concurrent, bounded**: the artifacts of a run are copied ``concurrency``
  at a time (default :data:`DEFAULT_CONCURRENCY`), and a few runs at once,
  never more than ``concurrency`` artifacts in flight in all; an artifact of
  a run this call created is uploaded without looking for it first. On an
  object store each artifact is a few requests: one at a time, a
  727-artifact run took 37-41 s to reach a local S3 server, 14-28 s now
  (docs/performance.md).

``progress`` is called after every stream, artifact and run with a
:class:`CopyProgress`, e.g. to drive a progress bar.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from runstore.aio import AsyncStore
from runstore.model.checks import checked_async
from runstore.model.errors import (
    ConflictError,
    CorruptError,
    InvalidInputError,
    NotFoundError,
    RunstoreError,
)
from runstore.model.names import validate_run_id
from runstore.model.run import ArtifactRef, RunRecord, RunState
from runstore.ops.damage import DAMAGE, DamageHandler, damaged_run, raise_damaged
from runstore.spi.layout import ARTIFACTS_STREAM
from runstore.store import Store

__all__ = ["DEFAULT_CONCURRENCY", "CopyProgress", "CopyReport", "acopy_runs", "copy_runs"]

T = TypeVar("T")

DEFAULT_CONCURRENCY: Final = 16
"""Artifacts copied at once (S3 serves 150-440 small objects/s with 8-32 in flight)."""
_RUNS_AT_ONCE: Final = 4


@dataclass(frozen=True)
class CopyProgress:
    """One step of a copy.

    :ivar run_id: the run being copied.
    :ivar item: ``"stream:<name>"``, ``"artifact:<name>"``, or ``None`` when the
        run is done.
    :ivar runs_done: runs finished so far (copied or skipped).
    :ivar runs_total: runs to look at.
    :ivar bytes_copied: bytes transferred so far, over all runs.
    :ivar skipped: the item (or run) was already identical at the destination.
    """

    run_id: str
    item: str | None
    runs_done: int
    runs_total: int
    bytes_copied: int
    skipped: bool = False


@dataclass
class CopyReport:
    """What :func:`copy_runs` did."""

    copied: list[str] = field(default_factory=list)
    """Runs written (completely or in part) by this call."""
    skipped: list[str] = field(default_factory=list)
    """Runs already identical at the destination."""
    live: list[str] = field(default_factory=list)
    """Runs not finished yet, left alone."""
    bytes_copied: int = 0
    damaged: list[RunstoreError] = field(default_factory=list)
    """Runs that could not be read (at the source or the destination), each as its
    typed error (:func:`~runstore.ops.damage.damaged_run`); not copied, or in part."""


ProgressCallback = Callable[[CopyProgress], None]


class _Side:
    """A store and the event loop its backends live on.

    A sync :class:`~runstore.store.Store` runs its backends on a private loop;
    calls are hopped onto it, so two sync stores can be copied between
    although each is bound to its own loop.
    """

    def __init__(self, store: Store | AsyncStore) -> None:
        if isinstance(store, Store):
            self.store = store.aio
            self.loop: asyncio.AbstractEventLoop | None = store.portal.loop
        else:
            self.store = store
            self.loop = None

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self.loop
        if loop is None or loop is asyncio.get_running_loop():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def iterate(self, agen: AsyncIterator[T]) -> AsyncGenerator[T, None]:
        async def step() -> T:
            return await agen.__anext__()

        try:
            while True:
                try:
                    item = await self.call(step())
                except StopAsyncIteration:
                    return
                yield item
        finally:
            aclose: Callable[[], Awaitable[None]] | None = getattr(agen, "aclose", None)
            if aclose is not None:

                async def close() -> None:
                    await aclose()

                await self.call(close())


def copy_runs(
    src: Store | AsyncStore,
    dst: Store | AsyncStore,
    run_ids: Iterable[str] | None = None,
    *,
    progress: ProgressCallback | None = None,
    on_damage: DamageHandler | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> CopyReport:
    """Copy runs from ``src`` to ``dst`` (every run when ``run_ids`` is ``None``).

    Blocking; call :func:`acopy_runs` from async code. Raises
    :class:`~runstore.model.errors.NotFoundError` for a requested run that ``src``
    does not have (before copying anything),
    :class:`~runstore.model.errors.ConflictError` when ``dst`` holds a different run
    under the same id. A damaged run (source bytes that do not match their
    recorded sha256, a snapshot that does not parse, ...) goes to ``on_damage``
    and the other runs are copied; without ``on_damage`` its error is raised
    once the other runs are done. At most ``concurrency`` artifacts are copied
    at once (1: one after the other).
    """
    return asyncio.run(
        acopy_runs(
            src, dst, run_ids, progress=progress, on_damage=on_damage, concurrency=concurrency
        )
    )


async def acopy_runs(
    src: Store | AsyncStore,
    dst: Store | AsyncStore,
    run_ids: Iterable[str] | None = None,
    *,
    progress: ProgressCallback | None = None,
    on_damage: DamageHandler | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> CopyReport:
    """The async form of :func:`copy_runs`."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InvalidInputError(
            f"concurrency must be a whole number >= 1, got {concurrency!r}",
            details={"concurrency": repr(concurrency)},
        )
    copy = _Copy(_Side(src), _Side(dst), progress, on_damage, concurrency=concurrency)
    report = await copy.run(run_ids)
    if on_damage is None:
        raise_damaged(report.damaged)
    return report


class _DestinationConflict(ConflictError):
    """The destination holds something else under the run's id: the user decides, we stop."""


class _Copy:
    def __init__(
        self,
        src: _Side,
        dst: _Side,
        progress: ProgressCallback | None,
        on_damage: DamageHandler | None = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.src = src
        self.dst = dst
        self.progress = progress
        self.on_damage = on_damage
        self.report = CopyReport()
        self.done = 0
        self.total = 0
        self.concurrency = concurrency
        self._in_flight: asyncio.Semaphore | None = None

    def _tell(self, run_id: str, item: str | None, *, skipped: bool = False) -> None:
        if self.progress is not None:
            self.progress(
                CopyProgress(
                    run_id=run_id,
                    item=item,
                    runs_done=self.done,
                    runs_total=self.total,
                    bytes_copied=self.report.bytes_copied,
                    skipped=skipped,
                )
            )

    def _damaged(self, side: _Side, run_id: str, exc: RunstoreError) -> None:
        if run_id in self.report.copied:  # in part
            self.report.copied.remove(run_id)
        error = damaged_run(side.store, run_id, exc)
        self.report.damaged.append(error)
        if self.on_damage is not None:
            self.on_damage(error)

    async def run(self, run_ids: Iterable[str] | None) -> CopyReport:
        state = self.src.store.state_backend
        if run_ids is None:
            ids = sorted(await self.src.call(state.list_run_ids()))
        else:
            ids = [validate_run_id(r) for r in dict.fromkeys(run_ids)]
            for run_id in ids:
                try:  # NotFoundError before copying
                    await self.src.call(state.read_manifest(run_id))
                except NotFoundError:
                    raise
                except DAMAGE:
                    pass  # reported when its turn comes
        self.total = len(ids)
        self._in_flight = asyncio.Semaphore(self.concurrency)
        runs_at_once = max(1, min(_RUNS_AT_ONCE, self.concurrency // _RUNS_AT_ONCE))
        await _each(ids, self._one_run, workers=runs_at_once)
        # listed in the order asked for (or of their ids), however the copies interleaved
        order = {run_id: n for n, run_id in enumerate(ids)}
        for listing in (self.report.copied, self.report.skipped, self.report.live):
            listing.sort(key=order.__getitem__)
        self.report.damaged.sort(key=lambda e: order.get(e.details.get("run_id", ""), -1))
        return self.report

    async def _one_run(self, run_id: str) -> None:
        try:
            await self._copy_run(run_id)
        except _DestinationConflict:
            raise
        except DAMAGE as exc:
            self._damaged(self.src, run_id, exc)
        self.done += 1
        self._tell(run_id, None, skipped=run_id in self.report.skipped)

    async def _copy_run(self, run_id: str) -> None:
        src_state_backend = self.src.store.state_backend
        dst_state_backend = self.dst.store.state_backend
        try:
            state = await self.src.call(src_state_backend.read_state(run_id))
        except NotFoundError:
            if run_id in await self.src.call(src_state_backend.list_run_ids(run_id)):
                raise  # listed, but its state.json is missing: damaged
            return  # deleted at the source since it was listed
        if not state.is_terminal:
            self.report.live.append(run_id)
            return
        manifest = await self.src.call(src_state_backend.read_manifest(run_id))
        summary = await self.src.call(src_state_backend.read_summary(run_id))
        there: RunState | None
        created = False
        try:
            there = await self.dst.call(dst_state_backend.read_state(run_id))
            theirs = await self.dst.call(dst_state_backend.read_manifest(run_id))
        except NotFoundError:
            there = None
        except DAMAGE as exc:  # the run at the destination is damaged: say where
            raise damaged_run(self.dst.store, run_id, exc) from exc
        if there is not None:
            if theirs != manifest:
                raise _DestinationConflict(
                    f"run {run_id!r} exists at the destination with another manifest; "
                    "it is a different run: delete it there or copy under another store",
                    details={"run_id": run_id},
                )
            if there == state:
                self.report.skipped.append(run_id)
                return
        else:
            # Created as a copy in progress; the final state, written last, completes it.
            there = state.model_copy(
                update={
                    "status": "running",
                    "revision": max(state.revision - 1, 0),
                    "finished_at": None,
                    "error": None,
                }
            )
            await self.dst.call(dst_state_backend.create_run(manifest, there))
            created = True
        self.report.copied.append(run_id)
        streams = await self.src.call(self.src.store.log_backend.list_streams(run_id))
        for stream in streams:
            await self._copy_stream(run_id, stream)
        if ARTIFACTS_STREAM in streams:
            refs = await self._artifact_refs(run_id)
            # A run this call created holds no artifact yet: no need to look first
            # (on S3 that look is a GET and a listing per artifact).
            copy = self._upload_in_turn if created else self._copy_artifact_in_turn
            await _each(refs, copy, workers=self.concurrency)
        if summary is not None:
            await self.dst.call(dst_state_backend.write_summary(summary))
        await self.dst.call(self.dst.store.log_backend.finalize(run_id))
        await self.dst.call(
            dst_state_backend.write_state(
                state,
                expected_revision=there.revision,
                record=RunRecord.build(manifest, state, summary),
            )
        )

    async def _hash_stream(
        self, side: _Side, run_id: str, stream: str, limit: int | None = None
    ) -> tuple[int, str]:
        """``(bytes, sha256)`` of the stream's complete lines (within its first ``limit`` bytes)."""
        digest = hashlib.sha256()
        size = seen = 0
        pending = b""
        source = side.iterate(side.store.log_backend.read_bytes(run_id, stream))
        async with contextlib.aclosing(source) as chunks:
            async for raw in chunks:
                chunk = raw if limit is None else raw[: limit - seen]
                seen += len(chunk)
                data = pending + chunk
                cut = data.rfind(b"\n") + 1
                digest.update(data[:cut])
                size += cut
                pending = data[cut:]
                if limit is not None and seen >= limit:
                    break
        return size, digest.hexdigest()

    async def _copy_stream(self, run_id: str, stream: str) -> None:
        have, have_hash = await self._hash_stream(self.dst, run_id, stream)
        if have:
            prefix, prefix_hash = await self._hash_stream(self.src, run_id, stream, limit=have)
            if (prefix, prefix_hash) != (have, have_hash):
                raise _DestinationConflict(
                    f"stream {stream!r} of run {run_id!r} at the destination is not a copy "
                    "of the source's; delete the run there and copy again",
                    details={"run_id": run_id, "stream": stream},
                )
        writer = await self.dst.call(self.dst.store.log_backend.open_writer(run_id, stream))
        copied = 0
        tail = b""
        try:
            source = self.src.store.log_backend.read_bytes(run_id, stream, have)
            async for chunk in self.src.iterate(source):
                data = tail + chunk
                cut = data.rfind(b"\n") + 1
                tail = data[cut:]
                if cut and not writer.write(data[:cut]):
                    await self.dst.call(writer.commit())
                copied += cut
        finally:
            await self.dst.call(writer.close())
        self.report.bytes_copied += copied
        # a torn tail (a write cut off in the source) is not part of the stream's records
        expected = await self._hash_stream(self.src, run_id, stream)
        if await self._hash_stream(self.dst, run_id, stream) != expected:
            raise CorruptError(
                f"stream {stream!r} of run {run_id!r} differs after copying "
                "(sha256 mismatch); the source changed meanwhile or a store is damaged",
                details={"run_id": run_id, "stream": stream},
            )
        self._tell(run_id, f"stream:{stream}", skipped=copied == 0)

    async def _artifact_refs(self, run_id: str) -> list[ArtifactRef]:
        from runstore.model.records import LineDecoder

        decoder = LineDecoder(ARTIFACTS_STREAM)
        refs: dict[str, ArtifactRef] = {}
        source = self.src.store.log_backend.read_bytes(run_id, ARTIFACTS_STREAM)
        async for chunk in self.src.iterate(source):
            for data in decoder.decode(decoder.feed(chunk)):
                ref = ArtifactRef.model_validate(data)
                refs.setdefault(ref.name, ref)
        return list(refs.values())

    async def _stored_sha256(self, ref: ArtifactRef) -> str | None:
        digest = hashlib.sha256()
        chunks = self.dst.store.artifact_backend.read_chunks(ref.run_id, ref.name)
        try:
            async for chunk in self.dst.iterate(chunks):
                digest.update(chunk)
        except NotFoundError:
            return None
        return digest.hexdigest()

    async def _copy_artifact_in_turn(self, ref: ArtifactRef) -> None:
        """:meth:`_copy_artifact` once fewer than ``concurrency`` are in flight (all runs)."""
        assert self._in_flight is not None
        async with self._in_flight:
            await self._copy_artifact(ref)

    async def _upload_in_turn(self, ref: ArtifactRef) -> None:
        """:meth:`_upload` of an artifact the destination cannot hold yet, in turn."""
        assert self._in_flight is not None
        async with self._in_flight:
            await self._upload(ref)

    async def _copy_artifact(self, ref: ArtifactRef) -> None:
        item = f"artifact:{ref.name}"
        stored = await self._stored_sha256(ref)
        if stored == ref.sha256:
            self._tell(ref.run_id, item, skipped=True)
            return
        if stored is not None:
            raise _DestinationConflict(
                f"artifact {ref.name!r} of run {ref.run_id!r} exists at the destination "
                "with other bytes; delete the run there and copy again",
                details={"run_id": ref.run_id, "name": ref.name},
            )
        await self._upload(ref)

    async def _upload(self, ref: ArtifactRef) -> None:
        item = f"artifact:{ref.name}"
        chunks = self.src.store.artifact_backend.read_chunks(ref.run_id, ref.name)

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in self.src.iterate(chunks):
                self.report.bytes_copied += len(chunk)
                yield chunk

        # Checked inside the upload, so the destination never keeps damaged bytes.
        what = f"artifact {ref.name!r} of run {ref.run_id!r} at the source"
        verified = checked_async(counted(), ref, what)
        put = self.dst.store.artifact_backend.put(ref.run_id, ref.name, verified)
        await self.dst.call(put)
        self._tell(ref.run_id, item)


async def _each(items: Iterable[T], job: Callable[[T], Awaitable[None]], *, workers: int) -> None:
    """``await job(item)`` for every item, ``workers`` at a time, in order of start.

    The first error stops the others (cancelled and awaited) and is raised
    as itself, not wrapped in an exception group.
    """
    pending = iter(items)

    async def worker() -> None:
        for item in pending:  # shared: each item is taken by one worker
            await job(item)

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
