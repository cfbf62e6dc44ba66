"""The in-memory reference backend (``memory://name``).

It is the executable specification the conformance kit compares every other
backend against, so it favours obviousness over speed. Stores with the same
name in one process share their data while any of them is open.

Like a backend that persists, it keeps what JSON would keep: snapshots are
stored as a JSON round trip of what was written, never the caller's objects
(a caller that changes its config dict afterwards changes nothing stored).
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel

from runstore.model.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
)
from runstore.model.run import RunManifest, RunRecord, RunState, RunSummary
from runstore.spi.backends import (
    ArtifactBackend,
    ArtifactSource,
    BackendSpec,
    Capabilities,
    Durability,
    LogBackend,
    RunQuery,
    StateBackend,
    StoredArtifact,
    StreamWriter,
    Target,
)
from runstore.spi.hookspecs import hookimpl
from runstore.spi.layout import artifact_path

__all__ = ["MemoryBackend"]

_CHUNK = 1 << 20
_M = TypeVar("_M", bound=BaseModel)


def _stored(model: _M) -> _M:
    """``model`` as it reads back after being written as JSON."""
    return type(model).model_validate_json(model.model_dump_json())


@dataclass(eq=False)
class _Data:
    lock: threading.Lock = field(default_factory=threading.Lock)
    manifests: dict[str, RunManifest] = field(default_factory=dict)
    states: dict[str, RunState] = field(default_factory=dict)
    summaries: dict[str, RunSummary] = field(default_factory=dict)
    records: dict[str, RunRecord] = field(default_factory=dict)
    streams: dict[tuple[str, str], bytearray] = field(default_factory=dict)
    artifacts: dict[tuple[str, str], bytes] = field(default_factory=dict)


_named: weakref.WeakValueDictionary[str, _Data] = weakref.WeakValueDictionary()
_named_lock = threading.Lock()


def _shared(name: str) -> _Data:
    with _named_lock:
        data = _named.get(name)
        if data is None:
            data = _Data()
            _named[name] = data
        return data


class _MemoryWriter(StreamWriter):
    def __init__(self, buffer: bytearray, lock: threading.Lock) -> None:
        self._buffer = buffer
        self._lock = lock
        self._closed = False

    def write(self, data: bytes) -> bool:
        if self._closed:
            raise UnsupportedError("stream writer is closed; open a new one")
        with self._lock:
            self._buffer += data
        return True

    async def commit(self) -> None:
        return None

    def commit_sync(self) -> bool:
        return True

    async def close(self) -> None:
        self._closed = True


class MemoryBackend(StateBackend, LogBackend, ArtifactBackend):
    """All three concerns in process memory."""

    capabilities = Capabilities(persistent=False, inline=True)

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._data = _shared(name) if name else _Data()

    # -- state ----------------------------------------------------------------

    def _require(self, run_id: str) -> None:
        if run_id not in self._data.manifests:
            raise NotFoundError(f"run {run_id!r} not found", details={"run_id": run_id})

    async def create_run(self, manifest: RunManifest, state: RunState) -> None:
        with self._data.lock:
            if manifest.run_id in self._data.manifests:
                raise AlreadyExistsError(
                    f"run {manifest.run_id!r} already exists; pick another run id",
                    details={"run_id": manifest.run_id},
                )
            self._data.manifests[manifest.run_id] = _stored(manifest)
            self._data.states[manifest.run_id] = _stored(state)
            self._data.records[manifest.run_id] = _stored(RunRecord.build(manifest, state))

    async def read_manifest(self, run_id: str) -> RunManifest:
        self._require(run_id)
        return self._data.manifests[run_id]

    async def read_state(self, run_id: str) -> RunState:
        self._require(run_id)
        return self._data.states[run_id]

    async def write_state(
        self, state: RunState, *, expected_revision: int, record: RunRecord
    ) -> None:
        with self._data.lock:
            self._require(state.run_id)
            current = self._data.states[state.run_id].revision
            if current != expected_revision:
                raise ConflictError(
                    f"state of run {state.run_id!r} is at revision {current}, "
                    f"not {expected_revision}: another writer updated it; re-read and retry",
                    details={
                        "run_id": state.run_id,
                        "stored": current,
                        "expected": expected_revision,
                    },
                )
            self._data.states[state.run_id] = _stored(state)
            self._data.records[state.run_id] = _stored(record)

    async def write_summary(self, summary: RunSummary) -> None:
        self._require(summary.run_id)
        self._data.summaries[summary.run_id] = _stored(summary)

    async def read_summary(self, run_id: str) -> RunSummary | None:
        self._require(run_id)
        return self._data.summaries.get(run_id)

    async def list_runs(self, query: RunQuery) -> Sequence[RunRecord]:
        with self._data.lock:
            records = list(self._data.records.values())
        return query.apply(records)

    async def list_run_ids(self, prefix: str = "") -> list[str]:
        return [r for r in list(self._data.manifests) if r.startswith(prefix)]

    async def delete_run(self, run_id: str) -> None:
        with self._data.lock:
            for table in (self._data.manifests, self._data.states, self._data.summaries):
                table.pop(run_id, None)
            self._data.records.pop(run_id, None)
            for key in [k for k in self._data.streams if k[0] == run_id]:
                del self._data.streams[key]
            for akey in [k for k in self._data.artifacts if k[0] == run_id]:
                del self._data.artifacts[akey]

    # -- logs -----------------------------------------------------------------

    async def open_writer(
        self, run_id: str, stream: str, *, durability: Durability | None = None
    ) -> StreamWriter:
        if durability not in (None, "flush"):
            raise UnsupportedError(
                f"the memory backend has no durability {durability!r}; it offers 'flush'",
                details={"durability": durability},
            )
        with self._data.lock:
            buffer = self._data.streams.setdefault((run_id, stream), bytearray())
        return _MemoryWriter(buffer, self._data.lock)

    async def read_bytes(self, run_id: str, stream: str, offset: int = 0) -> AsyncIterator[bytes]:
        buffer = self._data.streams.get((run_id, stream))
        if buffer is None:
            return
        while True:
            with self._data.lock:
                chunk = bytes(buffer[offset : offset + _CHUNK])
            if not chunk:
                return
            offset += len(chunk)
            yield chunk

    async def list_streams(self, run_id: str) -> list[str]:
        return sorted(s for r, s in list(self._data.streams) if r == run_id)

    async def stream_size(self, run_id: str, stream: str) -> int:
        return len(self._data.streams.get((run_id, stream), b""))

    async def delete_stream(self, run_id: str, stream: str) -> None:
        with self._data.lock:
            self._data.streams.pop((run_id, stream), None)

    # -- artifacts --------------------------------------------------------------

    async def put(self, run_id: str, name: str, source: ArtifactSource) -> StoredArtifact:
        if isinstance(source, bytes):
            content = source
        else:
            parts = bytearray()
            async for chunk in source:
                parts += chunk
            content = bytes(parts)
        sha256 = hashlib.sha256(content).hexdigest()
        with self._data.lock:
            existing = self._data.artifacts.get((run_id, name))
            if existing is not None:
                if hashlib.sha256(existing).hexdigest() != sha256:
                    raise _artifact_conflict(run_id, name)
                return StoredArtifact(sha256=sha256, size=len(content), created=False)
            _check_no_path_clash(
                run_id, name, self._data.artifacts.__contains__, self._names(run_id)
            )
            self._data.artifacts[(run_id, name)] = content
        return StoredArtifact(sha256=sha256, size=len(content), created=True)

    def uri(self, run_id: str, name: str) -> str:
        return f"memory://{self.name}/{artifact_path(run_id, name)}"

    def _names(self, run_id: str) -> list[str]:
        return [n for r, n in self._data.artifacts if r == run_id]

    async def read_chunks(self, run_id: str, name: str) -> AsyncIterator[bytes]:
        content = self._data.artifacts.get((run_id, name))
        if content is None:
            raise NotFoundError(
                f"artifact {name!r} not found in run {run_id!r}",
                details={"run_id": run_id, "name": name},
            )
        for start in range(0, len(content), _CHUNK):
            yield content[start : start + _CHUNK]
        if not content:
            yield b""


def _artifact_conflict(run_id: str, name: str) -> ConflictError:
    return ConflictError(
        f"artifact {name!r} of run {run_id!r} already exists with different bytes; "
        "artifacts are immutable, store the new version under a new name",
        details={"run_id": run_id, "name": name},
    )


def _check_no_path_clash(
    run_id: str, name: str, exists: Callable[[tuple[str, str]], bool], names: list[str]
) -> None:
    """A name may not be a directory of another artifact, nor have one as its directory.

    File systems cannot hold both ``a`` and ``a/b``; the reference refuses it
    so that every backend behaves alike.
    """
    parts = name.split("/")
    for i in range(1, len(parts)):
        if exists((run_id, "/".join(parts[:i]))):
            raise ConflictError(
                f"artifact name {name!r} uses {'/'.join(parts[:i])!r} as a directory, "
                "but that is an artifact",
                details={"run_id": run_id, "name": name},
            )
    prefix = name + "/"
    if any(n.startswith(prefix) for n in names):
        raise ConflictError(
            f"artifact name {name!r} is a directory of other artifacts",
            details={"run_id": run_id, "name": name},
        )


def _factory(target: Target) -> MemoryBackend:
    if target.options:
        raise InvalidInputError(
            f"the memory backend takes no options, got {sorted(target.options)}",
            details={"options": sorted(target.options)},
        )
    return MemoryBackend(target.path)


@hookimpl
def runstore_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="memory",
            factory=_factory,
            schemes=("memory",),
            description="in-process reference backend (data lives while the store is open)",
            distribution="runstore",
        )
    )
