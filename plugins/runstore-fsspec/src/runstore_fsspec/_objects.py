"""Object-store adapters: the handful of key/value operations the backend needs.

:class:`S3Objects` talks to S3 through the aiobotocore client that s3fs
builds (credentials, profiles, endpoints and retries are s3fs's and
botocore's), so it can send what s3fs's file API does not expose:
``If-None-Match: *`` and ``If-Match: <etag>`` on writes, ETags from listings,
ranged streaming reads and multipart uploads with a bounded number of parts
in flight.

:class:`FsspecObjects` serves every other fsspec filesystem through its sync
API in worker threads. Create-only and compare-and-swap writes are checked
under a process-wide lock per store root: exact within one process, and
declared as not atomic across processes unless the filesystem lives in the
process (``memory``).

Keys are POSIX paths relative to the store root (the Windtunnel layout of
:mod:`runstore.spi.layout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import posixpath
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from runstore.model.errors import NotFoundError, StorageIOError
from runstore.spi.layout import BOOKKEEPING_DIR
from runstore_fsspec._errors import PreconditionFailed, translate, translating

__all__ = ["FsspecObjects", "ObjectInfo", "ObjectStore", "S3Objects"]

READ_CHUNK: Final = 1 << 20
_DELETE_BATCH: Final = 1000


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: key relative to the store root, size, version tag."""

    key: str
    size: int
    etag: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


MetadataFn = Callable[[], dict[str, str]]


