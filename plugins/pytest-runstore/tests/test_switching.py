"""When the plugin records, when it stays idle, and what it does when storage fails."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

import runstore
from runstore.model.run import utcnow
from runstore.ops.maintenance import recover_runs

pytest_plugins = ["pytester"]

INNER_ARGS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-W", "error")


def _runs(path: Path) -> list[str]:
    if not path.exists():
        return []
    with runstore.open(str(path)) as store:
        return [r.run_id for r in store.list_runs()]


def test_installed_but_off_it_imports_nothing_and_registers_no_per_test_hook(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(
        """
        import sys

        def pytest_sessionfinish(session):
            pm = session.config.pluginmanager
            names = {getattr(p, "__name__", "") for p in pm.get_plugins()}
            assert "pytest_runstore.plugin" in names, "the plugin was not loaded"
            assert pm.get_plugin("runstore-recorder") is None
            assert pm.get_plugin("runstore-capture") is None
            heavy = ("runstore", "pytest_runstore.recorder")
            print("IMPORTED:", sorted(m for m in heavy if m in sys.modules))
        """
    )
    pytester.makepyfile("def test_one(): pass\n")
    # Only this plugin: other installed plugins may import runstore themselves.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess(*INNER_ARGS, "-p", "pytest_runstore.plugin", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*IMPORTED: []*"])
    assert not any(line.startswith("runstore:") for line in result.outlines)


def test_runstore_url_alone_does_not_switch_recording_on(
    pytester: pytest.Pytester, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNSTORE_URL", str(store_path))
    pytester.makepyfile("def test_one(): pass\n")
    pytester.runpytest(*INNER_ARGS).assert_outcomes(passed=1)
    assert _runs(store_path) == []


def test_bare_option_records_in_runstore_url_and_leaves_the_next_argument_a_test_path(
    pytester: pytest.Pytester, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNSTORE_URL", str(store_path))
    pytester.makepyfile(test_a="def test_a(): pass\n", test_b="def test_b(): pass\n")
    result = pytester.runpytest(*INNER_ARGS, "--runstore", "test_a.py")
    result.assert_outcomes(passed=1)  # test_a.py is what runs, not the store's name
    (run_id,) = _runs(store_path)
    with runstore.open(str(store_path)) as store:
        nodeids = [r["nodeid"] for r in store.get_run(run_id).read("instances")]
    assert nodeids == ["test_a.py::test_a"]


def test_collect_only_records_nothing(pytester: pytest.Pytester, store_path: Path) -> None:
    pytester.makepyfile("def test_one(): pass\n")
    result = pytester.runpytest(*INNER_ARGS, f"--runstore={store_path}", "--collect-only")
    assert result.ret == 0
    assert not store_path.exists()


def test_the_plugin_environment_variable_switches_recording_on(
    pytester: pytest.Pytester, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_RUNSTORE_URL", str(store_path))
    pytester.makepyfile("def test_one(): pass\n")
    pytester.runpytest(*INNER_ARGS).assert_outcomes(passed=1)
    assert len(_runs(store_path)) == 1


def test_the_ini_option_records_relative_to_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nrunstore_url = history\n")
    pytester.makepyfile("def test_one(): pass\n")
    sub = pytester.mkdir("sub")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sub)
        pytester.runpytest(*INNER_ARGS, str(pytester.path)).assert_outcomes(passed=1)
    assert len(_runs(pytester.path / "history")) == 1
    assert not (sub / "history").exists()


def test_no_runstore_wins_over_the_ini_file_and_the_environment(
    pytester: pytest.Pytester, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_RUNSTORE_URL", str(store_path))
    pytester.makeini("[pytest]\nrunstore_url = history\n")
    pytester.makepyfile("def test_one(): pass\n")
    pytester.runpytest(*INNER_ARGS, "--no-runstore").assert_outcomes(passed=1)
    assert _runs(store_path) == [] and not (pytester.path / "history").exists()


def test_a_store_that_cannot_be_opened_is_a_warning_line_and_changes_no_exit_code(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_one(): pass\ndef test_two(): assert 0\n")
    result = pytester.runpytest(*INNER_ARGS, "--runstore=nosuchbackend://x/y")
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    warnings = [line for line in result.outlines if line.startswith("runstore:")]
    assert len(warnings) == 1
    assert warnings[0].startswith("runstore: warning: could not start the run:")
    assert "nosuchbackend" in warnings[0]


def test_a_store_that_fails_mid_session_stops_recording_with_a_warning(
    pytester: pytest.Pytester, store_path: Path
) -> None:
    # The store's folder turns into a file under the writer's feet.
    pytester.makepyfile(
        f"""
        import shutil
        from pathlib import Path

        def test_breaks_the_store():
            shutil.rmtree({str(store_path)!r})
            Path({str(store_path)!r}).write_text("not a folder")

        def test_after():
            pass
        """
    )
    result = pytester.runpytest(*INNER_ARGS, f"--runstore={store_path}")
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    lines = [line for line in result.outlines if line.startswith("runstore:")]
    assert len(lines) == 1 and lines[0].startswith("runstore: warning: could not"), lines


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runstore-meta", "novalue"], "--runstore-meta takes KEY=VALUE"),
        (["--runstore-meta", "bad key!=1"], "invalid metadata key"),
        (["--runstore-tag", "bad\ttag"], "invalid tag"),
    ],
)
def test_bad_meta_or_tag_is_a_usage_error_and_writes_nothing(
    pytester: pytest.Pytester, store_path: Path, args: list[str], message: str
) -> None:
    pytester.makepyfile("def test_one(): pass\n")
    result = pytester.runpytest(*INNER_ARGS, f"--runstore={store_path}", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
    assert not store_path.exists()


def test_keyboard_interrupt_leaves_a_cancelled_run(
    pytester: pytest.Pytester, store_path: Path
) -> None:
    pytester.makepyfile(
        """
        def test_first():
            pass

        def test_interrupted():
            raise KeyboardInterrupt

        def test_never_runs():
            pass
        """
    )
    result = pytester.runpytest_subprocess(*INNER_ARGS, f"--runstore={store_path}")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    (run_id,) = _runs(store_path)
    with runstore.open(str(store_path)) as store:
        view = store.get_run(run_id)
        assert view.state.status == "cancelled"
        nodeids = [r["nodeid"].split("::")[1] for r in view.read("instances")]
    assert nodeids[0] == "test_first" and "test_never_runs" not in nodeids


def test_a_killed_session_leaves_a_run_that_recover_marks_crashed(
    pytester: pytest.Pytester, store_path: Path, open_store: Callable[[], runstore.Store]
) -> None:
    pytester.makepyfile(
        """
        import os

        def test_first():
            pass

        def test_dies():
            os._exit(3)
        """
    )
    result = pytester.runpytest_subprocess(*INNER_ARGS, f"--runstore={store_path}")
    assert result.ret == 3
    (run_id,) = _runs(store_path)
    store = open_store()
    # Its heartbeat stopped at the kill; an hour later it is stale by any measure.
    (recovery,) = store.portal.call(
        recover_runs(store.aio, now=utcnow() + timedelta(hours=1), run_ids=[run_id])
    )
    assert recovery.action == "marked_crashed"
    view = store.get_run(run_id)
    assert view.state.status == "crashed"
    assert [r["nodeid"].split("::")[1] for r in view.read("instances")] == ["test_first"]
