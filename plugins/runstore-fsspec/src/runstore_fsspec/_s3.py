"""S3 through the aiobotocore client that s3fs builds: conditional writes, ETags, multipart."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Any, Final

from runstore.model.errors import NotFoundError, StorageIOError
from runstore_fsspec._errors import PreconditionFailed, translate, translating
from runstore_fsspec._objects import READ_CHUNK, MetadataFn, ObjectInfo, ObjectStore

__all__ = ["S3Objects"]

_DELETE_BATCH: Final = 1000


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
