"""I/O fault injection: fail the Nth write, fsync, rename, link, mkdir, open, truncate.

The local backend talks to the kernel through a handful of ``os`` calls. The
test swaps the ``os`` those modules see for a proxy that passes every call
through to the real one, except the calls a *fault plan* names: those raise
``OSError(ENOSPC | EIO | EACCES)`` the way the kernel does. (The local writer
keeps no user-space buffer: a record is "flushed" by its ``write(2)``, so the
write faults are the flush faults.)

A scripted run (open, create, append, artifacts, phase, close, torn tail,
reopen with ``durability="fsync"``, resume, append, finish, read back) is run
once to count the calls, then once per fault plan: for every call number N
of every operation, transient (only call N fails) and persistent (N and every
later one fail until the fault clears), plus whole-disk plans (disk full,
disk dying) that fail every mutating call from the Nth on.

For each plan:

* the failing call raises the typed error (``StorageIOError`` for ENOSPC and
  EIO, ``PermissionDeniedError`` for EACCES), never a raw ``OSError``;
* while the fault lasts, every acknowledged record is on disk, nothing else
  but the failing one, and every file parses;
* once the fault clears, retrying the failed call with the *same* objects
  works and the script completes: exact streams, verified artifacts,
  ``verify_run`` clean, no temp file left, no file descriptor leaked.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import orjson
import pytest
from harness import Figures, Scale, temp_leftovers, walk_local

import runstore
import runstore_local.backend
import runstore_local.fs
import runstore_local.streams
from runstore.model.errors import PermissionDeniedError, RunstoreError, StorageIOError
from runstore.ops.maintenance import verify_run
from runstore.spi.backends import Durability
from runstore_local import close_idle_connections

OPS: Final = ("write", "fsync", "fdatasync", "replace", "link", "mkdir", "open", "ftruncate")
ERRNOS: Final = (errno.ENOSPC, errno.EIO, errno.EACCES)
WRITE_FLAGS: Final = os.O_WRONLY | os.O_RDWR | os.O_CREAT
QUICK_CALLS_PER_OP: Final = 6
MODULES: Final = (runstore_local.fs, runstore_local.streams, runstore_local.backend)


@dataclass(frozen=True)
class Plan:
    """Which calls fail. ``op`` is an ``os`` function, or ``disk-full`` / ``disk-dying``."""

    op: str
    nth: int
    errno: int
    persistent: bool

    def __str__(self) -> str:
        how = "persistent" if self.persistent else "transient"
        return f"{self.op}#{self.nth} {errno.errorcode[self.errno]} {how}"


@dataclass
class Injector:
    """The ``os`` the local backend sees: the real one, with a fault plan."""

    real: ModuleType = os
    plan: Plan | None = None
    counts: Counter[str] = field(default_factory=Counter)
    fired: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def arm(self, plan: Plan | None) -> None:
        with self.lock:
            self.plan, self.counts, self.fired = plan, Counter(), 0

    def clear(self) -> None:
        with self.lock:
            self.plan = None

    def _fails(self, op: str, *, mutating: bool) -> bool:
        with self.lock:
            self.counts[op] += 1
            if mutating:
                self.counts["mutating"] += 1
            plan = self.plan
            if plan is None:
                return False
            if plan.op in ("disk-full", "disk-dying"):
                if not mutating or (plan.op == "disk-full" and op == "ftruncate"):
                    return False  # shrinking a file needs no space
                number = self.counts["mutating"]
            elif plan.op == op:
                number = self.counts[op]
            else:
                return False
            hit = number == plan.nth or (plan.persistent and number > plan.nth)
            self.fired += hit
            return hit

    def _error(self) -> OSError:
        assert self.plan is not None
        return OSError(self.plan.errno, os.strerror(self.plan.errno))

    def write(self, fd: int, data: Any) -> int:
        if self._fails("write", mutating=True):
            plan = self.plan
            if plan is not None and plan.persistent and len(data) > 1:
                # the kernel writes what fits, returns short, then fails the rest
                short: int = self.real.write(fd, memoryview(data)[: len(data) // 2])
                return short
            raise self._error()
        written: int = self.real.write(fd, data)
        return written

    def fsync(self, fd: int) -> None:
        if self._fails("fsync", mutating=True):
            raise self._error()
        self.real.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        if self._fails("fdatasync", mutating=True):
            raise self._error()
        self.real.fdatasync(fd)

    def replace(self, *args: Any, **kwargs: Any) -> None:
        if self._fails("replace", mutating=True):
            raise self._error()
        self.real.replace(*args, **kwargs)

    def link(self, *args: Any, **kwargs: Any) -> None:
        if self._fails("link", mutating=True):
            raise self._error()
        self.real.link(*args, **kwargs)

    def mkdir(self, *args: Any, **kwargs: Any) -> None:
        if self._fails("mkdir", mutating=True):
            raise self._error()
        self.real.mkdir(*args, **kwargs)

    def open(self, path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if self._fails("open", mutating=bool(flags & WRITE_FLAGS)):
            raise self._error()
        fd: int = self.real.open(path, flags, *args, **kwargs)
        return fd

    def ftruncate(self, fd: int, length: int) -> None:
        if self._fails("ftruncate", mutating=True):
            raise self._error()
        self.real.ftruncate(fd, length)


@pytest.fixture
def injector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Injector]:
    proxy = Injector()
    for module in MODULES:
        monkeypatch.setattr(module, "os", proxy)
    yield proxy
    proxy.clear()


# -- the scripted run ---------------------------------------------------------------------

RUN = "run_fault"
ARTIFACTS: Final = {
    "inst_0001/request.json": b'{"method": "GET"}',
    "inst_0001/deep/er/blob.bin": bytes(range(256)) * 300,
    "inst_0002/report.json": b'{"passed": true}',
}
TORN: Final = b'{"seq": 99, "torn by a cra'


def record(stream: str, seq: int) -> dict[str, Any]:
    return {"stream": stream, "seq": seq, "pad": "x" * (seq * 37 % 300)}


@dataclass
class Script:
    """The scripted run: steps an application performs, and what was acknowledged."""

    root: Path
    store: runstore.Store | None = None
    run: runstore.Run | None = None
    acked: dict[str, int] = field(default_factory=lambda: {"steps": 0, "instances": 0})
    failed_appends_stored: int = 0

    def _store(self) -> runstore.Store:
        assert self.store is not None
        return self.store

    def _run(self) -> runstore.Run:
        assert self.run is not None
        return self.run

    def open_store(self, durability: Durability) -> None:
        self.store = runstore.open(str(self.root), heartbeat_interval=0, durability=durability)

    def create(self) -> None:
        self.run = self._store().create_run(run_id=RUN, sut_name="fault")

    def append(self, stream: str, seq: int) -> None:
        # an application that retries checks first: a failed append may still be stored
        stored = len(list(self._store().get_run(RUN).read(stream)))
        if stored > seq:
            self.failed_appends_stored += 1
        else:
            self._run().append(stream, record(stream, seq))
        self.acked[stream] = seq + 1

    def put(self, name: str) -> None:
        self._run().put_artifact(name, ARTIFACTS[name])

    def phase(self, completed: int) -> None:
        self._run().set_phase("work", status="running", completed=completed)

    def close_store(self) -> None:
        self._store().close()

    def tear_tail(self) -> None:  # what a crash in the middle of a write leaves
        with (self.root / RUN / "steps.jsonl").open("ab") as handle:
            handle.write(TORN)

    def resume(self) -> None:
        self.run = self._store().resume_run(RUN)

    def finish(self) -> None:
        self._run().finish()

    def read_back(self) -> None:
        with runstore.open(str(self.root), heartbeat_interval=0) as store:
            view = store.get_run(RUN)
            for stream in ("steps", "instances"):
                list(view.read(stream))
            for ref in view.artifacts():
                view.read_artifact(ref.name, verify=True)

    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        names = list(ARTIFACTS)
        return [
            ("open", lambda: self.open_store("flush")),
            ("create_run", self.create),
            ("append steps 0", lambda: self.append("steps", 0)),
            ("append steps 1", lambda: self.append("steps", 1)),
            ("append instances 0", lambda: self.append("instances", 0)),
            ("put_artifact 1", lambda: self.put(names[0])),
            ("put_artifact 2", lambda: self.put(names[1])),
            ("set_phase 1", lambda: self.phase(1)),
            ("append steps 2", lambda: self.append("steps", 2)),
            ("close", self.close_store),
            ("tear the tail", self.tear_tail),
            ("open fsync", lambda: self.open_store("fsync")),
            ("resume_run", self.resume),
            ("append steps 3", lambda: self.append("steps", 3)),
            ("append instances 1", lambda: self.append("instances", 1)),
            ("put_artifact 3", lambda: self.put(names[2])),
            ("set_phase 2", lambda: self.phase(2)),
            ("finish", self.finish),
            ("close", self.close_store),
            ("read back", self.read_back),
        ]


def stored_seqs(root: Path, stream: str) -> list[int]:
    path = root / RUN / f"{stream}.jsonl"
    if not path.exists():
        return []
    *lines, _torn = path.read_bytes().split(b"\n")
    return [orjson.loads(line)["seq"] for line in lines]


def check_while_faulty(script: Script) -> None:
    """What is on disk while the fault lasts: acknowledged records, parseable files."""
    walk = walk_local(script.root)
    assert walk.problems == [], walk.problems
    for stream, acked in script.acked.items():
        seqs = stored_seqs(script.root, stream)
        if seqs and seqs[-1] == 99:  # the torn line the script planted, glued onto
            raise AssertionError(f"{stream}: a record was glued onto a torn tail")
        assert seqs == list(range(len(seqs))), f"{stream}: {seqs} not exactly once in order"
        assert acked <= len(seqs) <= acked + 1, f"{stream}: {acked} acknowledged, {seqs} stored"


def check_completed(root: Path) -> None:
    with runstore.open(str(root), heartbeat_interval=0) as store:
        view = store.get_run(RUN)
        assert list(view.read("steps")) == [record("steps", n) for n in range(4)]
        assert list(view.read("instances")) == [record("instances", n) for n in range(2)]
        assert sorted(line["name"] for line in view.read("artifacts")) == sorted(ARTIFACTS)
        for name, data in ARTIFACTS.items():
            assert view.read_artifact(name, verify=True) == data
        assert view.state.status == "succeeded"
        assert view.state.phases["work"].completed == 2
        assert view.summary is not None
        assert view.summary.stream_counts == {"instances": 2, "steps": 4}
        assert store.portal.call(verify_run(store.aio, RUN)) == []
        assert [r.status for r in store.list_runs()] == ["succeeded"]
    walk = walk_local(root)
    assert walk.problems == [] and walk.torn_tails == {}, walk
    assert temp_leftovers(root) == []


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


EXPECTED: Final = {
    errno.ENOSPC: StorageIOError,
    errno.EIO: StorageIOError,
    errno.EACCES: PermissionDeniedError,
}


@dataclass
class Outcome:
    raised: list[str] = field(default_factory=list)
    fired: int = 0
    stored_anyway: int = 0
    calls: Counter[str] = field(default_factory=Counter)


def run_plan(root: Path, injector: Injector, plan: Plan | None) -> Outcome:
    outcome = Outcome()
    script = Script(root)
    close_idle_connections()
    fds = open_fds()
    injector.arm(plan)
    for name, step in script.steps():
        failure: Exception | None = None
        try:
            step()
        except Exception as exc:
            failure = exc
        if failure is not None:
            assert plan is not None, f"{name} failed without a fault: {failure!r}"
            expected = EXPECTED[plan.errno]
            assert isinstance(failure, expected), f"{plan}: {name} raised {failure!r}"
            assert isinstance(failure, RunstoreError)
            assert failure.code in ("io_error", "permission_denied")
            outcome.raised.append(name)
            check_while_faulty(script)
            injector.clear()
            step()  # the fault cleared: the same call, on the same objects, works
    outcome.fired, outcome.calls = injector.fired, Counter(injector.counts)
    injector.clear()
    outcome.stored_anyway = script.failed_appends_stored
    check_completed(root)
    close_idle_connections()  # kept open on purpose for the next store, not leaked
    leaked = open_fds() - fds
    assert not leaked, f"{plan}: file descriptors leaked: {len(leaked)}"
    return outcome


def call_numbers(count: int, scale: Scale) -> list[int]:
    """Every call number in the long form; about eight spread over the run in the quick one."""
    if scale.long:
        return list(range(1, count + 1))
    stride = -(-count // QUICK_CALLS_PER_OP)
    return sorted({1, count, *range(1, count + 1, stride)})


def plans(counts: Counter[str], scale: Scale) -> Iterator[Plan]:
    """Every N of every operation with every errno, transient and persistent (long form);
    the quick subset samples N and rotates errno and mode over the samples."""
    rotation = itertools.cycle([(e, p) for p in (False, True) for e in ERRNOS])
    for op in OPS:
        for nth in call_numbers(counts[op], scale):
            if scale.long:
                for code in ERRNOS:
                    for persistent in (False, True):
                        yield Plan(op, nth, code, persistent)
            else:
                code, persistent = next(rotation)
                yield Plan(op, nth, code, persistent)
    for nth in call_numbers(counts["mutating"], scale):
        yield Plan("disk-full", nth, errno.ENOSPC, True)
        yield Plan("disk-dying", nth, errno.EIO, True)


def test_every_nth_os_call_failing_is_a_typed_error_and_the_store_recovers(
    tmp_path: Path, injector: Injector, scale: Scale, figures: Figures
) -> None:
    counts = run_plan(tmp_path / "count", injector, None).calls
    assert all(counts[op] for op in OPS), f"the script must reach every operation: {counts}"
    totals: Counter[str] = Counter()
    for number, plan in enumerate(plans(counts, scale)):
        outcome = run_plan(tmp_path / f"case{number}", injector, plan)
        assert outcome.fired, f"{plan}: the fault never fired"
        totals["plans"] += 1
        totals["faults_fired"] += outcome.fired
        totals["typed_errors"] += len(outcome.raised)
        totals["swallowed"] += not outcome.raised
        totals["failed_appends_found_stored"] += outcome.stored_anyway
    for key, value in totals.items():
        figures.add(f"faults.{key}", value)
    for op in OPS:
        figures.add(f"faults.calls_per_script.{op}", counts[op])
    figures.add("faults.failures", 0)
