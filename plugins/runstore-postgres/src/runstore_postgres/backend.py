"""The PostgreSQL backend: state, run index, streams and artifacts in one schema.

Tables (``migrations/0001_initial.sql``): ``runs`` (documents and the index
columns), ``run_id_counters``, ``streams`` and ``stream_records`` (one row a
record), ``artifacts`` and ``artifact_chunks``. Every operation is one
statement or one transaction on a connection of a psycopg async pool; the
first use of a store creates or upgrades its schema (:mod:`~._migrate`).

A stream has one writer at a time: opening one takes a session advisory lock
(on one connection per backend, released when the writer closes or its
process dies) and bumps the stream's epoch, the fencing token its commits
are checked against.

Followers are woken by LISTEN/NOTIFY (:mod:`~._listen`): each commit of a
stream, and the state write that ends a run, notifies from its transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import TypeAdapter, ValidationError

from runstore.model.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptError,
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
)
from runstore.model.run import TERMINAL_STATUSES, RunManifest, RunRecord, RunState, RunSummary
from runstore.model.selection import Page, decode_page_token, encode_page_token, paginate
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
from runstore_postgres import _query
from runstore_postgres._errors import translating
from runstore_postgres._listen import Listener, channel_of, payload_of
from runstore_postgres._migrate import migrate
from runstore_postgres._streams import BatchPolicy, PostgresStreamWriter

__all__ = ["DEFAULT_SCHEMA", "PostgresBackend"]

DEFAULT_SCHEMA: Final = "runstore"
_SCHEMA: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_CHUNK: Final = 1 << 20
_READ_ROWS: Final = 4096
_INT64: Final = range(-(2**63), 2**63)
_RECORDS = TypeAdapter(list[RunRecord])


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise ValueError(value)


_OPTIONS: Final[dict[str, Callable[[Any], Any]]] = {
    "schema": str,
    "pool_min_size": int,
    "pool_max_size": int,
    "connect_timeout": int,
    "batch_interval": float,
    "batch_records": int,
    "batch_bytes": int,
    "notify": _flag,
}

_Conn = psycopg.AsyncConnection[TupleRow]


def _key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key for ``parts``."""
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list | tuple):
        return any(map(_has_nul, value))
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


def _index_columns(record: RunRecord) -> dict[str, Any]:
    """The ``runs`` columns queries use, from the index record.

    What PostgreSQL cannot hold exactly (text with NUL, an integer outside 64
    bits) is left out and the row marked ``inexact``.
    """
    inexact = False

    def number(value: int | None) -> int | None:
        nonlocal inexact
        if value is None or value in _INT64:
            return value
        inexact = True
        return None

    sut_name = record.sut_name
    if _has_nul(sut_name):
        inexact, sut_name = True, None
    metadata: dict[str, Any] = dict(record.metadata)
    tags = list(dict.fromkeys(record.tags))
    if _has_nul(metadata) or _has_nul(tags):
        inexact, metadata, tags = True, {}, []
    rate = record.pass_rate
    return {
        "status": record.status,
        "sut_name": sut_name,
        "created_at": _utc(record.created_at),
        "updated_at": _utc(record.updated_at),
        "finished_at": _utc(record.finished_at),
        "instance_count": number(record.instance_count),
        "pass_count": number(record.pass_count),
        "fail_count": number(record.fail_count),
        "error_count": number(record.error_count),
        "skip_count": number(record.skip_count),
        "pass_rate": rate if rate is not None and math.isfinite(rate) else None,
        "duration_ms": number(record.duration_ms),
        "tags": tags,
        "metadata": Jsonb(metadata),
        "metrics": Jsonb({k: v for k, v in record.metrics.items() if math.isfinite(v)}),
        "inexact": inexact,
        "record": record.model_dump_json().encode(),
    }


