"""Functions a child process runs in tests/test_fork.py (importable by name, as spawn needs)."""

from __future__ import annotations

import runstore


def write_one_run(url: str, n: int) -> str:
    """Open the store in this process, write one run, return its id."""
    with runstore.open(url) as store, store.create_run(metadata={"worker": n}) as run:
        for i in range(20):
            run.append("steps", {"worker": n, "i": i})
        return run.run_id
