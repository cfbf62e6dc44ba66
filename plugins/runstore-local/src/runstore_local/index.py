"""The run index: SQLite tables (WAL) under ``<root>/.runstore/index.sqlite3``.

Derived data: every row is rebuilt from the run directories by
:meth:`RunIndex.replace_all` (the backend's ``rebuild_index``), which also
happens when the file is new or holds another schema version
(:data:`~runstore_local.index_sql.SCHEMA_VERSION`). SQLite makes concurrent
creators in several processes safe and keeps an update and a filtered
listing independent of how many runs the store holds: ``where``,
``order_by`` on plain fields and page tokens are answered in SQL
(:mod:`runstore_local.index_sql`), a sort on ``metadata.*`` or ``metrics.*``
sorts the filtered rows in Python with the reference semantics.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import orjson
from pydantic import TypeAdapter

from runstore.model.errors import StorageIOError
from runstore.model.run import RunRecord
from runstore.model.selection import Page, decode_page_token, encode_page_token, paginate
from runstore.spi.backends import RunQuery
from runstore_local import index_sql
from runstore_local._errors import translating

_INSERTS = (
    "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "INSERT OR IGNORE INTO run_tags VALUES (?, ?)",
    "INSERT INTO run_metadata VALUES (?, ?, ?, ?, ?)",
    "INSERT INTO run_metrics VALUES (?, ?, ?)",
)
_SIDE_TABLES = ("run_tags", "run_metadata", "run_metrics")
_OPEN_TIMEOUT = 60.0
"""Seconds SQLite waits for another connection's lock (its busy timeout), and opening at most."""
_UPDATE = (  # every column of a runs row (run_rows order) but run_id and created_us
    "UPDATE runs SET status = ?2, sut_name = ?3, updated_us = ?5, finished_us = ?6, "
    "instance_count = ?7, pass_count = ?8, fail_count = ?9, error_count = ?10, "
    "skip_count = ?11, pass_rate = ?12, duration_ms = ?13, inexact = ?14, record = ?15 "
    "WHERE run_id = ?1 AND created_us = ?4"
)
_RECORDS = TypeAdapter(list[RunRecord])
# A walk of the runs in index order gives up after _WALK_BUDGET * _TICK SQLite
# virtual-machine steps: ~4 ms, ~20k runs looked up by one metadata equality.
_TICK = 1000
_WALK_BUDGET = 100


@dataclass(frozen=True)
class Folders:
    """What the run folders looked like when the index last matched them.

    :ivar root: the store directory's signature (``None``: not settled yet, so the
        next listing reconciles again).
    :ivar unindexed: ``(run_id, signature, code, message)`` of each run folder the
        index lacks: being copied in (``code`` ``None``) or damaged.
    """

    root: str | None
    unindexed: list[tuple[str, str, str | None, str | None]]


# -- connections kept open between stores of one process ------------------------
#
# Closing the last connection to a WAL database checkpoints it and deletes the
# WAL (an fsync of the database: ~2-12 ms here), and opening one costs ~2 ms: a
# caller that opens a store for each call paid both every time. A closed index
# parks its connection instead (an open connection stays coherent with other
# processes' writes), and the next store on the same file takes it back, unless
# the file was replaced or changed meanwhile.

_IDLE: dict[str, tuple[sqlite3.Connection, tuple[int, ...]]] = {}
_IDLE_LIMIT = 8
_IDLE_LOCK = threading.Lock()
_INHERITED: list[object] = []
"""A forked child's copies of the parent's connections: never used, never closed."""


def _signature(path: str) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _parked(path: str) -> sqlite3.Connection | None:
    """The connection a closed index of ``path`` left, if the file is still the same."""
    with _IDLE_LOCK:
        parked = _IDLE.pop(path, None)
    if parked is None:
        return None
    db, signature = parked
    if _signature(path) != signature:
        db.close()
        return None
    return db


def _park(path: str, db: sqlite3.Connection) -> None:
    signature = _signature(path)
    if signature is None or db.in_transaction:
        db.close()
        return
    with _IDLE_LOCK:
        evicted = [_IDLE.pop(path, (None, ()))[0]]
        _IDLE[path] = (db, signature)
        while len(_IDLE) > _IDLE_LIMIT:
            evicted.append(_IDLE.pop(next(iter(_IDLE)))[0])
    for old in evicted:
        if old is not None:
            old.close()


def close_idle_connections() -> int:
    """Close the connections closed indexes left open for the next store (see above);
    how many. A program that must see every descriptor closed calls it."""
    with _IDLE_LOCK:
        parked = list(_IDLE.values())
        _IDLE.clear()
    for db, _ in parked:
        db.close()
    return len(parked)


