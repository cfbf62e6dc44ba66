"""Check an S3 endpoint's conditional writes before relying on them.

runstore's multi-writer guarantees on S3 (one claim per run id, no lost index
entry, no overwritten state, artifact or segment) rest on the service
refusing, with ``412 Precondition Failed``, a ``PUT`` with ``If-None-Match: *``
of an existing key and a ``PUT`` with a stale ``If-Match``. AWS S3 does; some
S3-compatible servers (the ``s3rver`` emulator, older MinIO, some Ceph
gateways) accept both and overwrite silently.

So before the first write to a store, the backend asks :class:`ConditionalWrites`
for a :class:`Verdict`, which comes from, in this order:

1. this process's cache, per endpoint and bucket;
2. the verdict recorded under the store prefix, ``.runstore/conditional-writes.json``,
   if it names the same endpoint and is younger than ``probe_interval``
   (default 24 hours; a record dated in the future counts as stale);
3. a probe (:meth:`~runstore_fsspec._s3.S3Objects.probe_conditional_writes`),
   whose verdict is then recorded there and cached.

On an endpoint that fails the probe the backend declares
``conditional_create=False`` and ``compare_and_swap=False``, checks each
conditional write itself inside the process and writes only under the
single-writer lease; it logs one warning per endpoint and bucket and process.
With ``require=multi_writer`` it refuses to write instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import orjson

from runstore.model.errors import NotFoundError, RunstoreError, UnsupportedError
from runstore.spi.layout import BOOKKEEPING_DIR
from runstore_fsspec._s3 import S3Objects

__all__ = [
    "DEFAULT_PROBE_INTERVAL",
    "VERDICT_KEY",
    "ConditionalWrites",
    "Verdict",
    "cached_verdict",
    "forget_verdicts",
]

_log = logging.getLogger("runstore_fsspec")

VERDICT_KEY: Final = f"{BOOKKEEPING_DIR}/conditional-writes.json"
DEFAULT_PROBE_INTERVAL: Final = 24 * 3600.0
_VERSION: Final = 1


@dataclass(frozen=True)
class Verdict:
    """Whether an endpoint honours ``If-None-Match: *`` and ``If-Match``.

    :ivar honoured: both are enforced with ``412``.
    :ivar endpoint: the S3 endpoint the probe talked to.
    :ivar bucket: the bucket it wrote its sentinel in.
    :ivar checked_at: when the probe ran (UTC).
    :ivar reason: for a failed probe, what the service did wrong.
    :ivar source: ``probe`` (run by this process), ``recorded`` (read from the
        store prefix) or ``cached`` (this process probed the endpoint and bucket before).
    :ivar headers_rejected: the service answered the headers with an error
        (so they are not sent at all), rather than ignoring them.
    """

    honoured: bool
    endpoint: str
    bucket: str
    checked_at: datetime
    reason: str | None = None
    source: Literal["probe", "recorded", "cached"] = "probe"
    headers_rejected: bool = False

    def describe(self) -> str:
        if self.honoured:
            return f"{self.endpoint} honours If-None-Match and If-Match (412s seen)"
        return f"{self.endpoint} does not honour conditional writes: {self.reason}"

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": _VERSION,
                "honoured": self.honoured,
                "endpoint": self.endpoint,
                "bucket": self.bucket,
                "checked_at": self.checked_at.isoformat(),
                "reason": self.reason,
                "headers_rejected": self.headers_rejected,
                "checked_by": {"host": socket.gethostname(), "pid": os.getpid()},
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Verdict | None:
        """The recorded verdict, or ``None`` for a record this version cannot trust."""
        try:
            raw: Any = orjson.loads(data)
            if not isinstance(raw, dict) or raw.get("version") != _VERSION:
                return None
            checked_at = datetime.fromisoformat(raw["checked_at"])
            if checked_at.tzinfo is None or not isinstance(raw["honoured"], bool):
                return None
            return cls(
                honoured=raw["honoured"],
                endpoint=str(raw["endpoint"]),
                bucket=str(raw["bucket"]),
                checked_at=checked_at,
                reason=raw.get("reason"),
                source="recorded",
                headers_rejected=bool(raw.get("headers_rejected")),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


# This process's verdicts, per (endpoint, bucket); and which of them were announced.
_verdicts: dict[tuple[str, str], Verdict] = {}
_announced: set[tuple[str, str]] = set()
_guard = threading.Lock()


def _fresh(verdict: Verdict, interval: float, now: datetime) -> bool:
    age = now - verdict.checked_at
    return timedelta(0) <= age <= timedelta(seconds=interval)


def cached_verdict(endpoint: str, bucket: str, interval: float) -> Verdict | None:
    """This process's fresh verdict for ``endpoint`` and ``bucket``, if it has one."""
    with _guard:
        verdict = _verdicts.get((endpoint, bucket))
    if verdict is None or not _fresh(verdict, interval, datetime.now(UTC)):
        return None
    return verdict


