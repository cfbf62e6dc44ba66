"""S3 faults: the server stopped and restarted mid-run, slow answers, 5xx bursts, drops.

The faults come from real components: moto's server is stopped and started
again on its port, and a small HTTP proxy between the S3 client and moto
(``s3proxy.py``) delays requests, answers ``503 SlowDown`` in bursts, drops
connections before forwarding a request, or forwards it and then drops the
connection, so that a write happened and the client never heard so.

Every step of a scripted run (create, appends with ``durability="record"``,
a small and a multipart artifact, a phase, finish, read back) meets each
fault at every request N of the run. What must hold:

* a fault the retries absorb is invisible; one they do not is a typed
  ``RunstoreError`` (``BackendUnavailableError``), never a raw botocore or
  aiohttp exception;
* a retried write that had already landed is recognised, not duplicated;
* once the fault is gone, the same call on the same objects works, and the
  run ends exact: every acknowledged record once and in order, artifacts
  verified, ``verify_run`` clean, every JSON object parseable.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import pytest
from harness import Figures, Scale, walk_s3
from s3proxy import DELAY, DROP, DROP_AFTER, FAIL, PASS, SLOW_ANSWER, Action, FaultProxy

import runstore
from runstore.model.errors import BackendUnavailableError, RunstoreError
from runstore.ops.maintenance import verify_run
from runstore_fsspec.testing import S3Server

pytestmark = pytest.mark.s3

RETRIES: Final = 3
READ_TIMEOUT: Final = 2.0
PART: Final = 5 << 20
BIG: Final = bytes(range(256)) * ((PART + (1 << 20)) // 256)  # two parts
SMALL: Final = b'{"request": "GET /checkout"}'


def url_for(s3: S3Server, endpoint: str, prefix: str) -> str:
    return s3.url(
        prefix,
        endpoint_url=endpoint,
        retries=RETRIES,
        connect_timeout=1,
        read_timeout=READ_TIMEOUT,
        part_size=PART,
    )


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[FaultProxy]:
    server = FaultProxy((s3.host, s3.port))
    server.start()
    yield server
    server.stop()


def record(seq: int) -> dict[str, Any]:
    return {"seq": seq, "pad": "p" * (seq * 53 % 700)}


# -- the scripted run -------------------------------------------------------------------------

RUN = "run_s3"


@dataclass
class Script:
    url: str
    store: runstore.Store | None = None
    run: runstore.Run | None = None
    acked: int = 0
    untyped: list[str] = field(default_factory=list)

    def _run(self) -> runstore.Run:
        assert self.run is not None
        return self.run

    def _store(self) -> runstore.Store:
        assert self.store is not None
        return self.store

    def open(self) -> None:
        self.store = runstore.open(self.url, durability="record", heartbeat_interval=0)

    def create(self) -> None:
        self.run = self._store().create_run(run_id=RUN, sut_name="s3-faults")

    def append(self, seq: int) -> None:
        # a failed append may still be stored (the record stays buffered): check first
        stored = len(list(self._store().get_run(RUN).read("steps")))
        if stored <= seq:
            self._run().append("steps", record(seq))
        self.acked = seq + 1

    def steps(self) -> list[tuple[str, Callable[[], object]]]:
        return [
            ("open", self.open),
            ("create_run", self.create),
            ("append 0", lambda: self.append(0)),
            ("append 1", lambda: self.append(1)),
            ("put_artifact small", lambda: self._run().put_artifact("i1/request.json", SMALL)),
            ("set_phase", lambda: self._run().set_phase("work", completed=1)),
            ("append 2", lambda: self.append(2)),
            ("put_artifact multipart", lambda: self._run().put_artifact("i1/big.bin", BIG)),
            ("append 3", lambda: self.append(3)),
            ("finish", lambda: self._run().finish()),
            ("close", lambda: self._store().close()),
        ]


def check_run(url: str, s3: S3Server, prefix: str, *, records: int) -> None:
    with runstore.open(url, heartbeat_interval=0) as store:
        view = store.get_run(RUN)
        assert [r["seq"] for r in view.read("steps")] == list(range(records))
        assert list(view.read("steps")) == [record(n) for n in range(records)]
        refs = [line["name"] for line in view.read("artifacts")]
        assert sorted(refs) == ["i1/big.bin", "i1/request.json"], refs
        assert view.read_artifact("i1/request.json", verify=True) == SMALL
        assert view.read_artifact("i1/big.bin", verify=True) == BIG
        assert view.state.status == "succeeded"
        assert store.portal.call(verify_run(store.aio, RUN)) == []
        assert [r.status for r in store.list_runs()] == ["succeeded"]
    walk = walk_s3(s3, prefix)
    assert walk.problems == [] and walk.torn_tails == {}, walk


@dataclass
class Outcome:
    raised: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    faults: int = 0


def run_script(url: str, s3: S3Server, prefix: str, proxy: FaultProxy) -> Outcome:
    """The scripted run with the proxy's current policy; a failed step is retried clean."""
    outcome = Outcome()
    script = Script(url)
    faulty = proxy.policy
    proxy.reset(faulty)
    try:
        for name, step in script.steps():
            failure: Exception | None = None
            try:
                step()
            except Exception as exc:
                failure = exc
            if failure is None:
                continue
            assert isinstance(failure, RunstoreError), f"{name}: untyped {failure!r}"
            assert isinstance(failure, BackendUnavailableError), f"{name}: {failure!r}"
            outcome.raised.append(name)
            outcome.errors[type(failure).__name__] += 1
            proxy.policy = lambda n, method, path: Action()
            try:
                step()  # the fault is gone: the same call on the same objects works
            except Exception as exc:
                raise AssertionError(
                    f"{name} failed again once the fault was gone: {exc!r}"
                ) from exc
            proxy.policy = faulty
        outcome.requests, outcome.faults = proxy.counts["requests"], proxy.faults
        proxy.policy = lambda n, method, path: Action()
        check_run(url, s3, prefix, records=4)
    finally:
        proxy.policy = lambda n, method, path: Action()
        if script.store is not None:
            try:
                script.store.close()  # releases the S3 session when the script failed
            except Exception:
                pass
    return outcome


