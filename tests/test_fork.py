"""A store or run opened before fork(): the child gets a clear error, never a hang.

And processes started with fork, forkserver or spawn each open the store
themselves and write to it side by side.
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import runstore

sys.path.insert(0, str(Path(__file__).parent))
import fork_worker  # importable by name in spawned children

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork() is POSIX")


def _child_uses_the_parents_objects(store: runstore.Store, run: runstore.Run, out: object) -> None:
    results = []
    for attempt in (store.list_runs, lambda: run.append("steps", {"from": "child"})):
        try:
            attempt()
            results.append("worked")
        except runstore.UnsupportedError as error:
            results.append(error.code)
    store.close()  # a no-op in the child: the parent owns the store's resources
    results.append(fork_worker.write_one_run(store.url, 99))  # its own store works
    out.put(results)  # type: ignore[attr-defined]


def test_a_child_gets_a_clear_error_from_its_parents_store_and_run(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    with runstore.open(str(tmp_path / "runs")) as store:
        run = store.create_run(run_id="run_parent")
        run.append("steps", {"from": "parent"})
        queue = context.Queue()
        child = context.Process(target=_child_uses_the_parents_objects, args=(store, run, queue))
        child.start()
        results = queue.get(timeout=120)
        child.join(timeout=120)
        assert child.exitcode == 0
        assert results[:2] == ["unsupported", "unsupported"]
        run.append("steps", {"from": "parent, after the fork"})  # the parent is unaffected
        run.finish()
        assert [r["from"] for r in store.get_run("run_parent").read("steps")] == [
            "parent",
            "parent, after the fork",
        ]
        assert results[2] in {r.run_id for r in store.list_runs()}


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_worker_processes_write_their_own_runs_into_one_store(tmp_path: Path, method: str) -> None:
    url = str(tmp_path / "runs")
    with runstore.open(url) as store:
        store.create_run(run_id="run_opened_first").finish()  # a store is open in the parent
        context = multiprocessing.get_context(method)
        with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
            run_ids = list(pool.map(fork_worker.write_one_run, [url] * 4, range(4)))
        assert len(set(run_ids)) == 4
        listed = {r.run_id for r in store.list_runs()}
        assert set(run_ids) <= listed
        for run_id in run_ids:
            assert len(list(store.get_run(run_id).read("steps"))) == 20
