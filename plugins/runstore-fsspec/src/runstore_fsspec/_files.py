"""Any fsspec filesystem through its sync API in worker threads."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import posixpath
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from typing import Any

from runstore.model.errors import NotFoundError
from runstore.spi.layout import BOOKKEEPING_DIR
from runstore_fsspec._errors import PreconditionFailed, translating
from runstore_fsspec._objects import READ_CHUNK, MetadataFn, ObjectInfo, ObjectStore

__all__ = ["FsspecObjects"]

# -- any fsspec filesystem ----------------------------------------------------------

_locks: dict[str, threading.RLock] = {}
_locks_guard = threading.Lock()
_tmp_names = itertools.count()


def _lock_for(name: str) -> threading.RLock:
    with _locks_guard:
        return _locks.setdefault(name, threading.RLock())


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class FsspecObjects(ObjectStore):
    """Any fsspec filesystem, driven through its sync API in worker threads."""

    def __init__(self, fs: Any, url: str, root: str) -> None:
        self._fs = fs
        self.url = url
        self._root = root.rstrip("/") or "/"
        protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        self._local = "file" in protocols or "local" in protocols
        in_process = "memory" in protocols
        self.conditional_writes = in_process
        self.persistent = not in_process
        self._lock = _lock_for(f"{protocols[0]}:{self._root}")

    def _path(self, key: str) -> str:
        return f"{self._root.rstrip('/')}/{key}" if key else self._root

    def _rel(self, path: str) -> str:
        # fsspec's own path normaliser (each implementation overrides it); no public twin
        path = self._fs._strip_protocol(path)  # noqa: SLF001
        return path[len(self._root.rstrip("/")) + 1 :]

    async def _call(self, op: str, key: str, fn: Callable[..., Any], *args: Any) -> Any:
        with translating(op, self.describe(key)):
            return await asyncio.to_thread(fn, *args)

    # sync helpers, run in worker threads

    def _write(self, path: str, data: bytes) -> None:
        if self._local:
            # whole or nothing: write a temporary file, then rename it into place
            tmp = self._tmp_path()
            self._fs.pipe_file(tmp, data)
            self._fs.makedirs(posixpath.dirname(path), exist_ok=True)
            os.replace(tmp, path)
        else:
            self._fs.pipe_file(path, data)

    def _tmp_path(self) -> str:
        directory = self._path(f"{BOOKKEEPING_DIR}/staging")
        self._fs.makedirs(directory, exist_ok=True)
        return f"{directory}/{os.getpid()}-{threading.get_ident()}-{next(_tmp_names)}"

    def _check(self, key: str, path: str, create_only: bool, if_match: str | None) -> None:
        if create_only and self._fs.exists(path):
            raise PreconditionFailed(key)
        if if_match is not None:
            try:
                current = self._fs.cat_file(path)
            except FileNotFoundError:
                raise PreconditionFailed(key) from None
            if _md5(current) != if_match:
                raise PreconditionFailed(key)

    def _put_sync(self, key: str, data: bytes, create_only: bool, if_match: str | None) -> str:
        path = self._path(key)
        with self._lock:
            self._check(key, path, create_only, if_match)
            self._write(path, data)
        return _md5(data)

    def _get_sync(self, key: str) -> tuple[bytes, str]:
        data = self._fs.cat_file(self._path(key))
        return data, _md5(data)

    def _head_sync(self, key: str) -> ObjectInfo | None:
        try:
            info = self._fs.info(self._path(key))
        except FileNotFoundError:
            return None
        if info.get("type") != "file":
            return None
        return ObjectInfo(key, int(info.get("size") or 0))

    def _list_sync(self, prefix: str) -> list[ObjectInfo]:
        path = self._path(prefix.rstrip("/"))
        if not self._fs.isdir(path):
            return []
        found = self._fs.find(path, detail=True)
        return [
            ObjectInfo(self._rel(name), int(info.get("size") or 0))
            for name, info in sorted(found.items())
            if info.get("type") == "file"
        ]

    def _listdir_sync(self, prefix: str, name_prefix: str) -> tuple[list[str], list[ObjectInfo]]:
        path = self._path(prefix.rstrip("/"))
        try:
            entries = self._fs.ls(path, detail=True) if self._fs.isdir(path) else []
        except FileNotFoundError:
            entries = []
        dirs: list[str] = []
        files: list[ObjectInfo] = []
        for entry in entries:
            rel = self._rel(entry["name"])
            name = rel.rsplit("/", 1)[-1]
            if not name.startswith(name_prefix):
                continue
            if entry.get("type") == "directory":
                dirs.append(name)
            elif entry.get("type") == "file":
                files.append(ObjectInfo(rel, int(entry.get("size") or 0)))
        return sorted(dirs), sorted(files, key=lambda info: info.key)

    def _has_children_sync(self, prefix: str) -> bool:
        path = self._path(prefix.rstrip("/"))
        return bool(self._fs.isdir(path) and self._fs.find(path))

    def _delete_sync(self, keys: Sequence[str]) -> None:
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                self._fs.rm_file(self._path(key))

    def _delete_tree_sync(self, prefix: str) -> None:
        path = self._path(prefix.rstrip("/"))
        if self._fs.exists(path):
            with contextlib.suppress(FileNotFoundError):
                self._fs.rm(path, recursive=True)

    def _prune_sync(self, prefix: str) -> None:
        path = self._path(prefix.rstrip("/"))
        if self._fs.isdir(path) and not self._fs.find(path):
            with contextlib.suppress(FileNotFoundError, OSError):
                self._fs.rm(path, recursive=True)

    def _read_sync(self, key: str, start: int, end: int) -> bytes:
        return bytes(self._fs.cat_file(self._path(key), start=start, end=end))

    # the interface

    async def get(self, key: str) -> tuple[bytes, str | None]:
        data, tag = await self._call("GET", key, self._get_sync, key)
        return data, tag

    async def head(self, key: str) -> ObjectInfo | None:
        info: ObjectInfo | None = await self._call("HEAD", key, self._head_sync, key)
        return info

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        create_only: bool = False,
        if_match: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str | None:
        tag: str = await self._call("PUT", key, self._put_sync, key, data, create_only, if_match)
        return tag

    async def list_tree(self, prefix: str) -> list[ObjectInfo]:
        found: list[ObjectInfo] = await self._call("LIST", prefix, self._list_sync, prefix)
        return found

    async def listdir(
        self, prefix: str, name_prefix: str = ""
    ) -> tuple[list[str], list[ObjectInfo]]:
        result: tuple[list[str], list[ObjectInfo]] = await self._call(
            "LIST", prefix, self._listdir_sync, prefix, name_prefix
        )
        return result

    async def has_children(self, prefix: str) -> bool:
        found: bool = await self._call("LIST", prefix, self._has_children_sync, prefix)
        return found

    async def delete(self, keys: Sequence[str]) -> None:
        if keys:
            await self._call("DELETE", keys[0], self._delete_sync, list(keys))

    async def delete_tree(self, prefix: str) -> None:
        await self._call("DELETE", prefix, self._delete_tree_sync, prefix)

    async def prune(self, prefix: str) -> None:
        await self._call("DELETE", prefix, self._prune_sync, prefix)

    async def read(self, key: str, offset: int = 0) -> AsyncIterator[bytes]:
        info = await self.head(key)
        if info is None:
            raise NotFoundError(
                f"GET {self.describe(key)}: not found", details={"key": self.describe(key)}
            )
        position = offset
        while position < info.size:
            end = min(position + READ_CHUNK, info.size)
            chunk: bytes = await self._call("GET", key, self._read_sync, key, position, end)
            if not chunk:
                return
            position += len(chunk)
            yield chunk

    async def upload(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        create_only: bool = False,
        if_match: str | None = None,
        metadata: MetadataFn | None = None,
    ) -> str | None:
        tmp = await self._call("UPLOAD", key, self._tmp_path)
        digest = hashlib.md5(usedforsecurity=False)
        handle = await self._call("UPLOAD", key, self._fs.open, tmp, "wb")
        try:
            try:
                async for chunk in chunks:
                    digest.update(chunk)
                    await self._call("UPLOAD", key, handle.write, chunk)
            finally:
                await self._call("UPLOAD", key, handle.close)
            await self._call("UPLOAD", key, self._publish, key, tmp, create_only, if_match)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._fs.rm_file, tmp)
            raise
        return digest.hexdigest()

    def _publish(self, key: str, tmp: str, create_only: bool, if_match: str | None) -> None:
        path = self._path(key)
        with self._lock:
            self._check(key, path, create_only, if_match)
            self._fs.makedirs(posixpath.dirname(path), exist_ok=True)
            if self._local:
                os.replace(tmp, path)
            else:
                self._fs.mv(tmp, path)