def _options(target: Target) -> tuple[str, dict[str, Any]]:
    """The libpq connection string and runstore's own options, checked (no I/O)."""
    ours: dict[str, Any] = {}
    libpq: dict[str, Any] = {}
    for name, value in target.options.items():
        if name in _OPTIONS:
            try:
                ours[name] = _OPTIONS[name](value)
            except (TypeError, ValueError):
                raise InvalidInputError(
                    f"option {name}={value!r} of the postgres backend must be "
                    f"{'true or false' if name == 'notify' else _OPTIONS[name].__name__}",
                    details={"option": name},
                ) from None
        else:
            libpq[name] = str(value)
    schema = ours.get("schema", DEFAULT_SCHEMA)
    if not _SCHEMA.fullmatch(schema):
        raise InvalidInputError(
            f"invalid schema {schema!r}: 1-63 characters of a-z 0-9 _, not starting with a digit",
            details={"schema": schema},
        )
    for name in ("pool_min_size", "pool_max_size", "connect_timeout", "batch_records"):
        if name in ours and ours[name] < 1:
            raise InvalidInputError(f"option {name} must be at least 1", details={"option": name})
    try:
        conninfo = make_conninfo(target.url, **libpq)
        conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise InvalidInputError(
            f"invalid PostgreSQL URL or option: {exc}; runstore's own options are "
            f"{', '.join(sorted(_OPTIONS))}, the rest go to libpq",
            details={"options": sorted(libpq)},
        ) from None
    return conninfo, ours


