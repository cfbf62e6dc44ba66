"""Flaky, slower and broken tests across recorded runs, from the API and the command line.

pytest_runstore.history is runstore.analysis.history (tested in core) for the
runs this plugin recorded, with tests named by node id: what is tested here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pytest_runstore.history import (
    RECORDED,
    broken_since_green,
    flaky_tests,
    load_history,
    recent_runs,
    slower_tests,
)
from pytest_runstore.nodeids import encode_nodeid

import runstore
from runstore.cli.app import cli

pytest_plugins = ["pytester"]

Outcome = tuple[str, float]  # (outcome, duration_ms)


def _add_run(
    store: runstore.Store,
    tests: dict[str, Outcome],
    *,
    sut: str = "shop",
    pytest_run: bool = True,
) -> str:
    metadata = {"pytest": pytest.__version__} if pytest_run else {}
    with store.create_run(sut_name=sut, metadata=metadata) as run:
        for nodeid, (outcome, duration) in tests.items():
            run.append(
                "instances",
                {
                    "instance_id": encode_nodeid(nodeid),
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


def test_tests_are_named_by_their_decoded_node_id(
    open_store: Callable[[], runstore.Store],
) -> None:
    store = open_store()
    nodeid = "tests/t.py::test_total[eur/usd]"
    long = "tests/t.py::test_" + "x" * 300  # shortened with a digest: the id names it
    for outcome, duration in (("passed", 1.0), ("failed", 1.0), ("passed", 5.0)):
        _add_run(store, {nodeid: (outcome, duration), long: (outcome, duration)})
    assert "~~" in encode_nodeid(long)
    expected = sorted([nodeid, encode_nodeid(long)])
    assert sorted(t.nodeid for t in flaky_tests(store)) == expected
    assert sorted(t.nodeid for t in slower_tests(store)) == expected
    assert sorted(t.nodeid for t in load_history(store, recent_runs(store))) == expected
    assert {t.letters for t in load_history(store, recent_runs(store))} == {"PFP"}


def test_only_the_last_runs_of_the_suite_count(open_store: Callable[[], runstore.Store]) -> None:
    store = open_store()
    _history(store, ("failed", "passed", "passed"), ("passed", "passed", "passed"))
    _history(store, ("failed", "failed", "failed"), sut="other")
    _history(store, ("passed", "passed", "passed"), ("passed", "passed", "passed"))
    _history(store, ("failed", "failed", "failed"), pytest_run=False)  # not pytest-runstore's
    assert [t.nodeid for t in flaky_tests(store, sut_name="shop", last=4)] == ["t.py::a"]
    assert flaky_tests(store, sut_name="shop", last=3) == []
    assert len(recent_runs(store, sut_name="shop", last=10)) == 4


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


def test_bad_requests_are_typed_errors(open_store: Callable[[], runstore.Store]) -> None:
    store = open_store()
    with pytest.raises(runstore.InvalidInputError, match="position 1"):
        flaky_tests(store, where="x = 1")
    with pytest.raises(runstore.InvalidInputError, match="last"):
        flaky_tests(store, last=0)


def test_runstore_flaky_and_broken_read_the_recorded_sessions(
    open_store: Callable[[], runstore.Store], store_path: Path
) -> None:
    _history(open_store(), ("passed", "passed", "passed"), ("failed", "passed", "passed"))
    _history(open_store(), ("failed", "failed", "failed"), pytest_run=False)  # not recorded
    runner = CliRunner()
    store = ["--store", str(store_path), "--where", RECORDED]
    table = runner.invoke(cli, ["flaky", *store])
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[1].split() == ["1", "2", "1", "PF", "t.py::a"]
    as_json = json.loads(runner.invoke(cli, ["flaky", *store, "--json"]).stdout)
    assert [row["instance_id"] for row in as_json["instances"]] == ["t.py::a"]
    # t.py::a already failed in the last green run: only t.py::b broke since.
    _finished(open_store(), {"t.py::a": "failed", "t.py::b": "failed"}, "red")
    broke = runner.invoke(cli, ["broken", *store])
    assert broke.exit_code == 1, broke.output
    assert broke.stdout.splitlines()[1].split() == ["failed", "(was", "passed)", "t.py::b"]
    assert broke.stdout.splitlines()[2].strip() == "E   AssertionError: t.py::b broke"


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
