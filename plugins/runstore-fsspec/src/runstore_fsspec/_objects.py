"""Object-store adapters: the handful of key/value operations the backend needs.

:class:`ObjectStore` is the interface; :class:`~runstore_fsspec._s3.S3Objects`
(module ``_s3``) and :class:`~runstore_fsspec._files.FsspecObjects` (module
``_files``) implement it.

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

from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

__all__ = ["READ_CHUNK", "MetadataFn", "ObjectInfo", "ObjectStore"]

READ_CHUNK: Final = 1 << 20


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
