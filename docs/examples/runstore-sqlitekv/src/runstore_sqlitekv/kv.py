"""The five primitives of :class:`runstore.spi.KeyValueStore` on one SQLite table.

``KVBackend`` (in runstore) builds runs, streams and artifacts on them. SQLite
makes each primitive atomic across threads and processes of one host: the
primary key makes ``INSERT OR IGNORE`` a put-if-absent, and ``UPDATE ...
WHERE v = ?`` a compare-and-set.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from runstore.spi import Capabilities, KeyValueStore, StorageIOError

__all__ = ["SQLiteKV"]

_LAST = "\U0010ffff"  # sorts after every character a key may hold


class SQLiteKV(KeyValueStore):
    """Keys and values in the table ``kv`` of the SQLite file ``path``."""

    capabilities = Capabilities(multi_host=False)  # file locks: one host, not an NFS share

    def __init__(self, path: str) -> None:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=60.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")  # with NORMAL: survives a crash of
            self._db.execute("PRAGMA synchronous=NORMAL")  # the writer, not a power cut
            self._db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
        except (OSError, sqlite3.Error) as exc:
            raise StorageIOError(f"cannot open {path!r}: {exc}", details={"path": path}) from exc
        # One connection, used from the store's event loop and closed from it too.
        self._lock = threading.Lock()

    def _run(self, sql: str, *args: object) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._db.execute(sql, args)
            except sqlite3.Error as exc:
                raise StorageIOError(f"SQLite failed: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        row = self._run("SELECT v FROM kv WHERE k = ?", key).fetchone()
        return None if row is None else bytes(row[0])

    async def put_if_absent(self, key: str, value: bytes) -> bool:
        return self._run("INSERT OR IGNORE INTO kv VALUES (?, ?)", key, value).rowcount == 1

    async def compare_and_set(self, key: str, expected: bytes, value: bytes) -> bool:
        sql = "UPDATE kv SET v = ? WHERE k = ? AND v = ?"
        return self._run(sql, value, key, expected).rowcount == 1

    async def list_keys(self, prefix: str) -> list[str]:
        sql = "SELECT k FROM kv WHERE k >= ? AND k < ? ORDER BY k"
        return [row[0] for row in self._run(sql, prefix, prefix + _LAST).fetchall()]

    async def delete(self, key: str) -> None:
        self._run("DELETE FROM kv WHERE k = ?", key)

    async def aclose(self) -> None:
        with self._lock:
            self._db.close()
