"""What the kit runs in other processes, and how it compares what each one sees.

A backend that declares ``persistent`` must show a new store object, and a
new process, everything an earlier one wrote; one that declares
``conditional_create`` and ``compare_and_swap`` must keep several processes
racing on one store from creating the same run twice or losing an update.
The functions here run in child processes started with the ``spawn`` method
(a fresh interpreter: nothing of the parent's memory comes along), so they
and the store opener they get must be importable, picklable, module-level
callables.
"""

from __future__ import annotations

import functools
import multiprocessing

# Imported once, up front: a test runner that restores sys.modules between in-process
# sessions (pytester) would otherwise leave pickling bound to a stale module copy.
import multiprocessing.connection
import multiprocessing.queues
import multiprocessing.synchronize
import queue
from collections.abc import Callable, Iterable
from typing import Any

import runstore
from runstore.model.errors import AlreadyExistsError, RunstoreError

__all__ = [
    "PROCESS_TIMEOUT",
    "RaceOutcome",
    "describe_difference",
    "open_url",
    "race",
    "snapshot",
    "snapshot_in_a_new_process",
    "url_opener",
]

PROCESS_TIMEOUT = 180.0
"""Seconds a child process may take (starting an interpreter included) before the kit
gives up on it: generous, so a loaded machine is never mistaken for a broken backend."""

StoreOpener = Callable[[], runstore.Store]

RaceOutcome = dict[str, Any]
"""What one racing process reports: ``create`` (``created``, ``already_exists`` or the
error), ``generated`` (run ids it was given), ``errors`` (anything else that went wrong)."""


def open_url(url: str) -> runstore.Store:
    """``runstore.open(url)`` without heartbeats: the default store opener's body."""
    return runstore.open(url, heartbeat_interval=0)


def url_opener(url: str) -> StoreOpener:
    """A picklable callable opening ``url`` (for a backend installed through its entry point)."""
    return functools.partial(open_url, url)


# -- what a store holds ---------------------------------------------------------------


def snapshot(store: runstore.Store, run_ids: Iterable[str]) -> dict[str, Any]:
    """Everything the store shows about ``run_ids``, as plain JSON values.

    Manifest, state, summary, labels, every stream's records, every artifact's
    reference and sha256, and the run's index record. Run-level wall-clock
    times are part of it: they are stored values, and a reopened store must
    show the same ones.
    """
    runs: dict[str, Any] = {}
    listed = {record.run_id: record for record in store.list_runs()}
    for run_id in sorted(run_ids):
        try:
            view = store.get_run(run_id)
        except RunstoreError as error:
            runs[run_id] = f"get_run raised {type(error).__name__} (code {error.code!r})"
            continue
        streams = view.streams()
        refs = view.artifacts()
        record = listed.get(run_id)
        runs[run_id] = {
            "manifest": view.manifest.model_dump(mode="json"),
            "state": view.state.model_dump(mode="json"),
            "summary": None if view.summary is None else view.summary.model_dump(mode="json"),
            "streams": streams,
            "stream records": {stream: list(view.read(stream)) for stream in streams},
            "artifacts": [ref.model_dump(mode="json", exclude={"uri"}) for ref in refs],
            "artifact bytes": {
                ref.name: len(view.read_artifact(ref.name, verify=True)) for ref in refs
            },
            "index record": None if record is None else record.model_dump(mode="json"),
        }
    return runs


def _snapshot_child(opener: StoreOpener, run_ids: list[str], out: Any) -> None:
    try:
        with opener() as store:
            out.put(("ok", snapshot(store, run_ids)))
    except BaseException as error:  # reported to the parent, which fails the test
        out.put(("error", f"{type(error).__name__}: {error}"))


