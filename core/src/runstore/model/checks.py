"""Checking an artifact's bytes against its :class:`~runstore.model.run.ArtifactRef`.

One place for the rule "the bytes read are the bytes stored": the sha256 and
the size recorded when the artifact was put. Readers (``read_artifact(...,
verify=True)``, replay bundles, ``verify``, ``cp``) stream the bytes through a
:class:`ContentCheck` and ask it at the end.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

from runstore.model.errors import CorruptError
from runstore.model.run import ArtifactRef

__all__ = ["ContentCheck", "checked", "checked_async"]


class ContentCheck:
    """The running sha256 and size of bytes read for ``ref``."""

    __slots__ = ("_digest", "ref", "size")

    def __init__(self, ref: ArtifactRef) -> None:
        self.ref = ref
        self.size = 0
        self._digest = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def mismatch(self) -> str | None:
        """What differs from the reference (``None`` when the bytes match it)."""
        if self.sha256 == self.ref.sha256 and self.size == self.ref.size:
            return None
        return (
            f"sha256/size {self.sha256[:12]}…/{self.size} != recorded "
            f"{self.ref.sha256[:12]}…/{self.ref.size}"
        )

    def verify(self, what: str | None = None) -> None:
        """Raise :class:`~runstore.model.errors.CorruptError` unless the bytes match."""
        if self.mismatch() is None:
            return
        ref = self.ref
        subject = what or f"artifact {ref.name!r} of run {ref.run_id!r}"
        raise CorruptError(
            f"{subject} does not match its sha256 ({self.mismatch()}); "
            "it was modified or damaged after it was stored",
            details={
                "run_id": ref.run_id,
                "name": ref.name,
                "expected": ref.sha256,
                "actual": self.sha256,
                "size": self.size,
            },
        )


def checked(chunks: Iterable[bytes], ref: ArtifactRef, what: str | None = None) -> Iterator[bytes]:
    """``chunks`` passed through, then verified against ``ref`` at the end."""
    check = ContentCheck(ref)
    for chunk in chunks:
        check.update(chunk)
        yield chunk
    check.verify(what)


async def checked_async(
    chunks: AsyncIterable[bytes], ref: ArtifactRef, what: str | None = None
) -> AsyncIterator[bytes]:
    """``chunks`` passed through, then verified against ``ref`` at the end."""
    check = ContentCheck(ref)
    async for chunk in chunks:
        check.update(chunk)
        yield chunk
    check.verify(what)