def _forget_parked_in_child() -> None:
    with _IDLE_LOCK:  # a lock held across fork() by another thread: see engine.fork
        _INHERITED.extend(_IDLE.values())
        _IDLE.clear()


os.register_at_fork(after_in_child=_forget_parked_in_child)


@dataclass(frozen=True)
class Plan:
    """One statement answering a query: ``paged`` when it sorts and pages too (else
    the reference does), given up after ``budget`` progress ticks (``None``: never)."""

    sql: str
    params: dict[str, object]
    paged: bool
    budget: int | None = None


class RunIndex:
    """The run index in SQLite (WAL). ``sync``: every commit survives a power cut
    (``synchronous=FULL``); without, a crash of the process (``NORMAL``)."""

    def __init__(self, path: str, *, sync: bool = False) -> None:
        self.path = path
        self._lock = threading.Lock()
        parked = _parked(path)
        try:
            self._db = parked or sqlite3.connect(
                path, timeout=_OPEN_TIMEOUT, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise self._unopenable(exc) from exc
        try:
            if parked is None:  # a parked connection has it already
                self._db.create_function(
                    index_sql.LIKE_FUNCTION, 3, index_sql.like, deterministic=True
                )
            self.created = self._prepare(wal=parked is None, sync=sync)
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error):
                raise self._unopenable(exc) from exc
            raise

    def _unopenable(self, exc: sqlite3.Error) -> StorageIOError:
        return StorageIOError(
            f"cannot open the run index {self.path}: {exc}; "
            "delete it and it is rebuilt from the runs",
            details={"path": self.path},
        )

    def _prepare(self, *, wal: bool, sync: bool) -> bool:
        """Journal mode, durability and tables (see :meth:`_migrate`).

        Processes opening a new store at the same moment can find SQLite busy
        setting up the write-ahead log, which it reports at once instead of
        waiting out its busy timeout: that is retried, within the same bound.
        """
        deadline, pause = time.monotonic() + _OPEN_TIMEOUT, 0.001
        while True:
            try:
                if wal:
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={'FULL' if sync else 'NORMAL'}")
                return self._migrate()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(2 * pause, 0.05)

    def _migrate(self) -> bool:
        """Create the tables, or drop and recreate them when they are of another version.

        ``True`` when the index is new (empty): the backend then rebuilds it.
        """
        if self._version() == index_sql.SCHEMA_VERSION:
            return False
        with self._transaction():
            created = self._version() != index_sql.SCHEMA_VERSION  # not meanwhile elsewhere
            if created:
                for statement in (*index_sql.DROP, *index_sql.SCHEMA):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {int(index_sql.SCHEMA_VERSION)}")
        return created

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction around the block: all of it or none of it."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite rolls some failures back itself
                self._db.execute("ROLLBACK")
            raise

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            _park(self.path, self._db)

    def _fetch(self, plan: Plan) -> list[bytes] | None:
        """The JSON records ``plan`` selects; ``None`` when it ran over its budget."""
        ticks = 0

        def tick() -> bool:
            nonlocal ticks
            ticks += 1
            return ticks > (plan.budget or 0)

        with translating("run index error", path=self.path), self._lock, _collector_paused():
            if plan.budget is not None:
                self._db.set_progress_handler(tick, _TICK)
            try:
                return [row[0] for row in self._db.execute(plan.sql, plan.params).fetchall()]
            except sqlite3.OperationalError:
                if plan.budget is not None and ticks > plan.budget:
                    return None
                raise
            finally:
                if plan.budget is not None:
                    self._db.set_progress_handler(None, 0)

    def _execute(
        self, sql: str, params: Sequence[object] | dict[str, object] = ()
    ) -> list[tuple[object, ...]]:
        with translating("run index error", path=self.path), self._lock:
            return self._db.execute(sql, params).fetchall()

    def _write(
        self,
        records: Iterable[RunRecord],
        *,
        replace_all: bool = False,
        deleted: Collection[str] = (),
        folders: Folders | None = None,
    ) -> None:
        """Store ``records`` (replacing their old rows, or every row) and drop the rows of
        ``deleted`` in one transaction; with ``folders``, record what the run folders
        looked like (see :class:`Folders`)."""
        latest = {record.run_id: record for record in records}  # the last of one id wins
        encoded = {run_id: r.model_dump_json().encode() for run_id, r in latest.items()}
        if len(latest) == 1 and not (replace_all or deleted or folders is not None):
            ((run_id, data),) = encoded.items()
            with translating("run index error", path=self.path), self._lock:
                if self._stored(run_id) == data:
                    return  # the record did not change (a run taken over, or let go)
        rows = [index_sql.run_rows(latest[run_id], data) for run_id, data in encoded.items()]
        single = len(rows) == 1 and not (replace_all or deleted or folders is not None)
        one = rows[0] if single else None
        with translating("run index error", path=self.path), self._lock, self._transaction():
            stored = None if one is None else self._stored(one.id)
            if (
                one is not None
                and stored is not None
                and _same_labels(stored, latest[one.id])
                and self._db.execute(_UPDATE, one.run).rowcount == 1
            ):
                return  # no label changed (a heartbeat, a phase): one row, ~7x cheaper
            for table in ("runs", *_SIDE_TABLES) if replace_all else ():
                self._db.execute(f"DELETE FROM {table}")  # noqa: S608 - a fixed name
            for table in ("runs", *_SIDE_TABLES) if deleted else ():
                self._db.executemany(
                    f"DELETE FROM {table} WHERE run_id = ?",  # noqa: S608 - a fixed name
                    [(run_id,) for run_id in deleted],
                )
            if folders is not None:
                self._db.execute("DELETE FROM folder_state")
                self._db.execute("DELETE FROM unindexed")
                if folders.root is not None:
                    self._db.execute("INSERT INTO folder_state VALUES (1, ?)", (folders.root,))
                self._db.executemany("INSERT INTO unindexed VALUES (?, ?, ?, ?)", folders.unindexed)
            for table in () if replace_all else _SIDE_TABLES:
                self._db.executemany(
                    f"DELETE FROM {table} WHERE run_id = ?",  # noqa: S608 - a fixed name
                    [(row.run[0],) for row in rows],
                )
            self._db.executemany(_INSERTS[0], [row.run for row in rows])
            self._db.executemany(_INSERTS[1], [t for row in rows for t in row.tags])
            self._db.executemany(_INSERTS[2], [m for row in rows for m in row.metadata])
            self._db.executemany(_INSERTS[3], [m for row in rows for m in row.metrics])

    def _stored(self, run_id: str) -> bytes | None:
        """The stored JSON record of the run, if it is indexed."""
        found = self._db.execute("SELECT record FROM runs WHERE run_id = ?", (run_id,))
        stored = found.fetchone()
        return None if stored is None else bytes(stored[0])

    def upsert(self, record: RunRecord) -> None:
        self._write([record])

    def upsert_many(self, records: Iterable[RunRecord]) -> None:
        self._write(records)

    def replace_all(self, records: Iterable[RunRecord], *, folders: Folders | None = None) -> None:
        self._write(records, replace_all=True, folders=folders)

    def reconcile(
        self, added: Iterable[RunRecord], removed: Collection[str], *, folders: Folders
    ) -> None:
        """Index the runs ``added`` and forget ``removed`` (folders copied in and deleted
        by hand), recording what the folders looked like, in one transaction."""
        self._write(added, deleted=removed, folders=folders)

    def folders(self) -> Folders:
        """What the run folders looked like when the index was last reconciled with them
        (``root`` ``None``: not settled, reconcile before trusting the index)."""
        with translating("run index error", path=self.path), self._lock:
            root = self._db.execute("SELECT signature FROM folder_state WHERE id = 1").fetchall()
            rows = self._db.execute("SELECT * FROM unindexed ORDER BY run_id").fetchall()
        return Folders(str(root[0][0]) if root else None, [(r[0], r[1], r[2], r[3]) for r in rows])

    def all_ids(self) -> set[str]:
        """Every indexed run id (one string from SQLite: ~4x faster than a row each)."""
        rows = self._execute("SELECT group_concat(run_id, ' ') FROM runs")
        joined = rows[0][0] if rows else None
        return set(str(joined).split(" ")) if joined else set()

    def delete(self, run_id: str) -> None:
        with translating("run index error", path=self.path), self._lock, self._transaction():
            for table in ("runs", *_SIDE_TABLES):
                self._db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))  # noqa: S608

    def run_ids(self, prefix: str) -> list[str]:
        rows = self._execute(
            "SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ?", (prefix, prefix + "\uffff")
        )
        return [str(r[0]) for r in rows]

    def highest_number(self, prefix: str) -> int:
        """Largest N of run ids ``prefix`` + digits ever created (one primary-key lookup)."""
        rows = self._execute("SELECT highest FROM id_counters WHERE prefix = ?", (prefix,))
        return int(str(rows[0][0])) if rows else 0

    def plans(self, query: RunQuery, *, pushdown: bool = True) -> list[Plan]:
        """The statements that answer ``query``, to try in turn (see :class:`Plan`).

        A page filtered by ``where`` or ``tags`` in the order of the ``runs_created``
        index is first sought by walking that index and looking each run up in the
        side tables, which finds the page at once when matches are dense; when that
        takes more than a small budget, matches are sparse and the side tables'
        indexes find them instead.
        Without ``pushdown`` only the classic filters are in SQL (for
        :meth:`RunQuery.apply`).
        """
        plan = self._plan(query, pushdown=pushdown, correlated=False)
        looked_up = query.where is not None or bool(query.tags)  # in the side tables
        walk = looked_up and query.limit is not None and plan.paged
        if walk and index_sql.Query.walks_index(query.order_by):
            walking = self._plan(query, pushdown=True, correlated=True)
            return [dataclasses.replace(walking, budget=_WALK_BUDGET), plan]
        return [plan]

    @staticmethod
    def _plan(query: RunQuery, *, pushdown: bool, correlated: bool) -> Plan:
        sql = index_sql.Query(correlated)
        conditions = sql.classic(
            query.status, query.sut_name, query.tags, query.created_after, query.created_before
        )
        if query.where is not None and pushdown:
            conditions.append(sql.where(query.where))
        order = sql.order(query.order_by) if pushdown else None
        if order is not None and query.page_token is not None:
            cursor = decode_page_token(query.page_token, query.order_by, query.fingerprint)
            after = sql.after(query.order_by, cursor)
            if after is None:  # a token whose values are not of their columns' types
                order = None
            else:
                conditions.append(after)
        # A filter may leave many runs for SQLite to sort: sort their ids, not records.
        filtered = len(conditions) > (query.page_token is not None)
        text = index_sql.select(
            conditions, order, query.limit, query.offset, sort_ids=filtered and not correlated
        )
        return Plan(text, sql.params, paged=order is not None)

    def explain(self, query: RunQuery) -> list[list[str]]:
        """SQLite's plan (``EXPLAIN QUERY PLAN``) of each of :meth:`plans`, one line a step."""
        return [
            [str(row[-1]) for row in self._execute("EXPLAIN QUERY PLAN " + plan.sql, plan.params)]
            for plan in self.plans(query)
        ]

    def query(self, query: RunQuery) -> Page:
        """One page of ``query``: filtered, sorted and paged in SQL when every sort key is
        a plain field, otherwise filtered in SQL and sorted and paged by the reference."""
        # A number SQLite cannot hold exactly (rare): the reference decides, on every
        # run the classic filters leave (they are exact in SQL).
        inexact = bool(self._execute("SELECT 1 FROM runs WHERE inexact LIMIT 1"))
        for plan in self.plans(query, pushdown=not inexact):
            rows = self._fetch(plan)
            if rows is not None:
                break
        else:  # pragma: no cover - the last plan has no budget
            raise AssertionError("no plan without a budget")
        if inexact:
            return query.apply(_records(rows))
        if not plan.paged:
            return paginate(
                _records(rows),
                query.order_by,
                fingerprint=query.fingerprint,
                limit=query.limit,
                offset=query.offset,
                page_token=query.page_token,
            )
        limit = query.limit
        page = Page.from_json(rows if limit is None else rows[:limit], _records)
        if limit is not None and len(rows) > limit and page:  # one more row: a next page
            page.next_page_token = encode_page_token(page[-1], query.order_by, query.fingerprint)
        return page


def _records(rows: Sequence[bytes]) -> list[RunRecord]:
    """The records of the JSON documents ``rows``: one validation call for them all
    (~5x faster than one a row; parsing with orjson and building the models
    unvalidated was only ~8% faster on a listing of 100k runs, not worth skipping
    validation)."""
    with _collector_paused():
        return _RECORDS.validate_json(b"[" + b",".join(rows) + b"]")


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: with 100k fresh records it would run
    again and again over every object alive, ~2.5x the listing's own time."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _same_labels(stored: bytes, new: RunRecord) -> bool:
    """Whether the ``stored`` JSON record has ``new``'s tags, metadata and metrics."""
    old, dumps = orjson.loads(stored), orjson.dumps  # not ==: 1 and 1.0 are stored apart
    return bool(
        old.get("tags") == new.tags
        and dumps(old.get("metadata")) == dumps(new.metadata)
        and dumps(old.get("metrics")) == dumps(new.metrics)
    )