def at(numbers: set[int], action: Action) -> Callable[[int, str, str], Action]:
    return lambda n, method, path: action if n in numbers else Action()


FAULTS: Final = {
    "drop after forwarding": lambda n: at({n}, Action(DROP_AFTER)),
    "drop before forwarding": lambda n: at({n}, Action(DROP)),
    "503 burst the retries absorb": lambda n: at(set(range(n, n + RETRIES - 1)), Action(FAIL)),
    "503 burst longer than the retries": lambda n: at(set(range(n, n + 2 * RETRIES)), Action(FAIL)),
    "answer slower than the read timeout": lambda n: at({n}, Action(SLOW_ANSWER, READ_TIMEOUT + 1)),
}


def request_numbers(count: int, scale: Scale) -> list[int]:
    if scale.long:
        return list(range(1, count + 1))
    return random.Random(count).sample(range(1, count + 1), 1)


def test_a_fault_at_every_request_is_absorbed_or_typed_and_loses_nothing(
    s3: S3Server, proxy: FaultProxy, scale: Scale, figures: Figures
) -> None:
    count = run_script(url_for(s3, proxy.endpoint, "count"), s3, "count/", proxy).requests
    assert count > 30
    cases = 0
    totals: Counter[str] = Counter()
    failed: list[str] = []  # every case runs; the failures are listed together at the end
    for (kind, make), n in itertools.product(FAULTS.items(), request_numbers(count, scale)):
        prefix = f"case{cases}"
        cases += 1
        proxy.policy = make(n)
        try:
            outcome = run_script(url_for(s3, proxy.endpoint, prefix), s3, f"{prefix}/", proxy)
            assert outcome.faults, "the fault never met a request"
            if kind == "503 burst the retries absorb":
                assert outcome.raised == [], f"not absorbed: {outcome}"
            if kind == "503 burst longer than the retries":
                assert outcome.raised, "went unnoticed"
        except AssertionError as exc:
            failed.append(f"{kind} at request {n}: {str(exc).splitlines()[0]}")
            continue
        totals["faults"] += outcome.faults
        totals["typed_errors"] += sum(outcome.errors.values())
    figures.add("s3_faults.requests_per_script", count)
    figures.add("s3_faults.scripted_cases", cases)
    figures.add("s3_faults.typed_errors", totals["typed_errors"])
    figures.add("s3_faults.faults_injected", totals["faults"])
    figures.add("s3_faults.failures", len(failed))
    assert failed == []


# -- outages, slowness, chaos ---------------------------------------------------------------


@dataclass
class Ledger:
    acked: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def attempt(self, seq: int, action: Callable[[], object]) -> None:
        try:
            action()
        except RunstoreError as exc:
            self.failed.append(seq)
            self.errors[type(exc).__name__] += 1
        else:
            self.acked.append(seq)

    def check(self, stored: list[int]) -> None:
        assert stored == sorted(set(stored)), "a record is stored twice or out of order"
        assert set(self.acked) <= set(stored), f"lost: {sorted(set(self.acked) - set(stored))}"
        assert set(stored) <= set(self.acked) | set(self.failed)


def finish_when_back(run: runstore.Run, deadline: float = 120.0) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            run.finish()
            return
        except BackendUnavailableError:
            if time.monotonic() > end:
                raise
            time.sleep(0.5)


