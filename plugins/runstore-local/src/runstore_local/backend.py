"""The local filesystem backend: the Windtunnel tree under a directory.

Writes never follow a symlink below the root (see :mod:`runstore_local.fs`),
temp files live in ``<root>/.runstore/tmp`` so a run's tree holds only its
own files, and the run index is a SQLite table derived from the runs.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import stat
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from runstore.model.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RunstoreError,
    StorageIOError,
)
from runstore.model.names import validate_run_id
from runstore.model.run import RunManifest, RunRecord, RunState, RunSummary
from runstore.spi import layout
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
    Target,
)
from runstore_local._errors import translating
from runstore_local.folders import Signature, now_ns, run_folder, settled
from runstore_local.fs import (
    CREATE_FLAGS,
    DIR_FLAGS,
    READ_FLAGS,
    atomic_write,
    fsync_dir,
    open_dir,
    open_run_dir,
    opened,
    read_file,
    refuse_link,
    temp_name,
    write_all,
)
from runstore_local.index import Folders, RunIndex
from runstore_local.streams import LocalStreamWriter

_CHUNK = 1 << 20
_DAMAGE_CODES: dict[str | None, type[RunstoreError]] = {
    cls.code: cls
    for cls in (
        CorruptError,
        InvalidInputError,
        ConflictError,
        PermissionDeniedError,
        StorageIOError,
    )
}
_INDEX = "index.sqlite3"


class LocalBackend(StateBackend, LogBackend, ArtifactBackend):
    """State, logs and artifacts in a local directory."""

    capabilities = Capabilities(inline=True)
    """Blocking file calls, nothing left running: the sync API runs it in the caller's
    thread. Under ``fsync`` it is not ``inline``: its group commit gathers the records of
    several threads in one fsync, on the loop's thread."""

    def __init__(
        self, root: str | os.PathLike[str], *, durability: Durability | None = None
    ) -> None:
        self.root = Path(root)
        # One durability rule: snapshots and artifacts are fsynced (file and
        # directory) only when records are, under "fsync"; under "flush" an
        # atomic rename survives a crash of the process, as a flushed record does.
        self._sync = durability == "fsync"
        if self._sync:
            self.capabilities = dataclasses.replace(self.capabilities, inline=False)
        where = str(self.root)
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        with translating(f"cannot open store {where!r}", path=where):
            try:
                self._root_fd = os.open(self.root, flags)
            except FileNotFoundError:
                self.root.mkdir(parents=True, exist_ok=True)
                self._root_fd = os.open(self.root, flags)
        self._in_sync: Folders | None = None  # what the folders looked like, in sync
        try:  # a store that fails to open leaks no descriptor
            with translating(f"cannot open store {where!r}", path=where):
                bookkeeping = open_dir(self._root_fd, [layout.BOOKKEEPING_DIR], create=True)
            self._tmp_fd = -1
            try:
                with opened(bookkeeping):
                    with translating(f"cannot open store {where!r}", path=where):
                        self._tmp_fd = open_dir(bookkeeping, ["tmp"], create=True)
                    # SQLite opens the index by name and follows links: refuse planted ones.
                    with translating(f"cannot open the run index of {where!r}", path=where):
                        for suffix in ("", "-wal", "-shm", "-journal"):
                            refuse_link(bookkeeping, _INDEX + suffix)
                index_path = str(self.root / layout.BOOKKEEPING_DIR / _INDEX)
                self._index = RunIndex(index_path, sync=self._sync)
            except BaseException:
                if self._tmp_fd >= 0:
                    os.close(self._tmp_fd)
                raise
            if self._index.created:
                try:
                    self._rebuild()
                except BaseException:
                    self._index.close()
                    os.close(self._tmp_fd)
                    raise
        except BaseException:
            os.close(self._root_fd)
            raise

    @classmethod
    def from_target(cls, target: Target) -> LocalBackend:
        if target.options:
            raise InvalidInputError(
                f"the local backend takes no options, got {sorted(target.options)}; "
                "durability is chosen with runstore.open(..., durability='fsync')",
                details={"options": sorted(target.options)},
            )
        return cls(target.path, durability=target.durability)

    def __repr__(self) -> str:
        return f"LocalBackend({str(self.root)!r})"

    async def aclose(self) -> None:
        if self._root_fd >= 0:
            self._index.close()
            os.close(self._tmp_fd)
            os.close(self._root_fd)
            self._root_fd = -1

    # -- helpers ----------------------------------------------------------------

    @contextmanager
    def _run_dir(self, run_id: str) -> Iterator[int]:
        with translating(f"run {run_id!r}", run_id=run_id):
            try:
                fd = open_run_dir(self._root_fd, run_id)
            except FileNotFoundError as exc:
                raise NotFoundError(
                    f"run {run_id!r} not found in {str(self.root)!r}; 'runstore ls' lists the runs",
                    details={"run_id": run_id},
                ) from exc
        with opened(fd):
            yield fd

    def _read_snapshot(self, run_id: str, name: str, model: type[BaseModel]) -> Any:
        with (
            self._run_dir(run_id) as run_fd,
            translating(f"cannot read {name} of run {run_id!r}", run_id=run_id),
        ):
            try:
                data = read_file(run_fd, name)
            except FileNotFoundError:
                return None
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            raise CorruptError(
                f"{run_id}/{name} is damaged ({exc.error_count()} problems); "
                "run 'runstore verify' and restore it from a copy",
                details={"run_id": run_id, "file": name},
            ) from None

    def _write_snapshot(self, run_fd: int, name: str, model: BaseModel, run_id: str) -> None:
        with translating(f"cannot write {name} of run {run_id!r}", run_id=run_id):
            atomic_write(run_fd, name, layout.dump_snapshot(model), self._tmp_fd, sync=self._sync)

    @contextmanager
    def _locked(self, run_fd: int) -> Iterator[None]:
        fcntl.flock(run_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(run_fd, fcntl.LOCK_UN)

    # -- state ----------------------------------------------------------------

    async def create_run(self, manifest: RunManifest, state: RunState) -> None:
        run_id = manifest.run_id
        creating = f"cannot create run {run_id!r}"
        with translating(creating, run_id=run_id):
            try:
                os.mkdir(run_id, 0o755, dir_fd=self._root_fd)  # the atomic claim of the id
            except FileExistsError:
                raise AlreadyExistsError(
                    f"run {run_id!r} already exists in {str(self.root)!r}; pick another run id",
                    details={"run_id": run_id},
                ) from None
            try:
                run_fd = open_run_dir(self._root_fd, run_id)
            except OSError:
                _unclaim(self._root_fd, run_id, None)
                raise
        with opened(run_fd):
            try:
                self._write_snapshot(run_fd, layout.MANIFEST, manifest, run_id)
                self._write_snapshot(run_fd, layout.STATE, state, run_id)
                if self._sync:
                    with translating(creating, run_id=run_id):
                        fsync_dir(self._root_fd)
                self._index.upsert(RunRecord.build(manifest, state))
            except BaseException:
                # All or nothing: free the id again, so that retrying the same id works.
                _unclaim(self._root_fd, run_id, run_fd)
                raise

    async def read_manifest(self, run_id: str) -> RunManifest:
        manifest: RunManifest | None = self._read_snapshot(run_id, layout.MANIFEST, RunManifest)
        if manifest is None:
            raise NotFoundError(
                f"run {run_id!r} has no manifest (its creation was interrupted)",
                details={"run_id": run_id},
            )
        return manifest

    async def read_state(self, run_id: str) -> RunState:
        state: RunState | None = self._read_snapshot(run_id, layout.STATE, RunState)
        if state is None:
            raise NotFoundError(f"run {run_id!r} has no state.json", details={"run_id": run_id})
        return state

    async def write_state(
        self, state: RunState, *, expected_revision: int, record: RunRecord
    ) -> None:
        run_id = state.run_id
        with self._run_dir(run_id) as run_fd, self._locked(run_fd):
            current: RunState | None = self._read_snapshot(run_id, layout.STATE, RunState)
            stored = -1 if current is None else current.revision
            if stored != expected_revision:
                raise ConflictError(
                    f"state of run {run_id!r} is at revision {stored}, not {expected_revision}: "
                    "another writer updated it; re-read and retry",
                    details={"run_id": run_id, "stored": stored, "expected": expected_revision},
                )
            self._write_snapshot(run_fd, layout.STATE, state, run_id)
        self._index.upsert(record)

    async def write_summary(self, summary: RunSummary) -> None:
        with self._run_dir(summary.run_id) as run_fd:
            self._write_snapshot(run_fd, layout.SUMMARY, summary, summary.run_id)

    async def read_summary(self, run_id: str) -> RunSummary | None:
        summary: RunSummary | None = self._read_snapshot(run_id, layout.SUMMARY, RunSummary)
        return summary

    async def list_runs(self, query: RunQuery) -> Sequence[RunRecord]:
        self._follow_folders()
        return self._index.query(query)

    async def list_run_ids(self, prefix: str = "") -> list[str]:
        self._follow_folders()
        return self._index.run_ids(prefix)

    async def highest_run_number(self, prefix: str) -> int:
        return self._index.highest_number(prefix)

    # -- the index follows the run folders --------------------------------------

    def _follow_folders(self) -> None:
        """Reconcile the index with the run folders if they changed.

        Costs one ``fstat`` while the store directory's signature is the one the
        index matches, and one ``stat`` per run folder the index lacks (being
        copied in, or damaged; see :mod:`runstore_local.folders`): run folders
        copied in or deleted by hand are noticed without anyone rebuilding the
        index.
        """
        taken_at = now_ns()
        root = Signature.of(self._root_fd)
        known = self._in_sync
        if known is None or known.root != str(root):
            known = self._index.folders()  # another process may have reconciled
            if known.root != str(root):
                self._reconcile(root, taken_at)
                return
            self._in_sync = known
        for run_id, signature, _code, _message in known.unindexed:
            if run_folder(self._root_fd, run_id, taken_at)[0] != signature:
                self._reconcile(root, taken_at)
                return

    def _reconcile(self, root: Signature, taken_at: int) -> None:
        """Index the run folders the index lacks, forget the rows whose folder is gone."""
        with translating(f"cannot list store {str(self.root)!r}", path=str(self.root)):
            names = set(os.listdir(self._root_fd))
        indexed = self._index.all_ids()
        added, folders = self._read_folders(sorted(names - indexed), root, taken_at)
        removed = [r for r in indexed - names if not self._is_dir(r)]  # not created meanwhile
        self._index.reconcile(added, removed, folders=folders)
        self._in_sync = folders if folders.root is not None else None

    def _is_dir(self, name: str) -> bool:
        try:
            info = os.stat(name, dir_fd=self._root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return stat.S_ISDIR(info.st_mode)

    def _read_folders(
        self, names: Iterable[str], root: Signature, taken_at: int
    ) -> tuple[list[RunRecord], Folders]:
        """The index records of the run folders ``names``, and what the folders look like.

        Names that are not run ids or are plain files are not runs. A folder
        without its manifest or state is being created (or copied in), and a
        damaged one cannot be read: both are left out and remembered with
        their signature, so that the next listing looks again once they change.
        """
        records: list[RunRecord] = []
        unindexed: list[tuple[str, str, str | None, str | None]] = []
        done = settled(root, taken_at)
        for name in names:
            try:
                run_id = validate_run_id(name)
                info = os.stat(name, dir_fd=self._root_fd, follow_symlinks=False)
            except (RunstoreError, FileNotFoundError):
                continue
            if not (stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode)):
                continue
            signature, still = run_folder(self._root_fd, name, taken_at)
            error: RunstoreError | None = None
            try:
                manifest = self._read_snapshot(run_id, layout.MANIFEST, RunManifest)
                state = self._read_snapshot(run_id, layout.STATE, RunState)
                summary = self._read_snapshot(run_id, layout.SUMMARY, RunSummary)
            except NotFoundError:
                continue  # deleted meanwhile
            except RunstoreError as exc:
                manifest = state = None
                error = exc
            if manifest is not None and state is not None:
                records.append(RunRecord.build(manifest, state, summary))
                continue
            done = done and still
            code, message = (None, None) if error is None else (error.code, error.message)
            unindexed.append((run_id, signature, code, message))
        return records, Folders(str(root) if done else None, unindexed)

    def _rebuild(self) -> int:
        taken_at = now_ns()
        root = Signature.of(self._root_fd)
        with translating(f"cannot list store {str(self.root)!r}", path=str(self.root)):
            names = sorted(os.listdir(self._root_fd))
        records, folders = self._read_folders(names, root, taken_at)
        self._index.replace_all(records, folders=folders)
        self._in_sync = folders if folders.root is not None else None
        return len(records)

    async def rebuild_index(self) -> int:
        return self._rebuild()

    def damaged_runs(self) -> dict[str, RunstoreError]:
        """The run folders the index lacks because they cannot be read (``run_id ->
        error``), as the last rebuild or reconciliation found them."""
        self._follow_folders()
        unindexed = self._index.folders().unindexed
        return {
            run_id: _DAMAGE_CODES.get(code, CorruptError)(
                message or "", details={"run_id": run_id, "path": str(self.root / run_id)}
            )
            for run_id, _signature, code, message in unindexed
            if code is not None
        }

    async def delete_run(self, run_id: str) -> None:
        self._index.delete(run_id)
        deleting = f"cannot delete run {run_id!r}"
        with translating(deleting, run_id=run_id):
            try:
                fd = os.open(run_id, DIR_FLAGS, dir_fd=self._root_fd)
            except FileNotFoundError:
                return
        with opened(fd):
            _remove_tree_contents(fd)
        with translating(deleting, run_id=run_id):
            try:
                os.rmdir(run_id, dir_fd=self._root_fd)
            except FileNotFoundError:
                pass

    # -- logs -----------------------------------------------------------------

    async def open_writer(
        self, run_id: str, stream: str, *, durability: Durability | None = None
    ) -> StreamWriter:
        with self._run_dir(run_id) as run_fd:
            return LocalStreamWriter(
                run_fd, stream + layout.STREAM_SUFFIX, run_id, stream, durability or "flush"
            )

    async def read_bytes(self, run_id: str, stream: str, offset: int = 0) -> AsyncIterator[bytes]:
        name = stream + layout.STREAM_SUFFIX
        with (
            self._run_dir(run_id) as run_fd,
            translating(f"cannot read {name} of run {run_id!r}", run_id=run_id),
        ):
            try:
                fd = os.open(name, READ_FLAGS, dir_fd=run_fd)
            except FileNotFoundError:
                return
        with opened(fd):
            position = offset
            while True:
                chunk = os.pread(fd, _CHUNK, position)
                if not chunk:
                    return
                position += len(chunk)
                yield chunk

    async def list_streams(self, run_id: str) -> list[str]:
        with self._run_dir(run_id) as run_fd:
            names = os.listdir(run_fd)
        suffix = layout.STREAM_SUFFIX
        return sorted(n[: -len(suffix)] for n in names if n.endswith(suffix))

    async def stream_size(self, run_id: str, stream: str) -> int:
        name = stream + layout.STREAM_SUFFIX
        with (
            self._run_dir(run_id) as run_fd,
            translating(f"cannot stat {name} of run {run_id!r}", run_id=run_id),
        ):
            try:
                return os.stat(name, dir_fd=run_fd, follow_symlinks=False).st_size
            except FileNotFoundError:
                return 0

    async def delete_stream(self, run_id: str, stream: str) -> None:
        name = stream + layout.STREAM_SUFFIX
        with self._run_dir(run_id) as run_fd:
            with translating(f"cannot delete {name} of run {run_id!r}", run_id=run_id):
                try:
                    os.unlink(name, dir_fd=run_fd)
                except FileNotFoundError:
                    return
            if self._sync:
                fsync_dir(run_fd)

    # -- artifacts --------------------------------------------------------------

    def _artifact_parent(self, run_fd: int, name: str, *, create: bool) -> tuple[int, str]:
        *dirs, leaf = name.split("/")
        folders = [layout.ARTIFACTS_DIR, *dirs]
        return open_dir(run_fd, folders, create=create, sync=create and self._sync), leaf

    async def put(self, run_id: str, name: str, source: ArtifactSource) -> StoredArtifact:
        what = f"artifact {name!r} of run {run_id!r}"
        tmp = temp_name("artifact")
        digest = hashlib.sha256()
        size = 0
        with translating(f"cannot store {what}", run_id=run_id, name=name):
            fd = os.open(tmp, CREATE_FLAGS, 0o644, dir_fd=self._tmp_fd)
            try:
                with opened(fd):
                    if isinstance(source, bytes):
                        digest.update(source)
                        write_all(fd, source)
                        size = len(source)
                    else:
                        async for chunk in source:
                            digest.update(chunk)
                            write_all(fd, chunk)
                            size += len(chunk)
                    if self._sync:
                        os.fsync(fd)
                sha256 = digest.hexdigest()
                with self._run_dir(run_id) as run_fd:
                    parent, leaf = self._artifact_parent(run_fd, name, create=True)
                    with opened(parent):
                        try:
                            # link(2) never replaces: the atomic write-once create.
                            os.link(
                                tmp,
                                leaf,
                                src_dir_fd=self._tmp_fd,
                                dst_dir_fd=parent,
                                follow_symlinks=False,
                            )
                        except FileExistsError:
                            if _hash_file(parent, leaf, what) != sha256:
                                raise ConflictError(
                                    f"{what} already exists with different bytes; artifacts are "
                                    "immutable, store the new version under a new name",
                                    details={"run_id": run_id, "name": name},
                                ) from None
                            return StoredArtifact(sha256=sha256, size=size, created=False)
                        if self._sync:
                            fsync_dir(parent)
                return StoredArtifact(sha256=sha256, size=size, created=True)
            finally:
                try:
                    os.unlink(tmp, dir_fd=self._tmp_fd)
                except OSError:
                    pass

    def uri(self, run_id: str, name: str) -> str:
        return (self.root / layout.artifact_path(run_id, name)).as_uri()

    async def read_chunks(self, run_id: str, name: str) -> AsyncIterator[bytes]:
        what = f"artifact {name!r} of run {run_id!r}"
        with self._run_dir(run_id) as run_fd:
            try:
                with translating(what, run_id=run_id, name=name):
                    parent, leaf = self._artifact_parent(run_fd, name, create=False)
                    with opened(parent):
                        fd = os.open(leaf, READ_FLAGS, dir_fd=parent)
            except ConflictError as error:  # a directory part is a file: no such artifact
                raise NotFoundError(
                    f"{what}: not found", details=error.details
                ) from error.__cause__
        with opened(fd):
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NotFoundError(f"{what}: not found (a directory)", details={"name": name})
            while chunk := os.read(fd, _CHUNK):
                yield chunk


def _hash_file(dir_fd: int, name: str, what: str) -> str:
    with translating(what):
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    with opened(fd):
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConflictError(
                f"{what}: the name is a directory of other artifacts", details={"name": name}
            )
        digest = hashlib.sha256()
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
        return digest.hexdigest()


def _unclaim(root_fd: int, run_id: str, run_fd: int | None) -> None:
    """Remove a run directory ``create_run`` claimed but could not fill (best effort).

    Needs no ``open(2)``, so it also works while opening files fails.
    """
    if run_fd is not None:
        for name in (layout.MANIFEST, layout.STATE):
            try:
                os.unlink(name, dir_fd=run_fd)
            except OSError:
                pass
    try:
        os.rmdir(run_id, dir_fd=root_fd)
    except OSError:
        pass


def _remove_tree_contents(dir_fd: int) -> None:
    """Remove everything below ``dir_fd`` without following links."""
    for entry in os.listdir(dir_fd):
        info = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            child = os.open(entry, DIR_FLAGS, dir_fd=dir_fd)
            with opened(child):
                _remove_tree_contents(child)
            os.rmdir(entry, dir_fd=dir_fd)
        else:
            os.unlink(entry, dir_fd=dir_fd)


__all__ = ["LocalBackend"]
