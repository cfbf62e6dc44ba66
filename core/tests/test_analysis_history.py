"""runstore.analysis.history: flaky, slower and broken instances across the runs of one suite."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import runstore
from runstore.analysis import (
    broken_since_green,
    flaky_instances,
    instance_history,
    recent_runs,
    slower_instances,
)
from runstore.model.run import RunStatus

_names = itertools.count()


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[runstore.Store]:
    url = (
        f"memory://history-{os.getpid()}-{next(_names)}"
        if request.param == "memory"
        else str(tmp_path / "runs")
    )
    with runstore.open(url) as opened:
        yield opened


def add_run(
    store: runstore.Store,
    instances: dict[str, Any],
    *,
    sut: str = "shop",
    status: RunStatus = "succeeded",
    **metadata: str,
) -> str:
    """A finished run: one instance per key, its value a status or a full record."""
    run = store.create_run(sut_name=sut, metadata=metadata)
    for instance_id, value in instances.items():
        record = value if isinstance(value, dict) else {"status": value}
        run.append("instances", {"instance_id": instance_id, **record})
    run.finish(status)
    return run.run_id


def add_runs(store: runstore.Store, *rows: Sequence[str], **options: Any) -> None:
    for row in rows:
        add_run(store, dict(zip(("a", "b", "c"), row, strict=True)), **options)


def test_an_instance_that_goes_back_and_forth_is_flaky_with_its_flips_counted(
    store: runstore.Store,
) -> None:
    add_runs(
        store,
        ("passed", "passed", "failed"),
        ("failed", "passed", "failed"),
        ("passed", "skipped", "failed"),
        ("error", "passed", "passed"),
    )
    found = {f.instance_id: f for f in flaky_instances(store)}
    assert set(found) == {"a", "c"}  # b's skip is not judged: it never flipped
    assert (found["a"].flips, found["a"].judged_runs, found["a"].failures) == (3, 4, 2)
    assert found["a"].history == "PFPE"
    assert found["c"].flips == 1
    assert [f.instance_id for f in flaky_instances(store, min_flips=2)] == ["a"]


def test_a_boolean_passed_is_judged_like_a_status(store: runstore.Store) -> None:
    for passed in (True, False, True):
        add_run(store, {"a": {"passed": passed}})
    (flaky,) = flaky_instances(store)
    assert (flaky.instance_id, flaky.flips, flaky.history) == ("a", 2, "PFP")


def test_a_harness_outcome_is_shown_and_its_status_judges(store: runstore.Store) -> None:
    add_run(store, {"a": {"status": "skipped", "outcome": "xfailed"}, "b": "passed"})
    add_run(store, {"a": {"status": "passed", "outcome": "xpassed"}, "b": "failed"})
    add_run(store, {"a": {"status": "failed", "outcome": "timeout"}})
    (history_a, history_b) = instance_history(store, recent_runs(store))
    assert (history_a.letters, history_a.verdicts) == ("xX?", (None, "pass", "fail"))
    assert history_b.letters == "PF."
    assert [(f.instance_id, f.flips) for f in flaky_instances(store)] == [("a", 1), ("b", 1)]


def test_only_the_last_finished_runs_of_the_suite_count(store: runstore.Store) -> None:
    add_runs(store, ("failed", "passed", "passed"), ("passed", "passed", "passed"))
    add_runs(store, ("failed", "failed", "failed"), sut="other")
    add_runs(store, ("passed", "passed", "passed"), ("passed", "passed", "passed"))
    cancelled = add_run(store, {"a": "failed"}, status="cancelled")
    unfinished = store.create_run(sut_name="shop")
    unfinished.append("instances", {"instance_id": "a", "status": "failed"})
    runs = recent_runs(store, sut_name="shop", last=10)
    assert len(runs) == 4 and cancelled not in [r.run_id for r in runs]
    assert [f.instance_id for f in flaky_instances(store, sut_name="shop", last=4)] == ["a"]
    assert flaky_instances(store, sut_name="shop", last=3) == []
    unfinished.finish()


def test_where_narrows_the_runs(store: runstore.Store) -> None:
    add_runs(store, ("passed", "passed", "passed"), branch="main")
    add_runs(store, ("failed", "passed", "passed"), branch="feature")
    add_runs(store, ("passed", "passed", "passed"), branch="main")
    assert [f.instance_id for f in flaky_instances(store)] == ["a"]
    assert flaky_instances(store, where="metadata.branch = 'main'") == []


def test_the_default_suite_is_the_newest_finished_runs(store: runstore.Store) -> None:
    add_runs(store, ("passed", "passed", "passed"), ("failed", "passed", "passed"), sut="old")
    add_runs(store, ("passed", "passed", "passed"), ("passed", "failed", "passed"), sut="new")
    assert [f.instance_id for f in flaky_instances(store)] == ["b"]


def test_runs_may_be_chosen_by_the_caller(store: runstore.Store) -> None:
    add_runs(store, ("passed", "passed", "passed"), ("failed", "passed", "passed"))
    add_runs(store, ("passed", "passed", "passed"), sut="other")
    chosen = [*recent_runs(store, sut_name="shop"), *recent_runs(store, sut_name="other")]
    assert [(f.instance_id, f.history) for f in flaky_instances(store, runs=chosen)] == [
        ("a", "PFP")
    ]


def test_slower_instances_compare_the_newest_run_with_the_earlier_median(
    store: runstore.Store,
) -> None:
    for durations in [(10.0, 5.0, 1.0), (12.0, 5.0, 1.0), (11.0, 5.0, 1.0), (50.0, 4.0, 2.0)]:
        add_run(
            store,
            {
                name: {"status": "passed", "duration_ms": d}
                for name, d in zip(("a", "b", "c"), durations, strict=True)
            },
        )
    add_run(store, {"a": "passed"}, sut="other")  # untimed, another suite
    found = slower_instances(store, sut_name="shop")
    assert [(s.instance_id, s.latest_ms, s.baseline_ms, s.growth_ms) for s in found] == [
        ("a", 50.0, 11.0, 39.0),
        ("c", 2.0, 1.0, 1.0),
    ]
    assert [s.instance_id for s in slower_instances(store, sut_name="shop", top=1)] == ["a"]
    assert slower_instances(store) == []  # the newest run timed nothing


def test_broken_lists_what_fails_now_and_did_not_in_the_last_green_run(
    store: runstore.Store,
) -> None:
    add_run(store, {"a": "passed", "b": "passed"})
    green = add_run(store, {"a": "passed", "b": "passed", "c": "skipped"})
    add_run(store, {"a": "failed", "b": "passed", "c": "passed"}, status="failed")
    newest = store.create_run(sut_name="shop")
    newest.append("instances", {"instance_id": "a", "status": "failed", "longrepr": "x\nE  no"})
    newest.append("instances", {"instance_id": "b", "status": "passed"})
    try:
        with newest.instance("b"):  # the last record of an instance counts
            raise TimeoutError("checkout did not answer")
    except TimeoutError:
        pass
    newest.append("instances", {"instance_id": "c", "status": "failed"})
    newest.append("instances", {"instance_id": "d", "status": "error", "error": "gone"})
    newest.finish("failed")
    found = broken_since_green(store)
    assert found.newest is not None and found.newest.run_id == newest.run_id
    assert found.green is not None and found.green.run_id == green
    assert [(b.instance_id, b.outcome, b.before, b.message) for b in found.instances] == [
        ("a", "failed", "passed", "E  no"),
        ("b", "error", "passed", "TimeoutError: checkout did not answer"),
        ("c", "failed", "skipped", None),
        ("d", "error", None, "gone"),
    ]


def test_nothing_broke_when_the_newest_run_is_green_or_there_is_none(
    store: runstore.Store,
) -> None:
    assert broken_since_green(store).newest is None
    add_run(store, {"a": "failed"}, status="failed")
    red_only = broken_since_green(store)
    assert red_only.green is None and [b.instance_id for b in red_only.instances] == ["a"]
    add_run(store, {"a": "passed"})
    assert broken_since_green(store).instances == []


def test_bad_requests_are_typed_errors(store: runstore.Store) -> None:
    with pytest.raises(runstore.InvalidInputError, match="position 1"):
        flaky_instances(store, where="x = 1")
    with pytest.raises(runstore.InvalidInputError, match="last"):
        slower_instances(store, last=0)
    with pytest.raises(runstore.InvalidInputError, match="either runs"):
        flaky_instances(store, runs=[], sut_name="shop")