class ObjectStore(ABC):
    """What the backend needs from a storage service."""

    url: str
    conditional_writes: bool
    """Create-only and If-Match writes are atomic across processes and hosts."""
    persistent: bool = True

    def describe(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key}"

    @abstractmethod
    async def get(self, key: str) -> tuple[bytes, str | None]:
        """The object's bytes and version tag. Raises :class:`NotFoundError`."""

    @abstractmethod
    async def head(self, key: str) -> ObjectInfo | None:
        """Size, version tag and metadata of a stored object; ``None`` if absent."""

    @abstractmethod
    async def put(
        self,
        key: str,
        data: bytes,
        *,
        create_only: bool = False,
        if_match: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str | None:
        """Store ``data`` whole; returns the new version tag.

        Raises :class:`PreconditionFailed` when ``create_only`` finds the key
        or ``if_match`` does not match the stored version.
        """

    @abstractmethod
    async def list_tree(self, prefix: str) -> list[ObjectInfo]:
        """Every object under the directory ``prefix`` (recursive)."""

    @abstractmethod
    async def listdir(
        self, prefix: str, name_prefix: str = ""
    ) -> tuple[list[str], list[ObjectInfo]]:
        """Immediate children of directory ``prefix`` (``""`` is the root) whose
        name starts with ``name_prefix``: ``(directory names, files)``."""

    @abstractmethod
    async def has_children(self, prefix: str) -> bool:
        """Whether directory ``prefix`` holds any object."""

    @abstractmethod
    async def delete(self, keys: Sequence[str]) -> None:
        """Remove objects; absent ones are ignored."""

    @abstractmethod
    async def delete_tree(self, prefix: str) -> None:
        """Remove everything under directory ``prefix``."""

    @abstractmethod
    def read(self, key: str, offset: int = 0) -> AsyncIterator[bytes]:
        """The object's bytes from ``offset`` on, in chunks. Raises :class:`NotFoundError`."""

    @abstractmethod
    async def upload(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        create_only: bool = False,
        if_match: str | None = None,
        metadata: MetadataFn | None = None,
    ) -> str | None:
        """Store a stream of unknown length without holding it in memory.

        ``metadata`` is called once every chunk was consumed, if the service
        can still attach it. Raises :class:`PreconditionFailed` as :meth:`put`
        does, possibly before ``chunks`` is exhausted.
        """

    async def prune(self, prefix: str) -> None:  # noqa: B027 - optional
        """Remove directory ``prefix`` if it holds no object (stores with real directories)."""

    async def aclose(self) -> None:  # noqa: B027 - optional
        """Release connections."""


# -- S3 ---------------------------------------------------------------------------


class S3Objects(ObjectStore):
    """S3 (and S3-compatible services) through s3fs's aiobotocore client."""

    conditional_writes = True

    def __init__(
        self, fs: Any, root: str, *, part_size: int = 8 << 20, concurrency: int = 4
    ) -> None:
        bucket, _, prefix = root.strip("/").partition("/")
        self._fs = fs
        self.bucket = bucket
        self._base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self._base}"
        self.part_size = max(part_size, 5 << 20)
        self.concurrency = max(concurrency, 1)
        self._client: Any = None

    async def _s3(self) -> Any:
        if self._client is None:
            with translating("CONNECT", self.url):
                self._client = await self._fs.set_session()
        return self._client

    def _key(self, key: str) -> str:
        return self._base + key

    def _rel(self, full: str) -> str:
        return full[len(self._base) :]

    async def get(self, key: str) -> tuple[bytes, str | None]:
        s3 = await self._s3()
        with translating("GET", self.describe(key)):
            resp = await s3.get_object(Bucket=self.bucket, Key=self._key(key))
            async with resp["Body"] as body:
                data = await body.read()
        return data, resp.get("ETag")

    async def head(self, key: str) -> ObjectInfo | None:
        s3 = await self._s3()
        try:
            with translating("HEAD", self.describe(key)):
                resp = await s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except NotFoundError:
            return None
        return ObjectInfo(
            key, int(resp["ContentLength"]), resp.get("ETag"), dict(resp.get("Metadata") or {})
        )

    @staticmethod
    def _conditions(create_only: bool, if_match: str | None) -> dict[str, str]:
        conditions: dict[str, str] = {}
        if create_only:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = if_match
        return conditions

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        create_only: bool = False,
        if_match: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str | None:
        s3 = await self._s3()
        extra: dict[str, Any] = self._conditions(create_only, if_match)
        if metadata:
            extra["Metadata"] = metadata
        with translating("PUT", self.describe(key)):
            resp = await s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        return resp.get("ETag")  # type: ignore[no-any-return]

    async def _pages(self, **params: Any) -> AsyncIterator[dict[str, Any]]:
        s3 = await self._s3()
        token: str | None = None
        while True:
            call = dict(params, Bucket=self.bucket)
            if token:
                call["ContinuationToken"] = token
            with translating("LIST", self.describe(self._rel(params["Prefix"]))):
                page = await s3.list_objects_v2(**call)
            yield page
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    async def list_tree(self, prefix: str) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        async for page in self._pages(Prefix=self._key(prefix.rstrip("/") + "/")):
            found.extend(
                ObjectInfo(self._rel(item["Key"]), int(item["Size"]), item.get("ETag"))
                for item in page.get("Contents", ())
            )
        return found

    async def listdir(
        self, prefix: str, name_prefix: str = ""
    ) -> tuple[list[str], list[ObjectInfo]]:
        directory = self._key(f"{prefix.rstrip('/')}/" if prefix else "")
        dirs: list[str] = []
        files: list[ObjectInfo] = []
        async for page in self._pages(Prefix=directory + name_prefix, Delimiter="/"):
            dirs.extend(
                item["Prefix"][len(directory) :].rstrip("/")
                for item in page.get("CommonPrefixes", ())
            )
            files.extend(
                ObjectInfo(self._rel(item["Key"]), int(item["Size"]), item.get("ETag"))
                for item in page.get("Contents", ())
            )
        return dirs, files

    async def has_children(self, prefix: str) -> bool:
        async for page in self._pages(Prefix=self._key(prefix.rstrip("/") + "/"), MaxKeys=1):
            return bool(page.get("KeyCount") or page.get("Contents"))
        return False  # pragma: no cover - _pages always yields

    async def delete(self, keys: Sequence[str]) -> None:
        s3 = await self._s3()
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            with translating("DELETE", self.describe(batch[0])):
                resp = await s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True},
                )
            errors = resp.get("Errors") or []
            if errors:
                raise StorageIOError(
                    f"could not delete {len(errors)} object(s) under {self.url}: "
                    f"{errors[0].get('Code')} {errors[0].get('Message')}",
                    details={"errors": errors[:10]},
                )

    async def delete_tree(self, prefix: str) -> None:
        await self.delete([info.key for info in await self.list_tree(prefix)])

    async def read(self, key: str, offset: int = 0) -> AsyncIterator[bytes]:
        s3 = await self._s3()
        where = self.describe(key)
        ranged = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            resp = await s3.get_object(Bucket=self.bucket, Key=self._key(key), **ranged)
        except Exception as exc:
            if offset and getattr(exc, "response", {}).get("Error", {}).get("Code") == (
                "InvalidRange"
            ):
                return  # offset is at (or past) the end: nothing to read
            raise translate(exc, op="GET", key=where) from exc
        async with resp["Body"] as body:
            while True:
                with translating("GET", where):
                    chunk = await body.read(READ_CHUNK)
                if not chunk:
                    return
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
        stream = aiter(chunks)
        buffer = bytearray()
        async for chunk in stream:
            buffer += chunk
            if len(buffer) >= self.part_size:
                break
        else:
            return await self.put(
                key,
                bytes(buffer),
                create_only=create_only,
                if_match=if_match,
                metadata=metadata() if metadata else None,
            )
        if create_only and await self.head(key) is not None:
            raise PreconditionFailed(key)  # fail before uploading gigabytes for nothing
        return await self._multipart(key, buffer, stream, create_only, if_match)

    async def _multipart(
        self,
        key: str,
        first: bytearray,
        stream: AsyncIterator[bytes],
        create_only: bool,
        if_match: str | None,
    ) -> str | None:
        s3 = await self._s3()
        where = self.describe(key)
        with translating("CREATE-MULTIPART-UPLOAD", where):
            mpu = await s3.create_multipart_upload(Bucket=self.bucket, Key=self._key(key))
        upload_id = mpu["UploadId"]
        etags: dict[int, str] = {}
        pending: set[asyncio.Task[None]] = set()
        numbers = itertools.count(1)

        async def send(number: int, body: bytes) -> None:
            with translating("UPLOAD-PART", where):
                resp = await s3.upload_part(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                )
            etags[number] = resp["ETag"]

        async def submit(body: bytes) -> None:
            while len(pending) >= self.concurrency:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                pending.difference_update(done)
                for task in done:
                    task.result()
            pending.add(asyncio.create_task(send(next(numbers), body)))

        try:
            await submit(bytes(first))
            buffer = bytearray()
            async for chunk in stream:
                buffer += chunk
                if len(buffer) >= self.part_size:
                    await submit(bytes(buffer))
                    buffer = bytearray()
            if buffer:
                await submit(bytes(buffer))
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                pending.difference_update(done)
                for task in done:
                    task.result()
            parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
            with translating("COMPLETE-MULTIPART-UPLOAD", where):
                resp = await s3.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **self._conditions(create_only, if_match),
                )
            return resp.get("ETag")  # type: ignore[no-any-return]
        except BaseException:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            with contextlib.suppress(Exception):
                await s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=self._key(key), UploadId=upload_id
                )
            raise

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
            self._fs._s3 = None  # noqa: SLF001 - s3fs caches its client there; no public reset


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
