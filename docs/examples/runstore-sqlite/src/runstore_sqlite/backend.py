"""State, logs and artifacts of every run in one SQLite file.

Four tables: ``runs`` (manifest, state, summary and index record as JSON, one
row per run), ``streams`` (which streams a run has), ``lines`` (stream bytes,
one row per append, keyed by its byte offset in the stream) and
``artifacts`` (content and sha256, one row per artifact).

SQLite does the hard parts: a primary key makes run ids and artifact names
create-only, ``UPDATE ... WHERE revision = ?`` is the compare-and-swap, and
each append is one transaction, so a record is either stored whole or not at
all (no torn lines). In WAL mode with ``synchronous=NORMAL`` a committed
append survives the writer's crash but not a power cut: the ``flush``
durability policy.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runstore.spi import (
    AlreadyExistsError,
    ArtifactBackend,
    ArtifactSource,
    Capabilities,
    ConflictError,
    Durability,
    InvalidInputError,
    LogBackend,
    NotFoundError,
    RunManifest,
    RunQuery,
    RunRecord,
    RunState,
    RunSummary,
    StateBackend,
    StorageIOError,
    StoredArtifact,
    StreamWriter,
    Target,
    UnsupportedError,
)

__all__ = ["SQLiteBackend"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id   TEXT PRIMARY KEY,
    manifest TEXT NOT NULL,
    state    TEXT NOT NULL,
    revision INTEGER NOT NULL,
    summary  TEXT,
    record   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS streams (
    run_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    PRIMARY KEY (run_id, stream)
);
CREATE TABLE IF NOT EXISTS lines (
    run_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    start  INTEGER NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (run_id, stream, start)
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id TEXT NOT NULL,
    name   TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""
_PAGE = 1000  # stream rows per read
_CHUNK = 1 << 20


class SQLiteBackend(StateBackend, LogBackend, ArtifactBackend):
    """All three concerns in one SQLite file (``sqlite:///path/to/runs.db``)."""

    # SQLite's locks make every guarantee hold across the processes of one host
    # (not over a network file system)
    capabilities = Capabilities(multi_host=False)

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()  # the sync API appends from the caller's thread
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StorageIOError(
                f"cannot open the SQLite store {path!r}: {exc}", details={"path": path}
            ) from exc

    @classmethod
    def from_target(cls, target: Target) -> SQLiteBackend:
        if target.options:
            raise InvalidInputError(
                f"the sqlite backend takes no options, got {sorted(target.options)}",
                details={"options": sorted(target.options)},
            )
        if not target.path:
            raise InvalidInputError(
                f"no database file in {target.url!r}: use sqlite:///path/to/runs.db",
                details={"url": target.url},
            )
        return cls(target.path)

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _sql(self, *, transaction: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection, alone (and in one write transaction if asked)."""
        with self._lock:
            try:
                if transaction:
                    self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    if transaction:
                        self._db.execute("ROLLBACK")
                    raise
                if transaction:
                    self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StorageIOError(
                    f"SQLite error on {self.path!r}: {exc}", details={"path": self.path}
                ) from exc

    def _column(self, run_id: str, column: str) -> Any:
        with self._sql() as db:
            row = db.execute(f"SELECT {column} FROM runs WHERE run_id = ?", (run_id,)).fetchone()  # noqa: S608 - a fixed column name
        if row is None:
            raise NotFoundError(f"run {run_id!r} not found", details={"run_id": run_id})
        return row[0]

    # -- state ----------------------------------------------------------------------

    async def create_run(self, manifest: RunManifest, state: RunState) -> None:
        record = RunRecord.build(manifest, state)
        with self._sql() as db:
            inserted = db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, NULL, ?) ON CONFLICT DO NOTHING",
                (
                    manifest.run_id,
                    manifest.model_dump_json(),
                    state.model_dump_json(),
                    state.revision,
                    record.model_dump_json(),
                ),
            ).rowcount
        if not inserted:
            raise AlreadyExistsError(
                f"run {manifest.run_id!r} already exists; pick another run id",
                details={"run_id": manifest.run_id},
            )

    async def read_manifest(self, run_id: str) -> RunManifest:
        return RunManifest.model_validate_json(self._column(run_id, "manifest"))

    async def read_state(self, run_id: str) -> RunState:
        return RunState.model_validate_json(self._column(run_id, "state"))

    async def write_state(
        self, state: RunState, *, expected_revision: int, record: RunRecord
    ) -> None:
        with self._sql() as db:
            updated = db.execute(
                "UPDATE runs SET state = ?, revision = ?, record = ? "
                "WHERE run_id = ? AND revision = ?",
                (
                    state.model_dump_json(),
                    state.revision,
                    record.model_dump_json(),
                    state.run_id,
                    expected_revision,
                ),
            ).rowcount
        if not updated:
            stored = self._column(state.run_id, "revision")  # NotFoundError if there is no run
            raise ConflictError(
                f"state of run {state.run_id!r} is at revision {stored}, not "
                f"{expected_revision}: another writer updated it; re-read and retry",
                details={"run_id": state.run_id, "stored": stored, "expected": expected_revision},
            )

    async def write_summary(self, summary: RunSummary) -> None:
        with self._sql() as db:
            updated = db.execute(
                "UPDATE runs SET summary = ? WHERE run_id = ?",
                (summary.model_dump_json(), summary.run_id),
            ).rowcount
        if not updated:
            raise NotFoundError(
                f"run {summary.run_id!r} not found", details={"run_id": summary.run_id}
            )

    async def read_summary(self, run_id: str) -> RunSummary | None:
        stored = self._column(run_id, "summary")
        return None if stored is None else RunSummary.model_validate_json(stored)

    async def list_runs(self, query: RunQuery) -> Sequence[RunRecord]:
        with self._sql() as db:
            rows = db.execute("SELECT record FROM runs").fetchall()
        return query.apply([RunRecord.model_validate_json(row[0]) for row in rows])

    async def list_run_ids(self, prefix: str = "") -> list[str]:
        with self._sql() as db:
            rows = db.execute("SELECT run_id FROM runs").fetchall()
        return [row[0] for row in rows if row[0].startswith(prefix)]

    async def delete_run(self, run_id: str) -> None:
        with self._sql(transaction=True) as db:
            for table in ("runs", "streams", "lines", "artifacts"):
                db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))  # noqa: S608

    # -- logs -----------------------------------------------------------------------

    async def open_writer(
        self, run_id: str, stream: str, *, durability: Durability | None = None
    ) -> StreamWriter:
        if durability not in (None, "flush"):
            raise UnsupportedError(
                f"the sqlite backend has no durability {durability!r}; it offers 'flush'",
                details={"durability": durability},
            )
        with self._sql() as db:
            db.execute("INSERT OR IGNORE INTO streams VALUES (?, ?)", (run_id, stream))
        return _Writer(self, run_id, stream)

    def append_lines(self, run_id: str, stream: str, data: bytes) -> None:
        with self._sql() as db:
            # One statement: the new row starts where the stream ends, even with
            # another process appending at the same moment.
            db.execute(
                "INSERT INTO lines SELECT ?, ?, COALESCE(MAX(start + length(data)), 0), ? "
                "FROM lines WHERE run_id = ? AND stream = ?",
                (run_id, stream, data, run_id, stream),
            )

    async def read_bytes(self, run_id: str, stream: str, offset: int = 0) -> AsyncIterator[bytes]:
        while True:
            with self._sql() as db:
                rows = db.execute(
                    "SELECT start, data FROM lines WHERE run_id = ? AND stream = ? "
                    "AND start + length(data) > ? ORDER BY start LIMIT ?",
                    (run_id, stream, offset, _PAGE),
                ).fetchall()
            if not rows:
                return
            first_start, first = rows[0]
            rows[0] = (first_start, first[max(0, offset - first_start) :])
            yield b"".join(bytes(data) for _, data in rows)
            last_start, last = rows[-1]
            offset = max(offset, last_start + len(last))

    async def list_streams(self, run_id: str) -> list[str]:
        with self._sql() as db:
            rows = db.execute(
                "SELECT stream FROM streams WHERE run_id = ? ORDER BY stream", (run_id,)
            ).fetchall()
        return [row[0] for row in rows]

    # -- artifacts ------------------------------------------------------------------

    async def put(self, run_id: str, name: str, source: ArtifactSource) -> StoredArtifact:
        # Loaded whole: fine for requests and reports; route big exports elsewhere.
        data = source if isinstance(source, bytes) else b"".join([c async for c in source])
        sha256 = hashlib.sha256(data).hexdigest()
        parts = name.split("/")
        parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
        with self._sql(transaction=True) as db:
            row = db.execute(
                "SELECT sha256 FROM artifacts WHERE run_id = ? AND name = ?", (run_id, name)
            ).fetchone()
            if row is not None:
                if row[0] != sha256:
                    raise ConflictError(
                        f"artifact {name!r} of run {run_id!r} already exists with different "
                        "bytes; artifacts are immutable, store the new version under a new name",
                        details={"run_id": run_id, "name": name},
                    )
                return StoredArtifact(sha256=sha256, size=len(data), created=False)
            # As on a file system, "a" and "a/b" cannot both be artifacts.
            placeholders = ", ".join("?" * len(parents))
            clash = db.execute(
                f"SELECT name FROM artifacts WHERE run_id = ? AND (name IN ({placeholders}) "  # noqa: S608 - placeholders only
                "OR substr(name, 1, ?) = ?) LIMIT 1",
                (run_id, *parents, len(name) + 1, name + "/"),
            ).fetchone()
            if clash is not None:
                raise ConflictError(
                    f"artifact name {name!r} clashes with artifact {clash[0]!r}: "
                    "one cannot be a directory of the other",
                    details={"run_id": run_id, "name": name},
                )
            db.execute("INSERT INTO artifacts VALUES (?, ?, ?, ?)", (run_id, name, sha256, data))
        return StoredArtifact(sha256=sha256, size=len(data), created=True)

    async def read_chunks(self, run_id: str, name: str) -> AsyncIterator[bytes]:
        with self._sql() as db:
            row = db.execute(
                "SELECT data FROM artifacts WHERE run_id = ? AND name = ?", (run_id, name)
            ).fetchone()
        if row is None:
            raise NotFoundError(
                f"artifact {name!r} not found in run {run_id!r}",
                details={"run_id": run_id, "name": name},
            )
        data = bytes(row[0])
        for start in range(0, len(data), _CHUNK):
            yield data[start : start + _CHUNK]


class _Writer(StreamWriter):
    """Appends to one stream; every write is its own committed transaction."""

    durability: Durability = "flush"

    def __init__(self, backend: SQLiteBackend, run_id: str, stream: str) -> None:
        self._backend = backend
        self._run_id = run_id
        self._stream = stream
        self._closed = False

    def write(self, data: bytes) -> bool:
        if self._closed:
            raise UnsupportedError("stream writer is closed; open a new one")
        self._backend.append_lines(self._run_id, self._stream, data)
        return True  # committed: nothing left for commit() to do

    async def commit(self) -> None:
        return None

    def commit_sync(self) -> bool:
        return True

    async def close(self) -> None:
        self._closed = True
