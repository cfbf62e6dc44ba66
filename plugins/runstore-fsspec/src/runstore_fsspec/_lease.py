"""One writing process at a time on filesystems without conditional writes.

On such a filesystem (``fsspec+file://``, and any fsspec protocol without an
atomic create-only or compare-and-swap write) two processes could both claim
a run id or overwrite each other's state. Instead of racing, the first
process that writes takes a *writer lease*, ``.runstore/writer.json``
(host, pid, a per-process token); every store of that process shares it and
the last one to close releases it. Another process that tries to write is
refused with :class:`~runstore.model.errors.UnsupportedError` naming the holder.
A lease left by a process that died on the same host is taken over; one left
by a dead process on another host has to be deleted by hand (the message
says which file). Reading never needs the lease.

:class:`ListingLease` is the same lease for an S3 endpoint that ignores
conditional writes, where a create-only ``writer.json`` would not exclude
anyone. It needs only what such a service still does right, a PUT of a key
nobody else writes and a listing that shows every finished PUT: each process
writes its own claim ``.runstore/writers/<token>.json``, then lists
``.runstore/writers/``, and holds the lease only if its claim is the only one
there; otherwise it deletes its claim and backs off. Of two processes, the one
that lists last sees the other's claim, so at most one holds the lease.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
import uuid
from typing import Any, Final

import orjson

from runstore.model.errors import NotFoundError, UnsupportedError
from runstore.model.run import utcnow
from runstore.spi.layout import BOOKKEEPING_DIR
from runstore_fsspec._errors import PreconditionFailed
from runstore_fsspec._objects import ObjectStore

__all__ = ["CLAIMS_DIR", "LEASE_KEY", "ListingLease", "WriterLease"]

LEASE_KEY: Final = f"{BOOKKEEPING_DIR}/writer.json"
CLAIMS_DIR: Final = f"{BOOKKEEPING_DIR}/writers"
_CLAIM_ATTEMPTS: Final = 8
_TOKEN: Final = uuid.uuid4().hex
_HOST: Final = socket.gethostname()

_holders: dict[str, int] = {}
_guard = threading.Lock()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WriterLease:
    """This process's claim to write one store (shared by its backends)."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self._held = False
        self._lock: asyncio.Lock | None = None

    @property
    def held(self) -> bool:
        return self._held

    async def _read(self) -> dict[str, Any] | None:
        try:
            data, _ = await self.objects.get(LEASE_KEY)
        except NotFoundError:
            return None
        try:
            holder: dict[str, Any] = orjson.loads(data)
        except orjson.JSONDecodeError:
            return {}
        return holder

    def _stale(self, holder: dict[str, Any]) -> bool:
        pid = holder.get("pid")
        return holder.get("host") == _HOST and isinstance(pid, int) and not _alive(pid)

    async def acquire(self) -> None:
        """Take (or share) the lease; raises :class:`UnsupportedError` if another process has it."""
        if self._held:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.held:  # taken by a concurrent caller while this one waited
                return
            with _guard:
                if _holders.get(self.objects.url):
                    _holders[self.objects.url] += 1
                    self._held = True
                    return
            await self._claim()
            with _guard:
                _holders[self.objects.url] = _holders.get(self.objects.url, 0) + 1
            self._held = True

    async def _claim(self) -> None:
        body = orjson.dumps(
            {"host": _HOST, "pid": os.getpid(), "token": _TOKEN, "since": utcnow().isoformat()}
        )
        for _ in range(5):
            try:
                await self.objects.put(LEASE_KEY, body, create_only=True)
            except PreconditionFailed:
                holder = await self._read()
                if holder is None:
                    continue  # released meanwhile
                if holder.get("token") == _TOKEN:
                    return
                if self._stale(holder):
                    await self.objects.delete([LEASE_KEY])
                    continue
                raise self._refusal(holder) from None
            # The create-only write is not atomic across processes here: read it back.
            holder = await self._read()
            if holder is not None and holder.get("token") == _TOKEN:
                return
            if holder is not None:
                raise self._refusal(holder)
        raise UnsupportedError(
            f"could not take the writer lease {self.objects.describe(LEASE_KEY)}: "
            "it keeps changing hands",
            details={"lease": self.objects.describe(LEASE_KEY)},
        )

    def _refusal(self, holder: dict[str, Any], key: str = LEASE_KEY) -> UnsupportedError:
        where = self.objects.describe(key)
        return UnsupportedError(
            f"{self.objects.url} is being written by another process "
            f"(host {holder.get('host')!r}, pid {holder.get('pid')}, since {holder.get('since')}); "
            "this store has no working conditional writes, so runstore-fsspec lets one process "
            f"write at a time. Wait for it to close its store; if it died, delete {where}",
            details={"lease": where, "holder": holder},
        )

    def _body(self, **extra: object) -> bytes:
        return orjson.dumps(
            {
                "host": _HOST,
                "pid": os.getpid(),
                "token": _TOKEN,
                "since": utcnow().isoformat(),
                **extra,
            }
        )

    async def release(self) -> None:
        """Give the lease up; the file goes when the last store of this process releases it."""
        if not self._held:
            return
        self._held = False
        with _guard:
            remaining = _holders.get(self.objects.url, 1) - 1
            if remaining > 0:
                _holders[self.objects.url] = remaining
                return
            _holders.pop(self.objects.url, None)
        await self._drop()

    async def _drop(self) -> None:
        holder = await self._read()
        if holder is not None and holder.get("token") == _TOKEN:
            await self.objects.delete([LEASE_KEY])


