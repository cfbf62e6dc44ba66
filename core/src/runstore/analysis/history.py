"""History across the runs of one suite: flaky instances, slower ones, what broke since green.

A suite is the runs of one ``sut_name``. The run index picks its recent
finished runs (``succeeded`` or ``failed``; ``list_runs`` with ``where`` and
``order_by``), then each run's ``instances`` stream gives every instance's
outcome and duration, paired across runs by ``instance_id``. Whatever wrote
the runs (pytest-runstore, a simulator, your own harness), the instances
only need:

* ``instance_id``;
* a verdict: ``status`` (or a boolean ``passed``, as the summary counts it)
  of ``passed`` (pass) or ``failed``/``error`` (fail); other statuses
  (``skipped``) are not judged;
* optionally ``outcome``, the harness's own finer word (pytest's
  ``xfailed``, say), shown instead of the status, and judged by the same rule
  when there is no status;
* optionally ``duration_ms``.

Pure Python on the public read API: it needs no extra.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from runstore.analysis.compare import outcome_of
from runstore.model.errors import InvalidInputError
from runstore.model.query import parse_where
from runstore.model.run import RunRecord
from runstore.store import Store

__all__ = [
    "FINISHED",
    "OUTCOME_LETTERS",
    "Breakage",
    "BrokenInstance",
    "FlakyInstance",
    "InstanceHistory",
    "SlowerInstance",
    "broken_since_green",
    "flaky_instances",
    "instance_history",
    "recent_runs",
    "slower_instances",
]

OUTCOME_LETTERS: Final = {
    "passed": "P",
    "failed": "F",
    "error": "E",
    "skipped": "s",
    "xfailed": "x",
    "xpassed": "X",
}
"""One letter per outcome in a history string; ``.``: not in that run, ``?``: another outcome."""

FINISHED: Final = "status IN ('succeeded', 'failed')"
"""The runs history reads: finished ones (a running, cancelled or crashed run is partial)."""

Verdict = Literal["pass", "fail"]
_VERDICT: Final[dict[str, Verdict]] = {
    "passed": "pass",
    "xpassed": "pass",
    "failed": "fail",
    "error": "fail",
}
_FAILURE_TEXT: Final = ("longrepr", "traceback", "error")
"""Fields whose last line says why an instance failed (pytest's, ``run.instance``'s)."""


def instance_outcome(record: dict[str, Any]) -> str | None:
    """The outcome shown for an instance record: its ``outcome``, else its status."""
    outcome = record.get("outcome")
    return outcome if isinstance(outcome, str) else outcome_of(record)


def verdict(record: dict[str, Any]) -> Verdict | None:
    """``pass``, ``fail``, or ``None`` for an instance that was not judged (skipped)."""
    judged = outcome_of(record) or instance_outcome(record)
    return None if judged is None else _VERDICT.get(judged)


@dataclass(frozen=True)
class InstanceHistory:
    """One instance across the runs read, oldest first (``None``: not in that run)."""

    instance_id: str
    outcomes: tuple[str | None, ...]
    verdicts: tuple[Verdict | None, ...]
    durations_ms: tuple[float | None, ...]

    @property
    def letters(self) -> str:
        """The outcomes as letters (:data:`OUTCOME_LETTERS`), oldest first."""
        return "".join(OUTCOME_LETTERS.get(o, "?") if o else "." for o in self.outcomes)


@dataclass(frozen=True)
class FlakyInstance:
    """An instance whose verdict (pass or fail) changed between consecutive runs."""

    instance_id: str
    flips: int
    """How many times the verdict changed from one run to the next."""
    judged_runs: int
    """Runs in which the instance passed or failed (skips are not judged)."""
    failures: int
    history: str
    """Outcome letters (:data:`OUTCOME_LETTERS`), oldest run first."""


@dataclass(frozen=True)
class SlowerInstance:
    """An instance whose duration in the newest run grew over its earlier median."""

    instance_id: str
    latest_ms: float
    baseline_ms: float
    """Median duration over the earlier runs that timed it."""
    growth_ms: float


@dataclass(frozen=True)
class BrokenInstance:
    """An instance that fails in the newest run and did not in the last green one."""

    instance_id: str
    outcome: str
    """Its outcome in the newest run (``failed``, ``error``, or the harness's word)."""
    before: str | None
    """Its outcome in the last green run; ``None``: it was not there."""
    message: str | None
    """The last line of its failure text (``longrepr``, ``traceback`` or ``error``), if any."""


@dataclass(frozen=True)
class Breakage:
    """What broke between the last green run and the newest one."""

    newest: RunRecord | None
    """The newest run read; ``None`` when there is none."""
    green: RunRecord | None
    """The last ``succeeded`` run before it; ``None`` when there is none."""
    instances: list[BrokenInstance]


def _condition(*parts: str | None) -> str:
    return " AND ".join(f"({part})" for part in parts if part)


def recent_runs(
    store: Store, *, sut_name: str | None = None, where: str | None = None, last: int = 10
) -> list[RunRecord]:
    """The last ``last`` finished runs of one suite, oldest first.

    The suite is ``sut_name``, else the newest finished run's (among those
    ``where`` keeps). ``where`` narrows the runs (the filter language of
    ``list_runs``); a malformed filter or a ``last`` below 1 raises
    :class:`runstore.InvalidInputError`.
    """
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise InvalidInputError(f"last must be a positive number of runs, not {last!r}")
    if where:
        parse_where(where)  # its errors point into the caller's filter, not the combined one
    condition = _condition(FINISHED, where)
    if sut_name is None:
        newest = list(store.list_runs(where=condition, order_by="-created_at", limit=1))
        if not newest:
            return []
        sut_name = newest[0].sut_name
    page = store.list_runs(
        sut_name=sut_name, where=condition, order_by=["-created_at", "-run_id"], limit=last
    )
    return list(reversed(list(page)))


def _chosen(
    store: Store,
    runs: Sequence[RunRecord] | None,
    sut_name: str | None,
    where: str | None,
    last: int,
) -> Sequence[RunRecord]:
    if runs is None:
        return recent_runs(store, sut_name=sut_name, where=where, last=last)
    if sut_name is not None or where is not None:
        raise InvalidInputError("give either runs or sut_name and where, not both")
    return runs


def _instances(store: Store, run_id: str) -> Iterable[dict[str, Any]]:
    """The run's instance records that have an id (the last record of an id counts)."""
    for record in store.get_run(run_id).read("instances", errors="skip"):
        if isinstance(record, dict) and isinstance(record.get("instance_id"), str):
            yield record


def instance_history(store: Store, runs: Sequence[RunRecord]) -> list[InstanceHistory]:
    """Every instance seen in ``runs`` with its outcome and duration in each, by id."""
    width = len(runs)
    seen: dict[str, tuple[list[str | None], list[Verdict | None], list[float | None]]] = {}
    for index, run in enumerate(runs):
        for record in _instances(store, run.run_id):
            outcomes, verdicts, durations = seen.setdefault(
                record["instance_id"], ([None] * width, [None] * width, [None] * width)
            )
            outcomes[index], verdicts[index] = instance_outcome(record), verdict(record)
            duration = record.get("duration_ms")
            if isinstance(duration, int | float) and not isinstance(duration, bool):
                durations[index] = float(duration)
    return [
        InstanceHistory(instance_id, tuple(outcomes), tuple(verdicts), tuple(durations))
        for instance_id, (outcomes, verdicts, durations) in sorted(seen.items())
    ]


def flaky_instances(
    store: Store,
    *,
    sut_name: str | None = None,
    where: str | None = None,
    last: int = 10,
    min_flips: int = 1,
    runs: Sequence[RunRecord] | None = None,
) -> list[FlakyInstance]:
    """Instances whose verdict flipped at least ``min_flips`` times in the last ``last`` runs.

    Most flips first. An instance fixed once flips once: ``min_flips=2`` keeps
    only those that went back and forth. The runs are :func:`recent_runs`'s,
    or ``runs`` (oldest first) when given.
    """
    found = []
    for item in instance_history(store, _chosen(store, runs, sut_name, where, last)):
        verdicts = [v for v in item.verdicts if v is not None]
        flips = sum(1 for a, b in itertools.pairwise(verdicts) if a != b)
        if flips >= max(min_flips, 1):
            found.append(
                FlakyInstance(
                    item.instance_id, flips, len(verdicts), verdicts.count("fail"), item.letters
                )
            )
    found.sort(key=lambda f: (-f.flips, f.instance_id))
    return found


def slower_instances(
    store: Store,
    *,
    sut_name: str | None = None,
    where: str | None = None,
    last: int = 10,
    top: int = 20,
    runs: Sequence[RunRecord] | None = None,
) -> list[SlowerInstance]:
    """The ``top`` instances whose duration in the newest run grew most over their earlier median.

    Only instances the newest run timed and at least one earlier run timed
    count. The runs are :func:`recent_runs`'s, or ``runs`` (oldest first)
    when given.
    """
    found = []
    for item in instance_history(store, _chosen(store, runs, sut_name, where, last)):
        *earlier, latest = item.durations_ms
        before = [d for d in earlier if d is not None]
        if latest is None or not before:
            continue
        baseline = statistics.median(before)
        if latest > baseline:
            found.append(
                SlowerInstance(item.instance_id, latest, baseline, round(latest - baseline, 3))
            )
    found.sort(key=lambda s: (-s.growth_ms, s.instance_id))
    return found[: max(top, 0)]


def _failure_line(record: dict[str, Any]) -> str | None:
    for key in _FAILURE_TEXT:
        text = record.get(key)
        if isinstance(text, str) and text.strip():
            return text.strip().splitlines()[-1]
    return None


def broken_since_green(
    store: Store, *, sut_name: str | None = None, where: str | None = None
) -> Breakage:
    """The instances that fail in the newest run and did not in the last green run.

    The newest run is :func:`recent_runs`'s newest; the green run is the last
    ``succeeded`` run of the same suite (and ``where``) created before it. A
    failing instance the green run did not have counts too (``before`` is
    ``None``). When the newest run is itself green, nothing broke.
    """
    (newest,) = recent_runs(store, sut_name=sut_name, where=where, last=1) or (None,)
    if newest is None:
        return Breakage(None, None, [])
    if newest.status == "succeeded":
        return Breakage(newest, newest, [])
    since = f"status = 'succeeded' AND created_at <= '{newest.created_at.isoformat()}'"
    greens = store.list_runs(
        sut_name=newest.sut_name,
        where=_condition(since, where),
        order_by=["-created_at", "-run_id"],
        limit=1,
    )
    green = next(iter(greens), None)
    before: dict[str, dict[str, Any]] = {}
    if green is not None:
        before = {record["instance_id"]: record for record in _instances(store, green.run_id)}
    latest = {record["instance_id"]: record for record in _instances(store, newest.run_id)}
    broken = []
    for record in latest.values():
        was = before.get(record["instance_id"])
        if verdict(record) == "fail" and (was is None or verdict(was) != "fail"):
            broken.append(
                BrokenInstance(
                    record["instance_id"],
                    instance_outcome(record) or "failed",
                    None if was is None else instance_outcome(was),
                    _failure_line(record),
                )
            )
    broken.sort(key=lambda b: b.instance_id)
    return Breakage(newest, green, broken)