class PostgresBackend(StateBackend, LogBackend, ArtifactBackend):
    """State, logs and artifacts in a PostgreSQL database (one schema a store)."""

    capabilities = Capabilities()

    def __init__(self, conninfo: str, **options: Any) -> None:
        self._conninfo = conninfo
        self.schema: str = options.get("schema", DEFAULT_SCHEMA)
        self._min = int(options.get("pool_min_size", 1))
        self._max = max(self._min, int(options.get("pool_max_size", 4)))
        self._timeout = float(options.get("connect_timeout", 10))
        self._policy = BatchPolicy(
            records=int(options.get("batch_records", BatchPolicy.records)),
            bytes=int(options.get("batch_bytes", BatchPolicy.bytes)),
            interval=float(options.get("batch_interval", BatchPolicy.interval)),
        )
        self._pool: AsyncConnectionPool[_Conn] | None = None
        self._opening: asyncio.Lock | None = None
        self._lock_conn: _Conn | None = None
        self._lock_guard: asyncio.Lock | None = None
        self._held: set[int] = set()
        self.notify = bool(options.get("notify", True))
        """Writers NOTIFY their commits and followers LISTEN (else followers poll)."""
        self._channel = channel_of(self.schema)
        self._listener: Listener | None = None
        params = conninfo_to_dict(conninfo)
        self._where = f"{params.get('host') or 'localhost'}/{params.get('dbname') or ''}"

    @classmethod
    def from_target(cls, target: Target) -> PostgresBackend:
        conninfo, options = _options(target)
        return cls(conninfo, **options)

    def __repr__(self) -> str:
        return f"PostgresBackend({self._where!r}, schema={self.schema!r})"

    # -- connections ------------------------------------------------------------

    async def _configure(self, conn: _Conn) -> None:
        await conn.execute(
            sql.SQL("SET search_path TO {}; SET TIME ZONE 'UTC'").format(
                sql.Identifier(self.schema)
            )
        )

    async def _open_pool(self) -> AsyncConnectionPool[_Conn]:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is not None:  # opened by another task meanwhile
                return self._pool  # type: ignore[unreachable]
            with translating(f"cannot open the PostgreSQL store {self._where}"):
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=int(self._timeout)
                )
                async with conn:
                    await migrate(conn, self.schema)
            pool: AsyncConnectionPool[_Conn] = AsyncConnectionPool(
                self._conninfo,
                min_size=self._min,
                max_size=self._max,
                kwargs={"autocommit": True},
                configure=self._configure,
                check=AsyncConnectionPool.check_connection,
                timeout=self._timeout,
                name=f"runstore-{self.schema}",
                open=False,
            )
            with translating(f"cannot open the PostgreSQL store {self._where}"):
                await pool.open(wait=False)
            self._pool = pool
            return pool

    @asynccontextmanager
    async def _conn(self, what: str, **details: Any) -> AsyncIterator[_Conn]:
        """A pooled connection (autocommit), errors translated."""
        pool = await self._open_pool()
        with translating(what, **details):
            async with pool.connection() as conn:
                yield conn

    async def aclose(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await listener.aclose()
        if self._lock_conn is not None:
            conn, self._lock_conn = self._lock_conn, None
            try:
                await conn.close()
            except psycopg.Error:
                pass
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    # -- state ----------------------------------------------------------------

    async def create_run(self, manifest: RunManifest, state: RunState) -> None:
        run_id = manifest.run_id
        columns = _index_columns(RunRecord.build(manifest, state))
        columns.update(
            run_id=run_id,
            revision=state.revision,
            manifest=manifest.model_dump_json().encode(),
            state=state.model_dump_json().encode(),
        )
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        values = sql.SQL(", ").join(map(sql.Placeholder, columns))
        statement = sql.SQL("INSERT INTO runs ({}) VALUES ({})").format(names, values)
        async with self._conn(f"cannot create run {run_id!r}", run_id=run_id) as conn:
            try:
                await conn.execute(statement, columns)
            except psycopg.errors.UniqueViolation:
                raise AlreadyExistsError(
                    f"run {run_id!r} already exists in {self._where} (schema {self.schema}); "
                    "pick another run id",
                    details={"run_id": run_id},
                ) from None

    async def _document(self, run_id: str, column: str) -> bytes | None:
        """``column`` of the run's row; raises NotFoundError for an unknown run."""
        query = sql.SQL("SELECT {} FROM runs WHERE run_id = %s").format(sql.Identifier(column))
        async with self._conn(f"cannot read run {run_id!r}", run_id=run_id) as conn:
            cur = await conn.execute(query, (run_id,))
            row = await cur.fetchone()
        if row is None:
            raise NotFoundError(
                f"run {run_id!r} not found in {self._where}; 'runstore ls' lists the runs",
                details={"run_id": run_id},
            )
        return None if row[0] is None else bytes(row[0])

    @staticmethod
    def _parse(data: bytes, model: type[Any], run_id: str, what: str) -> Any:
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            raise CorruptError(
                f"the {what} of run {run_id!r} is damaged ({exc.error_count()} problems)",
                details={"run_id": run_id, "document": what},
            ) from None

    async def read_manifest(self, run_id: str) -> RunManifest:
        data = await self._document(run_id, "manifest")
        assert data is not None  # NOT NULL
        manifest: RunManifest = self._parse(data, RunManifest, run_id, "manifest")
        return manifest

    async def read_state(self, run_id: str) -> RunState:
        data = await self._document(run_id, "state")
        assert data is not None  # NOT NULL
        state: RunState = self._parse(data, RunState, run_id, "state")
        return state

    async def write_state(
        self, state: RunState, *, expected_revision: int, record: RunRecord
    ) -> None:
        run_id = state.run_id
        columns = _index_columns(record)
        columns.update(revision=state.revision, state=state.model_dump_json().encode())
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name))
            for name in columns
        )
        statement = sql.SQL(
            "UPDATE runs SET {} WHERE run_id = %(run_id)s AND revision = %(expected)s"
        ).format(assignments)
        if self.notify and state.status in TERMINAL_STATUSES:
            # The run ended: its followers drain once more and stop.
            statement += sql.SQL(" RETURNING pg_notify(%(channel)s, %(run_id)s)")
        what = f"cannot write the state of run {run_id!r}"
        async with self._conn(what, run_id=run_id) as conn:
            cur = await conn.execute(
                statement,
                {
                    **columns,
                    "run_id": run_id,
                    "expected": expected_revision,
                    "channel": self._channel,
                },
            )
            if cur.rowcount == 1:
                return
            cur = await conn.execute("SELECT revision FROM runs WHERE run_id = %s", (run_id,))
            row = await cur.fetchone()
        if row is None:
            raise NotFoundError(f"run {run_id!r} not found", details={"run_id": run_id})
        raise ConflictError(
            f"state of run {run_id!r} is at revision {row[0]}, not {expected_revision}: "
            "another writer updated it; re-read and retry",
            details={"run_id": run_id, "stored": row[0], "expected": expected_revision},
        )

    async def write_summary(self, summary: RunSummary) -> None:
        run_id = summary.run_id
        what = f"cannot write the summary of run {run_id!r}"
        async with self._conn(what, run_id=run_id) as conn:
            cur = await conn.execute(
                "UPDATE runs SET summary = %s WHERE run_id = %s",
                (summary.model_dump_json().encode(), run_id),
            )
        if cur.rowcount != 1:
            raise NotFoundError(f"run {run_id!r} not found", details={"run_id": run_id})

    async def read_summary(self, run_id: str) -> RunSummary | None:
        data = await self._document(run_id, "summary")
        if data is None:
            return None
        summary: RunSummary = self._parse(data, RunSummary, run_id, "summary")
        return summary

    async def list_runs(self, query: RunQuery) -> Sequence[RunRecord]:
        async with self._conn("cannot list runs") as conn:
            cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM runs WHERE inexact)")
            row = await cur.fetchone()
            exact = not (row and row[0])
            plan = _plan(query, pushdown=exact and not _query.has_ilike(query.where))
            if plan is None:  # a filter value PostgreSQL text cannot carry
                plan = _plan(query, pushdown=False, classic=False)
                assert plan is not None
            text, params, pushed, paged = plan
            cur = await conn.execute(text, params)
            rows = await cur.fetchall()
        records = _records(rows)
        if not pushed:
            return query.apply(records)
        if not paged:
            return paginate(
                records,
                query.order_by,
                fingerprint=query.fingerprint,
                limit=query.limit,
                offset=query.offset,
                page_token=query.page_token,
            )
        limit = query.limit
        page = Page(records if limit is None else records[:limit])
        if limit is not None and len(records) > limit and page:  # one more row: a next page
            page.next_page_token = encode_page_token(page[-1], query.order_by, query.fingerprint)
        return page

    async def explain(self, query: RunQuery, *, without_scans: bool = False) -> list[str]:
        """PostgreSQL's plan of the statement that answers ``query`` (one line a step);
        ``without_scans`` shows the plan the indexes allow (``enable_seqscan`` off)."""
        plan = _plan(query, pushdown=not _query.has_ilike(query.where))
        if plan is None:
            return []
        async with self._conn("cannot explain a query") as conn, conn.transaction():
            if without_scans:
                await conn.execute("SET LOCAL enable_seqscan = off")
            cur = await conn.execute(("EXPLAIN " + plan[0]).encode(), plan[1])
            return [str(row[0]) for row in await cur.fetchall()]

    async def list_run_ids(self, prefix: str = "") -> list[str]:
        async with self._conn("cannot list run ids") as conn:
            cur = await conn.execute(
                "SELECT run_id FROM runs WHERE starts_with(run_id, %s)",
                (prefix.replace("\x00", ""),),
            )
            return [str(row[0]) for row in await cur.fetchall()]

    async def highest_run_number(self, prefix: str) -> int:
        async with self._conn("cannot generate a run id") as conn:
            cur = await conn.execute(
                "SELECT highest FROM run_id_counters WHERE prefix = %s", (prefix,)
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def rebuild_index(self) -> int:
        async with self._conn("cannot count runs") as conn:
            cur = await conn.execute("SELECT count(*) FROM runs")
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def delete_run(self, run_id: str) -> None:
        what = f"cannot delete run {run_id!r}"
        async with self._conn(what, run_id=run_id) as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM stream_records WHERE stream_id IN "
                "(SELECT stream_id FROM streams WHERE run_id = %s)",
                (run_id,),
            )
            for table in ("streams", "artifacts", "runs"):
                await conn.execute(
                    sql.SQL("DELETE FROM {} WHERE run_id = %s").format(sql.Identifier(table)),
                    (run_id,),
                )

    # -- logs -----------------------------------------------------------------

    async def _lock(self, key: int, *, release: bool = False) -> bool:
        """Take (or release) session advisory lock ``key`` on the lock connection."""
        if self._lock_guard is None:
            self._lock_guard = asyncio.Lock()
        async with self._lock_guard:
            if self._lock_conn is None or self._lock_conn.broken:
                if release:
                    return True  # the connection, and its locks, are gone already
                self._held.clear()
                self._lock_conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=int(self._timeout)
                )
            function = "pg_advisory_unlock" if release else "pg_try_advisory_lock"
            cur = await self._lock_conn.execute(
                sql.SQL("SELECT {}(%s)").format(sql.Identifier(function)), (key,)
            )
            row = await cur.fetchone()
            if release:
                self._held.discard(key)
            elif row and row[0]:
                self._held.add(key)
            return bool(row and row[0])

    async def open_writer(
        self, run_id: str, stream: str, *, durability: Durability | None = None
    ) -> StreamWriter:
        durability = durability or "record"
        if durability not in ("record", "batch"):
            raise UnsupportedError(
                f"the postgres backend offers durability 'record' (a commit per append) or "
                f"'batch' (group commit), not {durability!r}",
                details={"durability": durability},
            )
        await self._open_pool()
        key = _key(self.schema, "stream", run_id, stream)
        what = f"cannot open stream {stream!r} of run {run_id!r}"
        with translating(what, run_id=run_id, stream=stream):
            if key in self._held or not await self._lock(key):
                raise ConflictError(
                    f"stream {stream!r} of run {run_id!r} is being written by another writer; "
                    "one writer per run",
                    details={"run_id": run_id, "stream": stream},
                )
        try:
            async with self._conn(what, run_id=run_id, stream=stream) as conn:
                cur = await conn.execute(
                    "INSERT INTO streams AS s (run_id, name) VALUES (%s, %s) "
                    "ON CONFLICT (run_id, name) DO UPDATE SET epoch = s.epoch + 1 "
                    "RETURNING stream_id, epoch, size",
                    (run_id, stream),
                )
                row = await cur.fetchone()
                assert row is not None
        except BaseException:
            await self._unlock(key)
            raise
        stream_id, epoch, size = int(row[0]), int(row[1]), int(row[2])

        async def commit(expected: int, lines: list[bytes]) -> None:
            await self._append(
                run_id=run_id,
                stream=stream,
                stream_id=stream_id,
                epoch=epoch,
                expected=expected,
                lines=lines,
            )

        async def release() -> None:
            await self._unlock(key)

        return PostgresStreamWriter(
            commit,
            release,
            size=size,
            durability=durability,
            policy=self._policy,
            loop=asyncio.get_running_loop(),
        )

    async def _unlock(self, key: int) -> None:
        try:
            await self._lock(key, release=True)
        except psycopg.Error:
            self._held.discard(key)  # the lock dies with its connection

    async def _append(
        self,
        *,
        run_id: str,
        stream: str,
        stream_id: int,
        epoch: int,
        expected: int,
        lines: list[bytes],
    ) -> None:
        ends, total = [], 0
        for line in lines:
            total += len(line)
            ends.append(total)
        params = {
            "id": stream_id,
            "epoch": epoch,
            "size": expected,
            "bytes": total,
            "n": len(lines),
            "ends": ends,
            "lines": lines,
            "channel": self._channel,
            "payload": payload_of(run_id, stream),
        }
        what = f"cannot append to stream {stream!r} of run {run_id!r}"
        async with self._conn(what, run_id=run_id, stream=stream) as conn:
            cur = await conn.execute(_APPEND_NOTIFY if self.notify else _APPEND, params)
            if cur.rowcount == len(lines):
                return
            # Nothing landed: another writer took the stream, it was deleted, or an
            # earlier attempt of this very commit landed before its answer was lost.
            cur = await conn.execute(
                "SELECT epoch, size FROM streams WHERE stream_id = %s", (stream_id,)
            )
            row = await cur.fetchone()
        if row is not None and row[0] == epoch and row[1] == expected + total:
            return
        raise ConflictError(
            f"stream {stream!r} of run {run_id!r} was taken over by another writer "
            "(or the run was deleted); these records were not stored",
            details={"run_id": run_id, "stream": stream},
        )

    async def read_bytes(self, run_id: str, stream: str, offset: int = 0) -> AsyncIterator[bytes]:
        what = f"cannot read stream {stream!r} of run {run_id!r}"
        async with self._conn(what, run_id=run_id, stream=stream) as conn:
            cur = await conn.execute(
                "SELECT stream_id FROM streams WHERE run_id = %s AND name = %s", (run_id, stream)
            )
            row = await cur.fetchone()
        if row is None:
            return
        stream_id = int(row[0])
        while True:
            async with self._conn(what, run_id=run_id, stream=stream) as conn:
                cur = await conn.execute(
                    "SELECT end_pos, line FROM stream_records WHERE stream_id = %s "
                    "AND end_pos > %s ORDER BY end_pos LIMIT %s",
                    (stream_id, offset, _READ_ROWS),
                )
                rows = await cur.fetchall()
            if not rows:
                return
            parts = []
            for end, line in rows:
                start = int(end) - len(line)
                parts.append(bytes(line)[offset - start :] if offset > start else bytes(line))
            offset = int(rows[-1][0])
            yield b"".join(parts)

    async def wait_for_append(self, run_id: str, stream: str, offset: int, timeout: float) -> None:
        """Until a commit of ``stream`` or the end of the run is notified, or ``timeout``."""
        if not self.notify:
            await asyncio.sleep(timeout)
            return
        if self._listener is None:
            self._listener = Listener(self._listening_connection, self._channel)
        what = f"cannot follow stream {stream!r} of run {run_id!r}"
        with translating(what, run_id=run_id, stream=stream):
            async with self._listener.registered(run_id, stream) as event:
                # Listening now: what landed since the follower's read is seen here.
                if await self._moved_on(run_id, stream, offset):
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout)

    async def _listening_connection(self) -> _Conn:
        await self._open_pool()  # the schema exists
        return await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, connect_timeout=int(self._timeout)
        )

    async def _moved_on(self, run_id: str, stream: str, offset: int) -> bool:
        """``stream`` holds bytes past ``offset``, or the run ended or is gone."""
        what = f"cannot follow stream {stream!r} of run {run_id!r}"
        async with self._conn(what, run_id=run_id, stream=stream) as conn:
            cur = await conn.execute(
                "SELECT (SELECT size FROM streams WHERE run_id = %(run)s AND name = %(stream)s), "
                "(SELECT status FROM runs WHERE run_id = %(run)s)",
                {"run": run_id, "stream": stream},
            )
            row = await cur.fetchone()
        assert row is not None
        size, status = row
        ended = status is None or status in TERMINAL_STATUSES
        return ended or (size is not None and int(size) > offset)

    async def list_streams(self, run_id: str) -> list[str]:
        async with self._conn(f"cannot list the streams of run {run_id!r}", run_id=run_id) as conn:
            cur = await conn.execute(
                "SELECT name FROM streams WHERE run_id = %s ORDER BY name", (run_id,)
            )
            return [str(row[0]) for row in await cur.fetchall()]

    async def stream_size(self, run_id: str, stream: str) -> int:
        async with self._conn(f"cannot size stream {stream!r}", run_id=run_id) as conn:
            cur = await conn.execute(
                "SELECT size FROM streams WHERE run_id = %s AND name = %s", (run_id, stream)
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def delete_stream(self, run_id: str, stream: str) -> None:
        async with self._conn(f"cannot delete stream {stream!r}", run_id=run_id) as conn:
            await conn.execute(
                "DELETE FROM streams WHERE run_id = %s AND name = %s", (run_id, stream)
            )

    # -- artifacts --------------------------------------------------------------

    async def put(self, run_id: str, name: str, source: ArtifactSource) -> StoredArtifact:
        what = f"cannot store artifact {name!r} of run {run_id!r}"
        async with self._conn(what, run_id=run_id, name=name) as conn, conn.transaction():
            # One artifact write of a run at a time: the name checks below stay true.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s)", (_key(self.schema, "artifacts", run_id),)
            )
            cur = await conn.execute(
                "SELECT sha256 FROM artifacts WHERE run_id = %s AND name = %s", (run_id, name)
            )
            existing = await cur.fetchone()
            if existing is not None:
                sha256, size = await _hash(source)
                if sha256 != existing[0]:
                    raise ConflictError(
                        f"artifact {name!r} of run {run_id!r} already exists with different "
                        "bytes; artifacts are immutable, store the new version under a new name",
                        details={"run_id": run_id, "name": name},
                    )
                return StoredArtifact(sha256=sha256, size=size, created=False)
            await _check_no_path_clash(conn, run_id, name)
            cur = await conn.execute(
                "INSERT INTO artifacts (run_id, name, sha256, size) VALUES (%s, %s, '', 0) "
                "RETURNING artifact_id",
                (run_id, name),
            )
            row = await cur.fetchone()
            assert row is not None
            artifact_id = int(row[0])
            digest, size, number = hashlib.sha256(), 0, 0
            async for chunk in _rechunk(source):
                digest.update(chunk)
                size += len(chunk)
                await conn.execute(
                    "INSERT INTO artifact_chunks (artifact_id, n, data) VALUES (%s, %s, %s)",
                    (artifact_id, number, chunk),
                )
                number += 1
            sha256 = digest.hexdigest()
            await conn.execute(
                "UPDATE artifacts SET sha256 = %s, size = %s WHERE artifact_id = %s",
                (sha256, size, artifact_id),
            )
        return StoredArtifact(sha256=sha256, size=size, created=True)

    async def read_chunks(self, run_id: str, name: str) -> AsyncIterator[bytes]:
        what = f"cannot read artifact {name!r} of run {run_id!r}"
        async with self._conn(what, run_id=run_id, name=name) as conn:
            cur = await conn.execute(
                "SELECT artifact_id FROM artifacts WHERE run_id = %s AND name = %s", (run_id, name)
            )
            row = await cur.fetchone()
        if row is None:
            raise NotFoundError(
                f"artifact {name!r} not found in run {run_id!r}",
                details={"run_id": run_id, "name": name},
            )
        artifact_id, number, sent = int(row[0]), 0, False
        while True:
            async with self._conn(what, run_id=run_id, name=name) as conn:
                cur = await conn.execute(
                    "SELECT data FROM artifact_chunks WHERE artifact_id = %s AND n = %s",
                    (artifact_id, number),
                )
                chunk = await cur.fetchone()
            if chunk is None:
                if not sent:
                    yield b""
                return
            sent = True
            number += 1
            yield bytes(chunk[0])