class ListingLease(WriterLease):
    """The writer lease from claims and a listing (see the module docstring)."""

    @property
    def claim_key(self) -> str:
        return f"{CLAIMS_DIR}/{_TOKEN}.json"

    async def _claims(self) -> dict[str, dict[str, Any] | None]:
        """Every claim but ours: its key and what it says (``None``: gone or unreadable)."""
        _, files = await self.objects.listdir(CLAIMS_DIR)
        others: dict[str, dict[str, Any] | None] = {}
        for info in files:
            if info.key == self.claim_key:
                continue
            try:
                data, _ = await self.objects.get(info.key)
                holder = orjson.loads(data)
                others[info.key] = holder if isinstance(holder, dict) else {}
            except NotFoundError:
                others[info.key] = None
            except orjson.JSONDecodeError:
                others[info.key] = {}
        return others

    async def _claim(self) -> None:
        for attempt in range(_CLAIM_ATTEMPTS):
            await self.objects.put(self.claim_key, self._body())
            others = await self._claims()
            if not others:
                # alone: nobody else can hold it now; mark ours held so newcomers give up at once
                await self.objects.put(self.claim_key, self._body(held=True))
                return
            await self.objects.delete([self.claim_key])
            holders: list[tuple[str, dict[str, Any]]] = []
            for key, holder in others.items():
                if holder is None:
                    continue
                if self._stale(holder):
                    await self.objects.delete([key])
                    continue
                holders.append((key, holder))
            held = [(key, holder) for key, holder in holders if holder.get("held")]
            if held:
                raise self._refusal(held[0][1], held[0][0])
            if holders and attempt == _CLAIM_ATTEMPTS - 1:
                raise self._refusal(holders[0][1], holders[0][0])
            # other newcomers, each backing off as this one does: try again a little later
            await asyncio.sleep(random.uniform(0.02, 0.1) * (attempt + 1))  # noqa: S311
        raise UnsupportedError(
            f"could not take the writer lease under {self.objects.describe(CLAIMS_DIR)}: "
            "it keeps changing hands",
            details={"lease": self.objects.describe(CLAIMS_DIR)},
        )

    async def _drop(self) -> None:
        await self.objects.delete([self.claim_key])
