"""What ``put_artifact`` accepts as data, turned into what a backend stores.

Bytes stay bytes; a path, a binary file object or an async iterable become an
async iterator of chunks (1 MiB), so large files are streamed, never loaded
whole.
"""

from __future__ import annotations

import builtins
import mimetypes
import os
from collections.abc import AsyncIterable, AsyncIterator
from typing import IO

from runstore.model.errors import InvalidInputError
from runstore.spi.backends import ArtifactSource

__all__ = ["as_artifact_source", "media_type"]

_CHUNK = 1 << 20


def media_type(name: str) -> str:
    """The media type of an artifact from its name (``application/octet-stream`` if unknown)."""
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if guessed:
        return guessed
    return "application/x-ndjson" if name.endswith(".jsonl") else "application/octet-stream"


async def _file_chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := handle.read(_CHUNK):
        yield chunk


async def _path_chunks(path: os.PathLike[str]) -> AsyncIterator[bytes]:
    with builtins.open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def as_artifact_source(data: object) -> ArtifactSource:
    """Accept bytes-like, a path, a binary file object or an async iterable of bytes."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, os.PathLike):
        return _path_chunks(data)
    if hasattr(data, "read"):
        return _file_chunks(data)  # type: ignore[arg-type]
    if isinstance(data, AsyncIterable):
        return data
    raise InvalidInputError(
        f"artifact data must be bytes, a path, a binary file or an async iterable of bytes, "
        f"got {type(data).__name__}",
        details={"type": type(data).__name__},
    )
