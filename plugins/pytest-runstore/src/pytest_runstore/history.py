"""History across recorded sessions: flaky tests and tests that got slower.

Built on runstore's public read API only: the run index picks the recent
runs of one suite (``list_runs`` with ``where`` and ``order_by``), then each
run's ``instances`` stream gives every test's outcome and duration.

A run counts when pytest-runstore recorded it (``metadata.pytest`` is set)
and it finished (``succeeded`` or ``failed``). The suite is the run's
``sut_name`` (the rootdir's name); by default the suite of the newest
recorded run.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from runstore import InvalidInputError
from runstore.model.query import parse_where

if TYPE_CHECKING:
    from runstore import RunRecord, Store

__all__ = [
    "OUTCOME_LETTERS",
    "Breakage",
    "BrokenTest",
    "FlakyTest",
    "SlowerTest",
    "TestHistory",
    "broken_since_green",
    "flaky_tests",
    "load_history",
    "recent_runs",
    "slower_tests",
]

OUTCOME_LETTERS: Final = {
    "passed": "P",
    "failed": "F",
    "error": "E",
    "skipped": "s",
    "xfailed": "x",
    "xpassed": "X",
}
"""One letter per outcome in a history string; ``.``: the test was not in that run."""

_VERDICT: Final = {"passed": "pass", "xpassed": "pass", "failed": "fail", "error": "fail"}
"""Judged outcomes; skipped and xfailed tests say nothing about flakiness."""

_RECORDED: Final = "metadata.pytest IS NOT NULL AND status IN ('succeeded', 'failed')"


@dataclass(frozen=True)
class TestHistory:
    """The outcomes and durations of one test in the runs read, oldest first."""

    __test__ = False

    nodeid: str
    outcomes: tuple[str | None, ...]
    durations_ms: tuple[float | None, ...]

    @property
    def letters(self) -> str:
        """The outcomes as letters (:data:`OUTCOME_LETTERS`), oldest first."""
        return "".join(OUTCOME_LETTERS.get(o, "?") if o else "." for o in self.outcomes)


@dataclass(frozen=True)
class FlakyTest:
    """A test whose verdict (pass or fail) changed between consecutive runs."""

    nodeid: str
    flips: int
    """How many times the verdict changed from one run to the next."""
    judged_runs: int
    """Runs in which the test passed or failed (skips are not judged)."""
    failures: int
    history: str
    """Outcome letters, oldest run first."""


@dataclass(frozen=True)
class SlowerTest:
    """A test whose duration in the newest run grew over its earlier median."""

    nodeid: str
    latest_ms: float
    baseline_ms: float
    """Median duration over the earlier runs that ran it."""
    growth_ms: float


@dataclass(frozen=True)
class BrokenTest:
    """A test that fails in the newest run and passed (or did not exist) in the last green one."""

    nodeid: str
    outcome: str
    """Its outcome in the newest run (``failed`` or ``error``)."""
    before: str | None
    """Its outcome in the last green run; ``None``: it was not there."""
    message: str | None
    """The last line of its failure text, if any."""


@dataclass(frozen=True)
class Breakage:
    """What broke between the last green run and the newest one."""

    newest: RunRecord | None
    """The newest recorded run; ``None`` when there is none."""
    green: RunRecord | None
    """The last ``succeeded`` run before it; ``None`` when there is none."""
    tests: list[BrokenTest]


def recent_runs(
    store: Store, *, sut_name: str | None = None, where: str | None = None, last: int = 10
) -> list[RunRecord]:
    """The last ``last`` finished runs recorded by pytest-runstore of one suite, oldest first.

    ``where`` narrows them further (runstore's filter language); a malformed
    filter raises :class:`runstore.InvalidInputError`.
    """
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise InvalidInputError(f"last must be a positive number of runs, not {last!r}")
    if where:
        parse_where(where)  # its errors point into the caller's filter, not the combined one
    condition = _RECORDED if not where else f"{_RECORDED} AND ({where})"
    if sut_name is None:
        newest = list(store.list_runs(where=condition, order_by="-created_at", limit=1))
        if not newest:
            return []
        sut_name = newest[0].sut_name
    page = store.list_runs(
        sut_name=sut_name, where=condition, order_by=["-created_at", "-run_id"], limit=last
    )
    return list(reversed(list(page)))


def load_history(store: Store, runs: Sequence[RunRecord]) -> list[TestHistory]:
    """Every test seen in ``runs`` with its outcome and duration in each, by node id."""
    seen: dict[str, tuple[list[str | None], list[float | None]]] = {}
    for index, record in enumerate(runs):
        for instance in store.get_run(record.run_id).read("instances", errors="skip"):
            if not isinstance(instance, dict):
                continue
            nodeid = instance.get("nodeid")
            if not isinstance(nodeid, str):
                continue
            outcomes, durations = seen.setdefault(nodeid, ([None] * len(runs), [None] * len(runs)))
            outcome = instance.get("outcome") or instance.get("status")
            outcomes[index] = outcome if isinstance(outcome, str) else None
            duration = instance.get("duration_ms")
            if isinstance(duration, int | float) and not isinstance(duration, bool):
                durations[index] = float(duration)
    return [
        TestHistory(nodeid, tuple(outcomes), tuple(durations))
        for nodeid, (outcomes, durations) in sorted(seen.items())
    ]


def _flips(outcomes: Iterable[str | None]) -> tuple[int, int, int]:
    verdicts = [_VERDICT[o] for o in outcomes if o in _VERDICT]
    flips = sum(1 for a, b in itertools.pairwise(verdicts) if a != b)
    return flips, len(verdicts), verdicts.count("fail")


def flaky_tests(
    store: Store,
    *,
    sut_name: str | None = None,
    where: str | None = None,
    last: int = 10,
    min_flips: int = 1,
) -> list[FlakyTest]:
    """Tests whose verdict flipped at least ``min_flips`` times in the last ``last`` runs.

    Most flips first. A test fixed once flips once: ``min_flips=2`` keeps only
    tests that went back and forth.
    """
    found = []
    for test in load_history(store, recent_runs(store, sut_name=sut_name, where=where, last=last)):
        flips, judged, failures = _flips(test.outcomes)
        if flips >= max(min_flips, 1):
            found.append(FlakyTest(test.nodeid, flips, judged, failures, test.letters))
    found.sort(key=lambda t: (-t.flips, t.nodeid))
    return found


def slower_tests(
    store: Store,
    *,
    sut_name: str | None = None,
    where: str | None = None,
    last: int = 10,
    top: int = 20,
) -> list[SlowerTest]:
    """The ``top`` tests whose duration in the newest run grew most over their earlier median.

    Only tests the newest run ran and at least one earlier run timed count.
    """
    tests = load_history(store, recent_runs(store, sut_name=sut_name, where=where, last=last))
    found = []
    for test in tests:
        *earlier, latest = test.durations_ms
        before = [d for d in earlier if d is not None]
        if latest is None or not before:
            continue
        baseline = statistics.median(before)
        if latest > baseline:
            found.append(SlowerTest(test.nodeid, latest, baseline, round(latest - baseline, 3)))
    found.sort(key=lambda t: (-t.growth_ms, t.nodeid))
    return found[: max(top, 0)]


def broken_since_green(
    store: Store, *, sut_name: str | None = None, where: str | None = None
) -> Breakage:
    """The tests that fail in the newest run and passed in the last green (succeeded) run.

    A failing test the green run did not have counts too (``before`` is ``None``).
    When the newest run is itself green, nothing broke.
    """
    (newest,) = recent_runs(store, sut_name=sut_name, where=where, last=1) or (None,)
    if newest is None:
        return Breakage(None, None, [])
    if newest.status == "succeeded":
        return Breakage(newest, newest, [])
    condition = f"{_RECORDED} AND status = 'succeeded' AND created_at <= '{_iso(newest)}'"
    if where:
        condition = f"{condition} AND ({where})"
    greens = store.list_runs(
        sut_name=newest.sut_name, where=condition, order_by=["-created_at", "-run_id"], limit=1
    )
    green = next(iter(greens), None)
    before: dict[str, str | None] = {}
    if green is not None:
        for instance in _instances(store, green.run_id):
            before[instance["nodeid"]] = instance.get("outcome") or instance.get("status")
    broken = []
    for instance in _instances(store, newest.run_id):
        outcome = instance.get("outcome") or instance.get("status")
        was = before.get(instance["nodeid"])
        if _VERDICT.get(str(outcome)) == "fail" and _VERDICT.get(str(was)) != "fail":
            text = instance.get("longrepr")
            message = (
                text.strip().splitlines()[-1] if isinstance(text, str) and text.strip() else None
            )
            broken.append(BrokenTest(instance["nodeid"], str(outcome), was, message))
    broken.sort(key=lambda t: t.nodeid)
    return Breakage(newest, green, broken)


def _iso(record: RunRecord) -> str:
    return record.created_at.isoformat()


def _instances(store: Store, run_id: str) -> Iterable[dict[str, Any]]:
    for instance in store.get_run(run_id).read("instances", errors="skip"):
        if isinstance(instance, dict) and isinstance(instance.get("nodeid"), str):
            yield instance