_APPEND_SQL: Final = """
WITH moved AS (
    UPDATE streams SET size = size + %(bytes)s, records = records + %(n)s
    WHERE stream_id = %(id)s AND epoch = %(epoch)s AND size = %(size)s
    RETURNING records - %(n)s AS first_seq{notify}
)
INSERT INTO stream_records (stream_id, seq, end_pos, line)
SELECT %(id)s, moved.first_seq + r.i - 1, %(size)s + r.e, r.line
FROM moved, unnest(%(ends)s::bigint[], %(lines)s::bytea[]) WITH ORDINALITY AS r (e, line, i)
"""
# The notification goes out with the commit, and only when the fenced UPDATE matched.
_APPEND_NOTIFY: Final = _APPEND_SQL.format(notify=", pg_notify(%(channel)s, %(payload)s)")
_APPEND: Final = _APPEND_SQL.format(notify="")


def _plan(
    query: RunQuery, *, pushdown: bool, classic: bool = True
) -> tuple[str, dict[str, object], bool, bool] | None:
    """``(sql, params, pushed, paged)``: ``pushed`` when ``where`` is in the SQL (else the
    reference filters), ``paged`` when the SQL also sorts and pages; ``None`` when a value
    cannot be bound (the caller then asks again without the filters)."""
    compiler = _query.Compiler()
    try:
        conditions = (
            compiler.classic(
                query.status, query.sut_name, query.tags, query.created_after, query.created_before
            )
            if classic
            else []
        )
        if query.where is not None and pushdown:
            conditions.append(compiler.where(query.where))
        order = compiler.order(query.order_by) if pushdown else None
        if order is not None and query.page_token is not None:
            cursor = decode_page_token(query.page_token, query.order_by, query.fingerprint)
            after = compiler.after(query.order_by, cursor)
            if after is None:
                order = None
            else:
                conditions.append(after)
    except _query.NotExpressible:
        return None
    text = _query.select(conditions, order, query.limit, query.offset)
    return text, compiler.params, pushdown, order is not None