def test_server_stopped_and_restarted_mid_run_loses_no_acknowledged_record(
    s3: S3Server, scale: Scale, figures: Figures
) -> None:
    url = url_for(s3, s3.endpoint, "outage")
    ledger = Ledger()
    seq = itertools.count()
    with runstore.open(url, durability="record", heartbeat_interval=0.2) as store:
        run = store.create_run(run_id="run_outage")
        for _ in range(10):
            n = next(seq)
            ledger.attempt(n, lambda n=n: run.append("steps", record(n)))  # type: ignore[misc]
        assert ledger.failed == []
        for outage in range(scale.outages):
            s3.stop()
            for _ in range(2):
                n = next(seq)
                started = time.monotonic()
                ledger.attempt(n, lambda n=n: run.append("steps", record(n)))  # type: ignore[misc]
                assert time.monotonic() - started < 60, "an outage must fail fast, typed"
            with pytest.raises(BackendUnavailableError):
                run.put_artifact(f"outage{outage}.bin", b"during the outage")
            s3.start()
            for _ in range(5):
                n = next(seq)
                ledger.attempt(n, lambda n=n: run.append("steps", record(n)))  # type: ignore[misc]
            run.put_artifact(f"outage{outage}.bin", b"during the outage")
        finish_when_back(run)
        view = store.get_run("run_outage")
        ledger.check([r["seq"] for r in view.read("steps")])
        assert len(view.artifacts()) == scale.outages
        assert store.portal.call(verify_run(store.aio, "run_outage")) == []
    assert ledger.failed, "the outage must have been seen"
    assert set(ledger.errors) == {"BackendUnavailableError"}
    figures.add("s3_faults.server_restarts", scale.outages)
    figures.add("s3_faults.outage_acknowledged_records", len(ledger.acked))
    figures.add("s3_faults.outage_failed_appends", len(ledger.failed))


def test_slow_answers_below_the_timeout_only_slow_the_run_down(
    s3: S3Server, proxy: FaultProxy, figures: Figures
) -> None:
    proxy.policy = lambda n, method, path: Action(DELAY, 0.02 + (n % 5) * 0.03)
    before = proxy.counts["requests"]
    run_script(url_for(s3, proxy.endpoint, "slow"), s3, "slow/", proxy)
    figures.add("s3_faults.slow_requests", proxy.counts["requests"] - before)


def test_random_faults_on_a_long_run_lose_no_acknowledged_record(
    s3: S3Server, proxy: FaultProxy, scale: Scale, figures: Figures
) -> None:
    rng = random.Random("chaos")

    def chaos(n: int, method: str, path: str) -> Action:
        roll = rng.random()
        if roll < 0.06:
            return Action(FAIL)
        if roll < 0.09:
            return Action(DROP)
        if roll < 0.12:
            return Action(DROP_AFTER)
        if roll < 0.13:
            return Action(SLOW_ANSWER, READ_TIMEOUT + 0.5)
        if roll < 0.20:
            return Action(DELAY, rng.random() / 5)
        return Action(PASS)

    url = url_for(s3, proxy.endpoint, "chaos")
    ledger, artifacts = Ledger(), Ledger()
    operations = 60 if not scale.long else 10 * scale.trials
    with runstore.open(url, durability="record", heartbeat_interval=0.3) as store:
        run = store.create_run(run_id="run_chaos")
        proxy.policy = chaos
        for n in range(operations):
            if n % 10 == 9:
                data = f"artifact {n}".encode()
                artifacts.attempt(n, lambda n=n, d=data: run.put_artifact(f"a/{n}.txt", d))  # type: ignore[misc]
            else:
                ledger.attempt(n, lambda n=n: run.append("steps", record(n)))  # type: ignore[misc]
        proxy.policy = lambda n, method, path: Action()
        finish_when_back(run)
        view = store.get_run("run_chaos")
        ledger.check([r["seq"] for r in view.read("steps")])
        stored = {int(ref.name.split("/")[1].split(".")[0]) for ref in view.artifacts()}
        assert set(artifacts.acked) <= stored
        assert store.portal.call(verify_run(store.aio, "run_chaos")) == []
    walk = walk_s3(s3, "chaos/")
    assert walk.problems == [], walk.problems
    faults = sum(proxy.counts[k] for k in (FAIL, DROP, DROP_AFTER, SLOW_ANSWER))
    figures.add("s3_faults.chaos_requests", proxy.counts["requests"])
    figures.add("s3_faults.chaos_faults_injected", faults)
    figures.add("s3_faults.chaos_acknowledged_records", len(ledger.acked))
    figures.add("s3_faults.chaos_typed_errors", sum(ledger.errors.values()))
    figures.add("s3_faults.acknowledged_records_lost", 0)
