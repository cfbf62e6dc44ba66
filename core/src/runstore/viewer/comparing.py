"""The compare page's engine: :func:`runstore.analysis.compare.compare_runs`, unchanged.

The page shows exactly what ``runstore compare`` and ``runstore diff`` print,
because it calls the same function. That function reads through the sync
API, so the viewer opens a second, sync store on the same URL the first time
a comparison is asked for, and runs each comparison in a worker thread: the
server's event loop stays free to answer other pages meanwhile.
"""

from __future__ import annotations

import threading

from runstore.analysis.compare import Comparison, compare_runs
from runstore.store import Store
from runstore.store import open as open_store

__all__ = ["Comparer"]


class Comparer:
    """Compares two runs of the store at ``url`` (call :meth:`compare` from a worker thread)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._store: Store | None = None
        self._lock = threading.Lock()

    def _opened(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.url)
            return self._store

    def compare(self, run_a: str, run_b: str, *, steps: bool = False) -> Comparison:
        """Run B compared with run A, instance by instance (blocking: reads both runs)."""
        store = self._opened()
        return compare_runs(store.get_run(run_a), store.get_run(run_b), steps=steps)

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()
