"""The key-value SPI: implement five primitives, get a backend serving all three concerns.

Most stores an author wants to plug in are key-value or blob stores (LMDB,
Redis, etcd, DynamoDB, a SQL table). Such an author subclasses
:class:`KeyValueStore` and wraps it in :class:`KVBackend`, which builds the
state, logs and artifacts concerns on those primitives::

    class MyKV(KeyValueStore):
        async def get(self, key): ...
        async def put_if_absent(self, key, value): ...
        async def compare_and_set(self, key, expected, value): ...
        async def list_keys(self, prefix): ...
        async def delete(self, key): ...

    register(BackendSpec(name="mykv", schemes=("mykv",),
                         factory=lambda target: KVBackend(MyKV(target.path))))

What the adapter needs from the primitives, and nothing more:

* ``put_if_absent`` is atomic (two callers, one wins): run ids, stream
  segments and artifacts are claimed with it (``conditional_create``).
* ``compare_and_set`` is atomic: every state write goes through it
  (``compare_and_swap``).
* ``list_keys`` returns every key with the prefix, sorted (byte order of the
  UTF-8 keys, which is also code-point order), including keys written just
  before by any client (``consistent_listing``).

Declare what your store cannot do in :attr:`KeyValueStore.capabilities`: the
adapter passes it on and the conformance kit skips (by name) what is off.

Keys the adapter writes, all under one store::

    runs/<run_id>                         manifest, state, index record, summary (one JSON value)
    streams/<run_id>/<stream>             the stream exists (empty value)
    lines/<run_id>/<stream>/<NNNNNNNNNNNN> one committed batch of complete JSONL lines
    artifacts/<run_id>/<name>             sha256, size, where its chunks are
    blobs/<run_id>/<upload>/<NNNNNNNN>    artifact bytes, ``chunk_size`` at most per value

Each value is small and bounded (``chunk_size`` for blobs, one commit's lines
for streams), so stores with a value-size limit work; a stream is never
rewritten, only extended by new keys, so stores without append work.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any

import orjson

from runstore.model.errors import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    UnsupportedError,
)
from runstore.model.run import RunManifest, RunRecord, RunState, RunSummary
from runstore.model.selection import Page
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

__all__ = ["KVBackend", "KeyValueStore", "MemoryKV"]

_CHUNK = 1 << 20
_STATE_TRIES = 50


class KeyValueStore(ABC):
    """Five primitives on ``str`` keys and ``bytes`` values.

    Every method is called on the store's event loop (the sync API's
    background loop thread, or the caller's loop with :mod:`runstore.aio`),
    one call at a time per writer but possibly concurrently across runs: guard
    a connection that is not safe for concurrent use with a lock.
    """

    capabilities: Capabilities = Capabilities()
    """What the primitives guarantee; :class:`KVBackend` declares the same."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value of ``key``, or ``None`` if it is not set."""

    @abstractmethod
    async def put_if_absent(self, key: str, value: bytes) -> bool:
        """Set ``key`` only if it is not set, atomically; ``True`` if this call set it."""

    @abstractmethod
    async def compare_and_set(self, key: str, expected: bytes, value: bytes) -> bool:
        """Replace ``key``'s value with ``value`` only if it is ``expected``, atomically.

        ``False`` (nothing changed) when the value is another one or the key is not set.
        """

    @abstractmethod
    async def list_keys(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix``, sorted."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove ``key`` (nothing happens if it is not set)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release connections; called once when the store closes."""


class MemoryKV(KeyValueStore):
    """A dict in process memory: the primitives at their simplest, and a test double.

    The kit holds ``KVBackend(MemoryKV())`` to the reference like any backend.
    """

    capabilities = Capabilities(persistent=False)

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    async def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    async def put_if_absent(self, key: str, value: bytes) -> bool:
        with self._lock:
            if key in self._data:
                return False
            self._data[key] = value
            return True

    async def compare_and_set(self, key: str, expected: bytes, value: bytes) -> bool:
        with self._lock:
            if self._data.get(key) != expected:
                return False
            self._data[key] = value
            return True

    async def list_keys(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted(key for key in self._data if key.startswith(prefix))

    async def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)


def _dump(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value)


def _run_key(run_id: str) -> str:
    return f"runs/{run_id}"


def _missing(run_id: str) -> NotFoundError:
    return NotFoundError(f"run {run_id!r} not found", details={"run_id": run_id})


class _KVWriter(StreamWriter):
    """Buffers what ``write`` gets; each commit stores it as the stream's next key."""

    durability: Durability = "record"

    def __init__(self, kv: KeyValueStore, prefix: str, next_number: int) -> None:
        self._kv = kv
        self._prefix = prefix
        self._next = next_number
        self._pending: list[bytes] = []
        self._lock = threading.Lock()  # write() runs in the caller's thread
        self._commit_lock = asyncio.Lock()  # batches are stored in the order written
        self._closed = False

    def write(self, data: bytes) -> bool:
        if self._closed:
            raise UnsupportedError("stream writer is closed; open a new one")
        with self._lock:
            self._pending.append(data)
        return False

    async def commit(self) -> None:
        async with self._commit_lock:
            with self._lock:
                batch, self._pending = b"".join(self._pending), []
            if not batch:
                return
            key = f"{self._prefix}{self._next:012d}"
            if not await self._kv.put_if_absent(key, batch):
                raise ConflictError(
                    f"another writer appended to {self._prefix[6:-1]!r} meanwhile; "
                    "this writer's records were not stored",
                    details={"key": key},
                )
            self._next += 1

    async def close(self) -> None:
        if not self._closed:
            await self.commit()
            self._closed = True

    async def discard(self) -> None:
        with self._lock:
            self._pending = []
        self._closed = True


class KVBackend(StateBackend, LogBackend, ArtifactBackend):
    """State, logs and artifacts on a :class:`KeyValueStore`.

    :param kv: the store; closed when the backend closes.
    :param chunk_size: the largest value written for artifact bytes.
    """

    def __init__(self, kv: KeyValueStore, *, chunk_size: int = _CHUNK) -> None:
        self.kv = kv
        self.chunk_size = chunk_size
        self.capabilities = kv.capabilities

    async def aclose(self) -> None:
        await self.kv.aclose()

    # -- state ----------------------------------------------------------------------

    async def _run(self, run_id: str) -> tuple[bytes, dict[str, Any]]:
        raw = await self.kv.get(_run_key(run_id))
        if raw is None:
            raise _missing(run_id)
        return raw, orjson.loads(raw)

    async def create_run(self, manifest: RunManifest, state: RunState) -> None:
        value = {
            "manifest": manifest.model_dump(mode="json"),
            "state": state.model_dump(mode="json"),
            "record": RunRecord.build(manifest, state).model_dump(mode="json"),
            "summary": None,
        }
        if not await self.kv.put_if_absent(_run_key(manifest.run_id), _dump(value)):
            raise AlreadyExistsError(
                f"run {manifest.run_id!r} already exists; pick another run id",
                details={"run_id": manifest.run_id},
            )

    async def read_manifest(self, run_id: str) -> RunManifest:
        return RunManifest.model_validate((await self._run(run_id))[1]["manifest"])

    async def read_state(self, run_id: str) -> RunState:
        return RunState.model_validate((await self._run(run_id))[1]["state"])

    async def read_summary(self, run_id: str) -> RunSummary | None:
        stored = (await self._run(run_id))[1]["summary"]
        return None if stored is None else RunSummary.model_validate(stored)

    async def _update(self, run_id: str, change: dict[str, Any], revision: int | None) -> None:
        """Compare-and-set the run's value with ``change``, retried while only other
        fields changed meanwhile; ``revision``: the state revision it must still be."""
        for _ in range(_STATE_TRIES):
            raw, value = await self._run(run_id)
            stored = value["state"]["revision"]
            if revision is not None and stored != revision:
                raise ConflictError(
                    f"state of run {run_id!r} is at revision {stored}, not {revision}: "
                    "another writer updated it; re-read and retry",
                    details={"run_id": run_id, "stored": stored, "expected": revision},
                )
            if await self.kv.compare_and_set(_run_key(run_id), raw, _dump({**value, **change})):
                return
        raise ConflictError(f"run {run_id!r} kept changing; try again", details={"run_id": run_id})

    async def write_state(
        self, state: RunState, *, expected_revision: int, record: RunRecord
    ) -> None:
        change = {"state": state.model_dump(mode="json"), "record": record.model_dump(mode="json")}
        await self._update(state.run_id, change, expected_revision)

    async def write_summary(self, summary: RunSummary) -> None:
        await self._update(summary.run_id, {"summary": summary.model_dump(mode="json")}, None)

    async def list_runs(self, query: RunQuery) -> Page:
        records = []
        for key in await self.kv.list_keys("runs/"):
            raw = await self.kv.get(key)
            if raw is not None:  # deleted since it was listed
                records.append(RunRecord.model_validate(orjson.loads(raw)["record"]))
        return query.apply(records)

    async def list_run_ids(self, prefix: str = "") -> list[str]:
        return [key[5:] for key in await self.kv.list_keys(f"runs/{prefix}")]

    async def delete_run(self, run_id: str) -> None:
        """Everything of the run, whichever concern asks (each does, once per store)."""
        for prefix in ("lines", "streams", "blobs", "artifacts"):
            for key in await self.kv.list_keys(f"{prefix}/{run_id}/"):
                await self.kv.delete(key)
        await self.kv.delete(_run_key(run_id))  # last: a delete cut short can be redone

    # -- logs -----------------------------------------------------------------------

    async def open_writer(
        self, run_id: str, stream: str, *, durability: Durability | None = None
    ) -> StreamWriter:
        if durability not in (None, "record"):
            raise UnsupportedError(
                f"a key-value backend stores each commit as one value: durability 'record', "
                f"not {durability!r}",
                details={"durability": durability},
            )
        await self.kv.put_if_absent(f"streams/{run_id}/{stream}", b"")
        prefix = f"lines/{run_id}/{stream}/"
        keys = await self.kv.list_keys(prefix)
        return _KVWriter(self.kv, prefix, int(keys[-1][len(prefix) :]) + 1 if keys else 0)

    async def read_bytes(self, run_id: str, stream: str, offset: int = 0) -> AsyncIterator[bytes]:
        for key in await self.kv.list_keys(f"lines/{run_id}/{stream}/"):
            batch = await self.kv.get(key) or b""
            if offset >= len(batch):
                offset -= len(batch)
                continue
            yield batch[offset:]
            offset = 0

    async def list_streams(self, run_id: str) -> list[str]:
        prefix = f"streams/{run_id}/"
        return sorted(key[len(prefix) :] for key in await self.kv.list_keys(prefix))

    async def delete_stream(self, run_id: str, stream: str) -> None:
        for key in await self.kv.list_keys(f"lines/{run_id}/{stream}/"):
            await self.kv.delete(key)
        await self.kv.delete(f"streams/{run_id}/{stream}")

    # -- artifacts --------------------------------------------------------------------

    async def put(self, run_id: str, name: str, source: ArtifactSource) -> StoredArtifact:
        key = f"artifacts/{run_id}/{name}"
        existing = await self.kv.get(key)
        if existing is not None:  # no staging: hash the source against what is stored
            digest, size = hashlib.sha256(), 0
            async for chunk in _chunks(source, self.chunk_size):
                digest.update(chunk)
                size += len(chunk)
            return _same_or_conflict(existing, digest.hexdigest(), size, run_id, name)
        await self._check_no_path_clash(run_id, name)
        upload = f"blobs/{run_id}/{uuid.uuid4().hex}/"
        digest, size, count = hashlib.sha256(), 0, 0
        async for chunk in _chunks(source, self.chunk_size):
            await self.kv.put_if_absent(f"{upload}{count:08d}", chunk)
            digest.update(chunk)
            size, count = size + len(chunk), count + 1
        sha256 = digest.hexdigest()
        meta = {"sha256": sha256, "size": size, "blobs": upload, "count": count}
        if await self.kv.put_if_absent(key, _dump(meta)):
            return StoredArtifact(sha256=sha256, size=size, created=True)
        for number in range(count):  # stored meanwhile by someone else: ours is not needed
            await self.kv.delete(f"{upload}{number:08d}")
        return _same_or_conflict(await self.kv.get(key) or b"{}", sha256, size, run_id, name)

    async def _check_no_path_clash(self, run_id: str, name: str) -> None:
        """File systems cannot hold both ``a`` and ``a/b``; every backend refuses it."""
        parts = name.split("/")
        for i in range(1, len(parts)):
            if await self.kv.get(f"artifacts/{run_id}/{'/'.join(parts[:i])}") is not None:
                raise ConflictError(
                    f"artifact name {name!r} uses {'/'.join(parts[:i])!r} as a directory, "
                    "but that is an artifact",
                    details={"run_id": run_id, "name": name},
                )
        if await self.kv.list_keys(f"artifacts/{run_id}/{name}/"):
            raise ConflictError(
                f"artifact name {name!r} is a directory of other artifacts",
                details={"run_id": run_id, "name": name},
            )

    async def read_chunks(self, run_id: str, name: str) -> AsyncIterator[bytes]:
        raw = await self.kv.get(f"artifacts/{run_id}/{name}")
        if raw is None:
            raise NotFoundError(
                f"artifact {name!r} not found in run {run_id!r}",
                details={"run_id": run_id, "name": name},
            )
        meta = orjson.loads(raw)
        if not meta["count"]:
            yield b""
        for number in range(meta["count"]):
            yield await self.kv.get(f"{meta['blobs']}{number:08d}") or b""


async def _chunks(source: ArtifactSource, size: int) -> AsyncIterator[bytes]:
    """``source`` in pieces of at most ``size`` bytes."""
    if isinstance(source, bytes):
        for start in range(0, len(source), size):
            yield source[start : start + size]
        return
    async for chunk in source:
        for start in range(0, len(chunk), size):
            yield chunk[start : start + size]


def _same_or_conflict(
    stored: bytes, sha256: str, size: int, run_id: str, name: str
) -> StoredArtifact:
    if orjson.loads(stored).get("sha256") != sha256:
        raise ConflictError(
            f"artifact {name!r} of run {run_id!r} already exists with different bytes; "
            "artifacts are immutable, store the new version under a new name",
            details={"run_id": run_id, "name": name},
        )
    return StoredArtifact(sha256=sha256, size=size, created=False)
