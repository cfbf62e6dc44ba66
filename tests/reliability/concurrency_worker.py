"""One racer of the concurrency test: a writer or a reader, on runstore or on the control.

``python concurrency_worker.py writer MODE URL WORKER RUNS UPDATES``
    prints ``ready``, waits for ``go`` on stdin, then creates RUNS runs and
    updates each one's state UPDATES times before finishing it; prints
    ``run ID`` once a run is created.
``python concurrency_worker.py reader MODE URL``
    prints ``ready``, waits for ``go``, then reads the index and the runs it
    lists over and over until ``stop`` arrives; prints one JSON line:
    ``{"reads": n, "errors": n, "kinds": {...}}``.

MODE ``runstore`` uses ``runstore.open(URL)``. MODE ``naive`` is the control:
the read-modify-write JSON index that a run store without atomic claims and
compare-and-swap amounts to (``URL/index.json``, rewritten in place). The
test judges both with the same checker, to show that it catches lost updates.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import runstore


def wait_for(word: str) -> None:
    print("ready", flush=True)
    line = sys.stdin.readline().strip()
    assert line == word, line


# -- the control: a naive read-modify-write index ----------------------------------------


class NaiveIndex:
    def __init__(self, directory: str) -> None:
        self.path = Path(directory) / "index.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, Any]:
        for _ in range(100):  # a half-written file: retry a while, then start afresh
            try:
                data: dict[str, Any] = json.loads(self.path.read_text() or "{}")
                return data
            except FileNotFoundError:
                return {}
            except json.JSONDecodeError:
                time.sleep(0.001)
        return {}

    def save(self, data: dict[str, Any]) -> None:
        self.path.write_text(json.dumps(data))

    def create_run(self) -> str:
        runs = self.load()
        run_id = f"run_{len(runs) + 1:04d}"
        runs[run_id] = {"status": "running", "completed": 0}
        self.save(runs)
        return run_id

    def update(self, run_id: str, **fields: Any) -> None:
        runs = self.load()
        runs.setdefault(run_id, {}).update(fields)
        self.save(runs)


def naive_writer(directory: str, runs: int, updates: int) -> None:
    index = NaiveIndex(directory)
    wait_for("go")
    for _ in range(runs):
        run_id = index.create_run()
        print("run", run_id, flush=True)
        for done in range(1, updates + 1):
            index.update(run_id, completed=done)
        index.update(run_id, status="succeeded")


def naive_reader(directory: str, stop: threading.Event) -> Counter[str]:
    path = Path(directory) / "index.json"
    seen: Counter[str] = Counter()
    while not stop.is_set():
        try:
            json.loads(path.read_bytes())
            seen["reads"] += 1
        except FileNotFoundError:
            continue
        except json.JSONDecodeError:
            seen["errors"] += 1
            seen["JSONDecodeError"] += 1
    return seen


# -- runstore ----------------------------------------------------------------------------------


def runstore_writer(url: str, worker: int, runs: int, updates: int) -> None:
    wait_for("go")
    with runstore.open(url, heartbeat_interval=0) as store:  # opened in the race, too
        for _ in range(runs):
            run = store.create_run(sut_name="race", tags=[f"w{worker}"])
            print("run", run.run_id, flush=True)
            for done in range(1, updates + 1):
                run.set_phase("work", status="running", completed=done)
                run.append("steps", {"worker": worker, "done": done})
            run.finish()


def runstore_reader(url: str, stop: threading.Event) -> Counter[str]:
    seen: Counter[str] = Counter()
    local = Path(url) if "://" not in url else None
    with runstore.open(url, heartbeat_interval=0) as store:
        while not stop.is_set():
            try:
                for record in store.list_runs(sut_name="race")[:8]:  # the newest, most active
                    view = store.get_run(record.run_id)
                    _ = view.state, view.summary
                    sum(1 for _ in view.read("steps"))
                    seen["runs_read"] += 1
                if local is not None:  # every snapshot file on disk parses, at any moment
                    for name in os.listdir(local):
                        state = local / name / "state.json"
                        if state.exists():
                            runstore.RunState.model_validate_json(state.read_bytes())
                seen["reads"] += 1
            except Exception as exc:
                seen["errors"] += 1
                seen[type(exc).__name__] += 1
                time.sleep(0.01)
    return seen


def main(argv: list[str]) -> None:
    role, mode, url, *rest = argv
    if role == "writer":
        worker, runs, updates = map(int, rest)
        if mode == "naive":
            naive_writer(url, runs, updates)
        else:
            runstore_writer(url, worker, runs, updates)
        return
    stop = threading.Event()
    result: list[Counter[str]] = []
    read = naive_reader if mode == "naive" else runstore_reader
    thread = threading.Thread(target=lambda: result.append(read(url, stop)))
    wait_for("go")
    thread.start()
    sys.stdin.readline()  # "stop"
    stop.set()
    thread.join()
    print(json.dumps(dict(result[0])), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