def snapshot_in_a_new_process(opener: StoreOpener, run_ids: list[str]) -> dict[str, Any]:
    """:func:`snapshot` of ``opener()`` taken in a freshly spawned interpreter."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    child = context.Process(target=_snapshot_child, args=(opener, run_ids, out), daemon=True)
    child.start()
    try:
        status, value = out.get(timeout=PROCESS_TIMEOUT)
    except queue.Empty:
        raise AssertionError(
            f"a new process reading the store sent nothing in {PROCESS_TIMEOUT:.0f}s "
            f"(exit code {child.exitcode}); is the store opener picklable and importable?"
        ) from None
    finally:
        child.join(PROCESS_TIMEOUT)
        if child.is_alive():
            child.kill()
    if status != "ok":
        raise AssertionError(f"a new process could not read the store: {value}")
    return dict(value)


def describe_difference(written: Any, read: Any, path: str = "") -> list[str]:
    """Each place where ``read`` differs from ``written``, one line each (the first 10)."""
    if isinstance(written, dict) and isinstance(read, dict):
        lines: list[str] = []
        for key in sorted(written.keys() | read.keys(), key=str):
            lines += describe_difference(written.get(key), read.get(key), f"{path}[{key!r}]")
        return lines[:10]
    if isinstance(written, list) and isinstance(read, list) and written != read:
        if len(written) != len(read):
            missing = [item for item in written if item not in read]
            return [
                f"{path}: {len(written)} written, {len(read)} read back"
                + (f"; missing {missing[:3]!r}" if missing else "")
            ]
        for index, (w, r) in enumerate(zip(written, read, strict=True)):
            if w != r:
                return describe_difference(w, r, f"{path}[{index}]")
    if written != read:
        return [f"{path}: written {written!r:.300}, read back {read!r:.300}"]
    return []


# -- several processes on one store -----------------------------------------------------


def _race_child(
    opener: StoreOpener,
    start: Any,
    out: Any,
    index: int,
    plan: dict[str, Any],
) -> None:
    run_id, generated, shared_run, relabels = (
        plan["run_id"],
        plan["generated"],
        plan["shared_run"],
        plan["relabels"],
    )
    outcome: RaceOutcome = {"index": index, "generated": [], "errors": []}
    try:
        store = opener()
    except BaseException as error:
        outcome["errors"].append(f"opening the store: {type(error).__name__}: {error}")
        start.abort()
        out.put(outcome)
        return
    try:
        start.wait(PROCESS_TIMEOUT)  # every process is ready: now they race
        try:
            store.create_run(run_id=run_id)
            outcome["create"] = "created"
        except AlreadyExistsError:
            outcome["create"] = "already_exists"
        for _ in range(generated):
            outcome["generated"].append(store.create_run().run_id)
        for number in range(relabels):
            store.set_metadata(shared_run, {f"process_{index}_update_{number}": number})
    except BaseException as error:
        outcome["errors"].append(f"{type(error).__name__}: {error}")
    finally:
        try:
            store.close()
        except BaseException as error:
            outcome["errors"].append(f"closing the store: {type(error).__name__}: {error}")
        out.put(outcome)


def race(
    opener: StoreOpener,
    *,
    processes: int,
    run_id: str,
    generated: int,
    shared_run: str,
    relabels: int,
) -> list[RaceOutcome]:
    """Start ``processes`` spawned processes on ``opener()``'s store and release them at once.

    Each creates ``run_id``, then ``generated`` runs with generated ids, then
    changes the metadata of ``shared_run`` ``relabels`` times (compare-and-swap,
    retried by runstore on conflicts). Returns what each one reports.
    """
    plan = {"run_id": run_id, "generated": generated, "shared_run": shared_run}
    plan["relabels"] = relabels
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes)
    out = context.Queue()
    children = [
        context.Process(
            target=_race_child,
            args=(opener, start, out, index, plan),
            daemon=True,
        )
        for index in range(processes)
    ]
    for child in children:
        child.start()
    outcomes: list[RaceOutcome] = []
    try:
        for _ in children:
            outcomes.append(out.get(timeout=PROCESS_TIMEOUT))
    except queue.Empty:
        raise AssertionError(
            f"{processes - len(outcomes)} of {processes} racing processes reported nothing "
            f"in {PROCESS_TIMEOUT:.0f}s (exit codes {[c.exitcode for c in children]})"
        ) from None
    finally:
        _reap(children)
    return sorted(outcomes, key=lambda outcome: int(outcome["index"]))


def _reap(children: list[Any]) -> None:
    for child in children:
        child.join(PROCESS_TIMEOUT)
        if child.is_alive():
            child.kill()
            child.join()
