"""Flaky and slower tests across recorded runs, from the API and the command line."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pytest_runstore.cli import cli
from pytest_runstore.history import broken_since_green, flaky_tests, recent_runs, slower_tests

import runstore

pytest_plugins = ["pytester"]

Outcome = tuple[str, float]  # (outcome, duration_ms)


def _add_run(
    store: runstore.Store,
    tests: dict[str, Outcome],
    *,
    sut: str = "shop",
    branch: str = "main",
    pytest_run: bool = True,
) -> str:
    metadata: dict[str, str] = {"git_branch": branch}
    if pytest_run:
        metadata["pytest"] = pytest.__version__
    with store.create_run(sut_name=sut, metadata=metadata) as run:
        for nodeid, (outcome, duration) in tests.items():
            run.append(
                "instances",
                {
                    "instance_id": nodeid,
                    "nodeid": nodeid,
                    "outcome": outcome,
                    "duration_ms": duration,
                },
            )
    return run.run_id


def _history(store: runstore.Store, *outcomes: Sequence[str], **kwargs: Any) -> None:
    names = ("t.py::a", "t.py::b", "t.py::c")
    for row in outcomes:
        _add_run(store, {n: (o, 1.0) for n, o in zip(names, row, strict=True)}, **kwargs)


def test_a_test_that_goes_back_and_forth_is_flaky_with_its_flips_counted(
    open_store: Callable[[], runstore.Store],
) -> None:
    store = open_store()
    _history(
        store,
        ("passed", "passed", "failed"),
        ("failed", "passed", "failed"),
        ("passed", "skipped", "failed"),
        ("error", "passed", "passed"),
    )
    found = {t.nodeid: t for t in flaky_tests(store)}
    assert set(found) == {"t.py::a", "t.py::c"}  # b's skip is not judged: it never flipped
    assert (found["t.py::a"].flips, found["t.py::a"].failures, found["t.py::a"].history) == (
        3,
        2,
        "PFPE",
    )
    assert found["t.py::c"].flips == 1
    assert [t.nodeid for t in flaky_tests(store, min_flips=2)] == ["t.py::a"]


def test_only_the_last_runs_of_the_suite_count(open_store: Callable[[], runstore.Store]) -> None:
    store = open_store()
    _history(store, ("failed", "passed", "passed"), ("passed", "passed", "passed"))
    _history(store, ("failed", "failed", "failed"), sut="other")
    _history(store, ("passed", "passed", "passed"), ("passed", "passed", "passed"))
    _history(store, ("failed", "failed", "failed"), pytest_run=False)  # not pytest-runstore's
    assert [t.nodeid for t in flaky_tests(store, sut_name="shop", last=4)] == ["t.py::a"]
    assert flaky_tests(store, sut_name="shop", last=3) == []
    assert len(recent_runs(store, sut_name="shop", last=10)) == 4


def test_where_narrows_the_runs(open_store: Callable[[], runstore.Store]) -> None:
    store = open_store()
    _history(store, ("passed", "passed", "passed"), branch="main")
    _history(store, ("failed", "passed", "passed"), branch="feature")
    _history(store, ("passed", "passed", "passed"), branch="main")
    assert [t.nodeid for t in flaky_tests(store)] == ["t.py::a"]
    assert flaky_tests(store, where="metadata.git_branch = 'main'") == []


def test_the_default_suite_is_the_newest_recorded_runs(
    open_store: Callable[[], runstore.Store],
) -> None:
    store = open_store()
    _history(store, ("passed", "passed", "passed"), ("failed", "passed", "passed"), sut="old")
    _history(store, ("passed", "passed", "passed"), ("passed", "failed", "passed"), sut="new")
    assert [t.nodeid for t in flaky_tests(store)] == ["t.py::b"]


def test_slower_tests_compare_the_newest_run_with_the_earlier_median(
    open_store: Callable[[], runstore.Store],
) -> None:
    store = open_store()
    for durations in [(10.0, 5.0, 1.0), (12.0, 5.0, 1.0), (11.0, 5.0, 1.0), (50.0, 4.0, 2.0)]:
        _add_run(store, {n: ("passed", d) for n, d in zip(("a", "b", "c"), durations, strict=True)})
    found = slower_tests(store)
    assert [(t.nodeid, t.latest_ms, t.baseline_ms, t.growth_ms) for t in found] == [
        ("a", 50.0, 11.0, 39.0),
        ("c", 2.0, 1.0, 1.0),
    ]
    assert [t.nodeid for t in slower_tests(store, top=1)] == ["a"]


def _finished(store: runstore.Store, tests: dict[str, str], status: str, **kw: Any) -> str:
    metadata = {"pytest": pytest.__version__, **kw}
    run = store.create_run(sut_name="shop", metadata=metadata)
    for nodeid, outcome in tests.items():
        record = {"instance_id": nodeid, "nodeid": nodeid, "outcome": outcome}
        if outcome in ("failed", "error"):
            record["longrepr"] = f"def {nodeid}():\nE   AssertionError: {nodeid} broke"
        run.append("instances", record)
    run.finish("succeeded" if status == "green" else "failed")
    return run.run_id


def test_broken_lists_what_fails_now_and_passed_in_the_last_green_run(
    open_store: Callable[[], runstore.Store],
) -> None:
    store = open_store()
    _finished(store, {"a": "passed", "b": "passed"}, "green")
    green = _finished(store, {"a": "passed", "b": "passed", "c": "skipped"}, "green")
    _finished(store, {"a": "failed", "b": "passed", "c": "passed"}, "red")
    newest = _finished(store, {"a": "failed", "b": "error", "c": "xfailed", "d": "failed"}, "red")
    found = broken_since_green(store)
    assert found.newest is not None and found.newest.run_id == newest
    assert found.green is not None and found.green.run_id == green
    assert [(t.nodeid, t.outcome, t.before) for t in found.tests] == [
        ("a", "failed", "passed"),
        ("b", "error", "passed"),
        ("d", "failed", None),
    ]
    assert found.tests[0].message == "E   AssertionError: a broke"


def test_nothing_broke_when_the_newest_run_is_green_or_there_is_none(
    open_store: Callable[[], runstore.Store],
) -> None:
    store = open_store()
    assert broken_since_green(store).newest is None
    _finished(store, {"a": "failed"}, "red")
    red_only = broken_since_green(store)
    assert red_only.green is None and [t.nodeid for t in red_only.tests] == ["a"]
    _finished(store, {"a": "passed"}, "green")
    assert broken_since_green(store).tests == []


def test_bad_requests_are_typed_errors(open_store: Callable[[], runstore.Store]) -> None:
    store = open_store()
    with pytest.raises(runstore.InvalidInputError, match="position 1"):
        flaky_tests(store, where="x = 1")
    with pytest.raises(runstore.InvalidInputError, match="last"):
        flaky_tests(store, last=0)


def test_the_command_line_prints_a_table_or_json(
    open_store: Callable[[], runstore.Store], store_path: Path
) -> None:
    _history(open_store(), ("passed", "passed", "passed"), ("failed", "passed", "passed"))
    runner = CliRunner()
    table = runner.invoke(cli, ["flaky", "--store", str(store_path)])
    assert table.exit_code == 0, table.output
    assert table.output.splitlines()[1].split() == ["1", "2", "1", "PF", "t.py::a"]
    as_json = runner.invoke(cli, ["flaky", "--store", str(store_path), "--json"])
    assert [json.loads(line)["nodeid"] for line in as_json.output.splitlines()] == ["t.py::a"]
    slowest = runner.invoke(cli, ["slowest", "--store", str(store_path), "--json"])
    assert slowest.exit_code == 0 and slowest.output == ""
    # t.py::a already failed in the last green run: only t.py::b broke since.
    _finished(open_store(), {"t.py::a": "failed", "t.py::b": "failed"}, "red")
    broke = runner.invoke(cli, ["broken", "--store", str(store_path)])
    assert broke.exit_code == 0, broke.output
    assert broke.output.splitlines()[1].split() == ["failed", "(was", "passed)", "t.py::b"]
    broke_json = json.loads(
        runner.invoke(cli, ["broken", "--store", str(store_path), "--json"]).output
    )
    assert [t["nodeid"] for t in broke_json["tests"]] == ["t.py::b"]
    bad = runner.invoke(cli, ["flaky", "--store", str(store_path), "--where", "nonsense"])
    assert bad.exit_code == 1 and "invalid filter" in bad.output


def test_flaky_finds_a_test_that_flipped_between_two_recorded_sessions(
    pytester: pytest.Pytester, store_path: Path, open_store: Callable[[], runstore.Store]
) -> None:
    pytester.makepyfile(
        test_flip="""
        from pathlib import Path

        def test_flips():
            marker = Path("ran-once")
            first = not marker.exists()
            marker.write_text("x")
            assert first

        def test_steady():
            pass
        """
    )
    for _ in range(2):
        pytester.runpytest(
            "-p", "no:cacheprovider", "-p", "no:hypothesispytest", f"--runstore={store_path}"
        )
    (flaky,) = flaky_tests(open_store())
    assert (flaky.nodeid, flaky.history) == ("test_flip.py::test_flips", "PF")