def _records(rows: list[TupleRow]) -> list[RunRecord]:
    """The records whose JSON ``rows`` hold, validated in one call."""
    return _RECORDS.validate_json(b"[" + b",".join(bytes(row[0]) for row in rows) + b"]")


async def _hash(source: ArtifactSource) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    async for chunk in _rechunk(source):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


async def _rechunk(source: ArtifactSource) -> AsyncIterator[bytes]:
    """``source`` in pieces of exactly :data:`_CHUNK` bytes (the last one shorter)."""
    if isinstance(source, bytes):
        for start in range(0, len(source), _CHUNK):
            yield source[start : start + _CHUNK]
        return
    pending = bytearray()
    async for chunk in source:
        pending += chunk
        while len(pending) >= _CHUNK:
            yield bytes(pending[:_CHUNK])
            del pending[:_CHUNK]
    if pending:
        yield bytes(pending)


async def _check_no_path_clash(conn: _Conn, run_id: str, name: str) -> None:
    """A name may not be a directory of another artifact, nor have one as its directory
    (the reference refuses it, as file systems must)."""
    parts = name.split("/")
    parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
    cur = await conn.execute(
        "SELECT name FROM artifacts WHERE run_id = %s "
        "AND (name = ANY(%s) OR starts_with(name, %s)) LIMIT 1",
        (run_id, parents, name + "/"),
    )
    row = await cur.fetchone()
    if row is None:
        return
    clash = str(row[0])
    message = (
        f"artifact name {name!r} uses {clash!r} as a directory, but that is an artifact"
        if clash in parents
        else f"artifact name {name!r} is a directory of other artifacts"
    )
    raise ConflictError(message, details={"run_id": run_id, "name": name})