def forget_verdicts() -> None:
    """Drop this process's cached verdicts (tests; a server upgraded in place)."""
    with _guard:
        _verdicts.clear()
        _announced.clear()


def _remember(verdict: Verdict) -> None:
    with _guard:
        _verdicts[(verdict.endpoint, verdict.bucket)] = verdict


class ConditionalWrites:
    """The verdict for one store's endpoint, obtained once (see the module docstring)."""

    def __init__(
        self,
        objects: S3Objects,
        *,
        interval: float = DEFAULT_PROBE_INTERVAL,
        require_multi_writer: bool = False,
    ) -> None:
        self.objects = objects
        self.interval = interval
        self.require_multi_writer = require_multi_writer
        self.verdict: Verdict | None = cached_verdict(objects.endpoint, objects.bucket, interval)
        self._lock: asyncio.Lock | None = None

    async def check(self) -> Verdict:
        """The verdict: cached, recorded under the prefix, or probed now."""
        if self.verdict is not None:
            return self.verdict
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.verdict is None:
                self.verdict = await self._obtain()
        return self.verdict

    async def probe(self) -> Verdict:
        """Probe the endpoint now, record and cache the verdict (whatever is known)."""
        reason = await self.objects.probe_conditional_writes()
        verdict = Verdict(
            honoured=reason is None,
            endpoint=self.objects.endpoint,
            bucket=self.objects.bucket,
            checked_at=datetime.now(UTC),
            reason=reason,
            headers_rejected=bool(reason and reason.startswith("the service refuses")),
        )
        try:
            await self.objects.put(VERDICT_KEY, verdict.to_json())
        except RunstoreError as exc:  # a cache for other processes: the verdict stands
            _log.warning("runstore-fsspec: could not record %s: %s", VERDICT_KEY, exc)
        _remember(verdict)
        return verdict

    async def _obtain(self) -> Verdict:
        cached = cached_verdict(self.objects.endpoint, self.objects.bucket, self.interval)
        if cached is not None:
            return Verdict(**{**cached.__dict__, "source": "cached"})
        recorded = await self._recorded()
        if recorded is not None:
            _remember(recorded)
            return recorded
        return await self.probe()

    async def _recorded(self) -> Verdict | None:
        try:
            data, _ = await self.objects.get(VERDICT_KEY)
        except NotFoundError:
            return None
        verdict = Verdict.from_json(data)
        if (
            verdict is None
            or verdict.endpoint != self.objects.endpoint
            or verdict.bucket != self.objects.bucket
            or not _fresh(verdict, self.interval, datetime.now(UTC))
        ):
            return None
        return verdict

    def refusal(self, verdict: Verdict) -> UnsupportedError:
        """The error of a store opened with ``require=multi_writer`` on a failed endpoint."""
        return UnsupportedError(
            f"{self.objects.url}: {verdict.describe()}; the store was opened with "
            "require=multi_writer, so runstore refuses to write to it. Use an S3 service that "
            "enforces If-None-Match/If-Match (AWS S3, a current MinIO), or drop "
            "require=multi_writer to write from one process at a time under the writer lease",
            details={
                "url": self.objects.url,
                "endpoint": verdict.endpoint,
                "reason": verdict.reason,
                "verdict": VERDICT_KEY,
            },
        )

    def announce(self, verdict: Verdict) -> None:
        """Say once per process, endpoint and bucket that the store runs single-writer."""
        key = (verdict.endpoint, verdict.bucket)
        with _guard:
            if key in _announced:
                return
            _announced.add(key)
        _log.warning(
            "runstore-fsspec: %s; %s is written by one process at a time (writer lease), "
            "with conditional_create and compare_and_swap off",
            verdict.describe(),
            f"s3://{verdict.bucket}",
        )
