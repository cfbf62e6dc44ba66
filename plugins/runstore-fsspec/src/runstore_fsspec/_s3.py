"""S3 through the aiobotocore client that s3fs builds: conditional writes, ETags, multipart.

Conditional writes (``If-None-Match: *``, ``If-Match: <etag>``) are sent as
headers and trusted only once :mod:`runstore_fsspec._conditional` has probed
the endpoint. On an endpoint that ignores them (:meth:`S3Objects.emulate_conditions`)
every create-only or If-Match write checks the key first and writes it under
a lock of this process: exact within the process, and the backend's writer
lease keeps every other process from writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Any, Final

from runstore.model.errors import NotFoundError, RunstoreError, StorageIOError
from runstore.spi.layout import BOOKKEEPING_DIR
from runstore_fsspec._errors import PreconditionFailed, translate, translating
from runstore_fsspec._objects import READ_CHUNK, MetadataFn, ObjectInfo, ObjectStore

__all__ = ["AWS_ENDPOINT", "PROBE_DIR", "S3Objects"]

_DELETE_BATCH: Final = 1000

AWS_ENDPOINT: Final = "https://s3.amazonaws.com"
"""What :attr:`S3Objects.endpoint` says when no ``endpoint_url`` was given."""

PROBE_DIR: Final = f"{BOOKKEEPING_DIR}/probe"
"""Where :meth:`S3Objects.probe_conditional_writes` writes (and removes) its sentinel."""

# Emulated conditional writes: one lock per key stripe, shared by every store of the process.
_STRIPES: Final = tuple(threading.Lock() for _ in range(64))
# S3 error codes of a server that refuses the conditional headers themselves.
_REJECTED_CODES: Final = frozenset(
    {"NotImplemented", "InvalidArgument", "InvalidRequest", "400", "501"}
)


# -- S3 ---------------------------------------------------------------------------


class S3Objects(ObjectStore):
    """S3 (and S3-compatible services) through s3fs's aiobotocore client."""

    conditional_writes = True
    """Until :meth:`emulate_conditions`: the service's conditional writes are trusted."""

    def __init__(
        self,
        fs: Any,
        root: str,
        *,
        part_size: int = 8 << 20,
        concurrency: int = 4,
        endpoint: str | None = None,
    ) -> None:
        bucket, _, prefix = root.strip("/").partition("/")
        self._fs = fs
        self.endpoint = (endpoint or AWS_ENDPOINT).rstrip("/")
        self.bucket = bucket
        self._base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self._base}"
        self.part_size = max(part_size, 5 << 20)
        self.concurrency = max(concurrency, 1)
        self._client: Any = None
        self._send_conditions = True

    def emulate_conditions(self, *, send_headers: bool) -> None:
        """Stop trusting the service's conditional writes: check, then write, under a lock.

        ``send_headers``: still send the headers (a service that ignores them
        does no harm with them, and honours them once it is upgraded).
        """
        self.conditional_writes = False
        self._send_conditions = send_headers

    @contextlib.asynccontextmanager
    async def _exclusive(self, key: str) -> AsyncIterator[None]:
        """Hold this process's lock of ``key`` (a thread waits for it, not the event loop)."""
        lock = _STRIPES[hash((self.endpoint, self.bucket, self._key(key))) % len(_STRIPES)]
        if not lock.acquire(blocking=False):
            waiting = asyncio.ensure_future(asyncio.to_thread(lock.acquire))
            try:
                await asyncio.shield(waiting)
            except asyncio.CancelledError:
                waiting.add_done_callback(lambda _: lock.release())
                raise
        try:
            yield
        finally:
            lock.release()

    async def _check(self, key: str, create_only: bool, if_match: str | None) -> None:
        """Raise :class:`PreconditionFailed` as the service would have, had it checked."""
        info = await self.head(key)
        if create_only and info is not None:
            raise PreconditionFailed(key)
        if if_match is not None and (info is None or info.etag != if_match):
            raise PreconditionFailed(key)

    async def probe_conditional_writes(self) -> str | None:
        """Whether the service honours conditional writes: ``None`` if it does, else why not.

        Writes a sentinel ``.runstore/probe/<uuid>`` with ``If-None-Match: *``,
        again (must be refused), with a stale ``If-Match`` (must be refused)
        and with the current ``If-Match`` (must apply), then removes it.
        Raises what a failed request raises (an unreachable service has no verdict).
        """
        key = f"{PROBE_DIR}/{uuid.uuid4().hex}"
        where = self.describe(key)
        try:
            try:
                tag = await self._put(key, b"1", {"IfNoneMatch": "*"}, None)
            except PreconditionFailed:
                return f"a create-only PUT of the new key {where} was refused (412)"
            try:
                await self._put(key, b"2", {"IfNoneMatch": "*"}, None)
            except PreconditionFailed:
                pass
            else:
                return "If-None-Match: * was ignored: a second create-only PUT replaced the object"
            stale = '"00000000000000000000000000000000"'
            try:
                await self._put(key, b"3", {"IfMatch": stale}, None)
            except PreconditionFailed:
                pass
            else:
                return "If-Match was ignored: a PUT with a stale ETag replaced the object"
            if tag is not None:
                try:
                    await self._put(key, b"4", {"IfMatch": tag}, None)
                except PreconditionFailed:
                    return "If-Match with the object's current ETag was refused (412)"
            return None
        except RunstoreError as exc:
            code = str(exc.details.get("s3_code", ""))
            if code in _REJECTED_CODES:
                return f"the service refuses conditional headers ({code}: {exc.message})"
            raise
        finally:
            with contextlib.suppress(Exception):
                await self.delete([key])

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

    def _conditions(self, create_only: bool, if_match: str | None) -> dict[str, str]:
        conditions: dict[str, str] = {}
        if not self._send_conditions:
            return conditions
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
        conditions = self._conditions(create_only, if_match)
        if self.conditional_writes or not (create_only or if_match is not None):
            return await self._put(key, data, conditions, metadata)
        async with self._exclusive(key):
            await self._check(key, create_only, if_match)
            return await self._put(key, data, conditions, metadata)

    async def _put(
        self, key: str, data: bytes, conditions: dict[str, str], metadata: dict[str, str] | None
    ) -> str | None:
        s3 = await self._s3()
        extra: dict[str, Any] = dict(conditions)
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
            if self.conditional_writes or not (create_only or if_match is not None):
                return await self._complete(key, upload_id, parts, create_only, if_match)
            async with self._exclusive(key):
                await self._check(key, create_only, if_match)
                return await self._complete(key, upload_id, parts, create_only, if_match)
        except BaseException:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            with contextlib.suppress(Exception):
                await s3.abort_multipart_upload(
                    Bucket=self.bucket, Key=self._key(key), UploadId=upload_id
                )
            raise

    async def _complete(
        self,
        key: str,
        upload_id: str,
        parts: list[dict[str, Any]],
        create_only: bool,
        if_match: str | None,
    ) -> str | None:
        s3 = await self._s3()
        with translating("COMPLETE-MULTIPART-UPLOAD", self.describe(key)):
            resp = await s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self._key(key),
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **self._conditions(create_only, if_match),
            )
        return resp.get("ETag")  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
            self._fs._s3 = None  # noqa: SLF001 - s3fs caches its client there; no public reset
