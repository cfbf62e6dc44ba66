"""runstore.analysis.compare: two runs instance by instance, whatever order they were written in."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest

import runstore
from runstore.analysis.compare import compare_runs, outcome_of

_names = itertools.count()


@pytest.fixture
def store() -> Iterator[runstore.Store]:
    with runstore.open(f"memory://compare-{os.getpid()}-{next(_names)}") as opened:
        yield opened


def write(
    store: runstore.Store,
    run_id: str,
    outcomes: dict[str, Any],
    *,
    order: list[str] | None = None,
    total: int = 100,
) -> None:
    """One run: an instance per key (status, or a boolean 'passed'), each with a step
    and an assertion, appended in ``order``."""
    with store.create_run(run_id, seed=1) as run:
        for instance in order or list(outcomes):
            value = outcomes[instance]
            record: dict[str, Any] = {"instance_id": instance}
            record.update({"passed": value} if isinstance(value, bool) else {"status": value})
            ok = value in (True, "passed")
            run.append(
                "steps",
                {"instance_id": instance, "step_name": "pay", "observation": {"total": total}},
            )
            run.append(
                "assertions",
                {"instance_id": instance, "name": "total", "step_name": "pay", "passed": ok},
            )
            run.append("instances", record)
            run.log("info", f"{instance} done", instance_id=instance)


def test_equal_runs_written_in_another_order_are_identical(store: runstore.Store) -> None:
    outcomes = {f"inst_{n:03d}": "passed" if n % 3 else "failed" for n in range(1, 11)}
    write(store, "run_a", outcomes)
    write(store, "run_b", outcomes, order=sorted(outcomes, reverse=True))
    result = compare_runs(store.get_run("run_a"), store.get_run("run_b"))
    assert result.identical
    assert result.differences == []
    assert result.unchanged == 10
    assert set(result.streams) >= {"instances", "steps", "assertions", "logs"}
    assert all(result.streams.values())


def test_a_passed_instance_that_fails_is_a_regression(store: runstore.Store) -> None:
    write(store, "run_a", {"inst_005": "passed", "inst_006": "passed", "inst_007": "failed"})
    write(store, "run_b", {"inst_005": "passed", "inst_006": "failed", "inst_007": "passed"})
    result = compare_runs(store.get_run("run_a"), store.get_run("run_b"))
    assert [str(c) for c in result.regressions] == ["inst_006: passed -> failed"]
    assert [str(a) for a in result.regressions[0].assertions] == [
        "assertion pay/total: passed -> failed"
    ]
    assert [str(c) for c in result.fixes] == ["inst_007: failed -> passed"]
    assert result.unchanged == 1
    assert not result.identical
    assert result.streams["instances"] is False


def test_an_error_is_a_regression_and_skipped_is_a_change(store: runstore.Store) -> None:
    write(store, "run_a", {"i1": "passed", "i2": "passed"})
    write(store, "run_b", {"i1": "error", "i2": "skipped"})
    result = compare_runs(store.get_run("run_a"), store.get_run("run_b"))
    assert [c.instance_id for c in result.regressions] == ["i1"]
    assert [(c.instance_id, c.status_b) for c in result.changed] == [("i2", "skipped")]


def test_a_boolean_passed_counts_as_the_summary_counts_it(store: runstore.Store) -> None:
    write(store, "run_a", {"i1": True})
    write(store, "run_b", {"i1": False})
    result = compare_runs(store.get_run("run_a"), store.get_run("run_b"))
    assert [str(c) for c in result.regressions] == ["i1: passed -> failed"]
    assert outcome_of({"passed": True}) == "passed"
    assert outcome_of({"status": "weird"}) == "weird"
    assert outcome_of({}) is None


def test_new_and_missing_instances(store: runstore.Store) -> None:
    write(store, "run_a", {"i1": "passed", "i2": "failed"})
    write(store, "run_b", {"i1": "passed", "i3": "passed"})
    result = compare_runs(store.get_run("run_a"), store.get_run("run_b"))
    assert [str(c) for c in result.new] == ["i3: new (passed)"]
    assert [str(c) for c in result.missing] == ["i2: missing (was failed)"]
    assert result.regressions == []


def test_steps_are_compared_field_by_field_on_request(store: runstore.Store) -> None:
    write(store, "run_a", {"i1": "passed"}, total=100)
    write(store, "run_b", {"i1": "passed"}, total=120)
    plain = compare_runs(store.get_run("run_a"), store.get_run("run_b"))
    assert plain.differences == []
    assert plain.streams["steps"] is False
    detailed = compare_runs(store.get_run("run_a"), store.get_run("run_b"), steps=True)
    [change] = detailed.changed
    assert [str(s) for s in change.steps] == ["step 1 pay: observation.total: 100 -> 120"]
    assert change.to_dict()["steps"][0]["fields"] == {"observation.total": {"a": 100, "b": 120}}


def test_to_dict_lists_counts_and_changes(store: runstore.Store) -> None:
    write(store, "run_a", {"i1": "passed"})
    write(store, "run_b", {"i1": "failed"})
    data = compare_runs(store.get_run("run_a"), store.get_run("run_b")).to_dict()
    assert data["counts"] == {
        "regressions": 1,
        "fixes": 0,
        "changed": 0,
        "new": 0,
        "missing": 0,
        "unchanged": 0,
    }
    assert data["regressions"][0]["assertions"] == [
        {"name": "total", "step": "pay", "passed_a": True, "passed_b": False}
    ]
    assert data["identical"] is False
