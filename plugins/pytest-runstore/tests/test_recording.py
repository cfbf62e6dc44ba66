"""Inner pytest sessions recorded with --runstore, read back through runstore's API."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_runstore import decode_instance_id, encode_nodeid

import runstore

pytest_plugins = ["pytester"]

OUTCOMES = """
    import pytest

    def test_passes():
        pass

    def test_fails():
        assert 1 == 2, "one is not two"

    @pytest.fixture
    def broken():
        raise RuntimeError("fixture broke")

    def test_setup_error(broken):
        pass

    @pytest.fixture
    def bad_teardown():
        yield
        raise RuntimeError("teardown broke")

    def test_teardown_error(bad_teardown):
        pass

    def test_skipped():
        pytest.skip("not today")

    @pytest.mark.xfail(reason="known bug")
    def test_xfailed():
        assert 0

    @pytest.mark.xfail(reason="fixed?", strict=False)
    def test_xpassed():
        pass

    @pytest.mark.xfail(reason="must fail", strict=True)
    def test_strict_xpass():
        pass
"""


@pytest.fixture(scope="module")
def outcomes_session(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[subprocess.CompletedProcess[str], runstore.RunView]]:
    """OUTCOMES recorded once, in a pytest process of its own, for the tests that read it."""
    root = tmp_path_factory.mktemp("outcomes")
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "test_outcomes.py").write_text(textwrap.dedent(OUTCOMES))
    env = {k: v for k, v in os.environ.items() if k not in _RECORDING_ENV}
    store_path = root / "store"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *INNER_ARGS, f"--runstore={store_path}"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    with runstore.open(str(store_path)) as store:
        (record,) = store.list_runs()
        yield done, store.get_run(record.run_id)


_RECORDING_ENV = ("PYTEST_ADDOPTS", "PYTEST_RUNSTORE_URL", "RUNSTORE_URL")

Session = tuple[subprocess.CompletedProcess[str], runstore.RunView]


def _instances(view: runstore.RunView) -> dict[str, dict[str, Any]]:
    return {r["nodeid"]: r for r in view.read("instances")}


INNER_ARGS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-W", "error")
"""Every inner session: no cache files, and any warning (ours included) is an error."""


def _record(pytester: pytest.Pytester, store_path: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*INNER_ARGS, f"--runstore={store_path}", *args)


def test_every_outcome_is_an_instance_with_status_outcome_and_duration(
    outcomes_session: Session,
) -> None:
    done, view = outcomes_session
    assert "2 failed, 2 passed, 1 skipped, 1 xfailed, 1 xpassed, 2 errors" in done.stdout
    assert done.returncode == pytest.ExitCode.TESTS_FAILED
    found = {
        nodeid.split("::")[1]: (r["outcome"], r["status"]) for nodeid, r in _instances(view).items()
    }
    assert found == {
        "test_passes": ("passed", "passed"),
        "test_fails": ("failed", "failed"),
        "test_setup_error": ("error", "error"),
        "test_teardown_error": ("error", "error"),
        "test_skipped": ("skipped", "skipped"),
        "test_xfailed": ("xfailed", "skipped"),
        "test_xpassed": ("xpassed", "passed"),
        "test_strict_xpass": ("failed", "failed"),
    }
    assert all(r["duration_ms"] >= 0 for r in view.read("instances"))
    summary = view.summary
    assert summary is not None
    assert (summary.pass_count, summary.fail_count, summary.error_count, summary.skip_count) == (
        2,
        2,
        2,
        2,
    )
    assert (summary.metrics["xfailed"], summary.metrics["xpassed"]) == (1.0, 1.0)
    assert (summary.status, view.metadata["exitstatus"]) == ("failed", 1)


def test_failures_keep_their_longrepr_in_the_record_and_as_an_artifact(
    outcomes_session: Session,
) -> None:
    _, view = outcomes_session
    records = _instances(view)
    failed = records["test_outcomes.py::test_fails"]
    assert "one is not two" in failed["longrepr"]
    artifact = view.artifact(f"{failed['instance_id']}/longrepr-call.txt")
    assert artifact.kind == "qa_report"
    assert b"one is not two" in view.read_artifact(artifact.name)
    teardown = records["test_outcomes.py::test_teardown_error"]
    assert (
        "teardown broke"
        in view.read_artifact(f"{teardown['instance_id']}/longrepr-teardown.txt").decode()
    )
    assert records["test_outcomes.py::test_skipped"]["reason"] == "not today"
    assert records["test_outcomes.py::test_xfailed"]["reason"] == "known bug"
    assert "longrepr" not in records["test_outcomes.py::test_passes"]


def test_setup_call_and_teardown_are_steps_with_outcomes_and_durations(
    outcomes_session: Session,
) -> None:
    _, view = outcomes_session
    steps: dict[str, list[tuple[str, str]]] = {}
    for step in view.read("steps"):
        assert step["duration_ms"] >= 0 and step["started_at"]
        steps.setdefault(decode_instance_id(step["instance_id"]), []).append(
            (step["step_name"], step["outcome"])
        )
    assert steps["test_outcomes.py::test_fails"] == [
        ("setup", "passed"),
        ("call", "failed"),
        ("teardown", "passed"),
    ]
    assert steps["test_outcomes.py::test_setup_error"] == [
        ("setup", "error"),
        ("teardown", "passed"),
    ]
    assert steps["test_outcomes.py::test_teardown_error"][-1] == ("teardown", "error")


def test_captured_output_and_log_records_go_to_logs_with_instance_and_phase(
    pytester: pytest.Pytester, store_path: Path, only_run: Callable[[], runstore.RunView]
) -> None:
    pytester.makepyfile(
        """
        import logging, sys
        import pytest

        @pytest.fixture
        def noisy():
            print("out in setup")
            yield
            print("err in teardown", file=sys.stderr)

        def test_noisy(noisy):
            print("out in call")
            logging.getLogger("shop.cart").warning("total is %d", 42)
            try:
                raise ValueError("boom")
            except ValueError:
                logging.getLogger("shop").exception("failed")
        """
    )
    _record(pytester, store_path).assert_outcomes(passed=1)
    logs = list(only_run().read("logs"))
    by_source = {(r["source"], r["phase"]): r for r in logs}
    assert by_source[("stdout", "setup")]["message"] == "out in setup\n"
    assert by_source[("stdout", "call")]["message"] == "out in call\n"
    assert by_source[("stderr", "teardown")]["level"] == "warning"
    records = [r for r in logs if r["source"] == "log"]
    assert [(r["logger"], r["level"], r["message"]) for r in records] == [
        ("shop.cart", "warning", "total is 42"),
        ("shop", "error", "failed"),
    ]
    assert "ValueError: boom" in records[1]["exc_text"]
    assert all(r["phase"] == "call" for r in records)
    (nodeid,) = {decode_instance_id(r["instance_id"]) for r in logs}
    assert nodeid.endswith("::test_noisy")


def test_hostile_node_ids_round_trip_through_the_encoding(
    pytester: pytest.Pytester, store_path: Path, only_run: Callable[[], runstore.RunView]
) -> None:
    pytester.makepyfile(
        test_hostile="""
        import pytest

        @pytest.mark.parametrize(
            "value",
            ["a/b", "[x]", "café", "with space", "~7E", "#frag", "%41", "..", "x" * 300],
            ids=lambda v: v,
        )
        def test_ids(value, runstore_run):
            runstore_run.put_artifact("value.txt", value)
            assert False, value
        """
    )
    pytester.makeini(
        "[pytest]\ndisable_test_id_escaping_and_forfeit_all_rights_to_community_support = true\n"
    )
    _record(pytester, store_path).assert_outcomes(failed=9)
    view = only_run()
    records = _instances(view)
    assert len(records) == 9
    for nodeid, record in records.items():
        assert record["instance_id"] == encode_nodeid(nodeid)
        if "~~" not in record["instance_id"]:
            assert decode_instance_id(record["instance_id"]) == nodeid
        value = nodeid.split("[", 1)[1][:-1]
        assert view.read_artifact(f"{record['instance_id']}/value.txt").decode() == value
        assert view.instance(record["instance_id"]).instance == record
    assert "test_hostile.py::test_ids[café]" in records
    assert "test_hostile.py::test_ids[a/b]" in records


def test_metadata_describes_the_session_and_takes_user_meta_and_tags(
    pytester: pytest.Pytester, store_path: Path, only_run: Callable[[], runstore.RunView]
) -> None:
    pytester.makepyfile("def test_one(): pass\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "trunk"], cwd=pytester.path, check=True)
    subprocess.run([*git, "add", "."], cwd=pytester.path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=pytester.path, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=pytester.path, capture_output=True, text=True, check=True
    ).stdout.strip()
    _record(
        pytester,
        store_path,
        "-k",
        "one",
        "-m",
        "not slow",
        "--runstore-meta",
        "build=1234",
        "--runstore-meta=team=shop",
        "--runstore-tag",
        "nightly",
    ).assert_outcomes(passed=1)
    view = only_run()
    metadata = view.metadata
    assert metadata["git_commit"] == commit
    assert metadata["git_branch"] == "trunk"
    assert metadata["git_dirty"] is False
    assert metadata["python"] == ".".join(map(str, sys.version_info[:3]))
    assert metadata["pytest"] == pytest.__version__
    assert metadata["platform"]
    assert (metadata["keyword"], metadata["markexpr"]) == ("one", "not slow")
    assert (metadata["build"], metadata["team"]) == ("1234", "shop")
    args = metadata["args"]
    assert isinstance(args, list) and f"--runstore={store_path}" in args
    assert view.tags == ["nightly"]
    assert view.manifest.sut_name == pytester.path.name


def test_outside_a_git_repository_there_is_no_git_metadata(
    pytester: pytest.Pytester, store_path: Path, only_run: Callable[[], runstore.RunView]
) -> None:
    pytester.makepyfile("def test_one(): pass\n")
    pytester.makeini("[pytest]\n")  # rootdir is here, not inside some repository above
    env_ceiling = pytester.path.parent
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GIT_CEILING_DIRECTORIES", str(env_ceiling))
        _record(pytester, store_path).assert_outcomes(passed=1)
    assert not any(key.startswith("git_") for key in only_run().metadata)


def test_the_fixture_attaches_artifacts_metrics_and_assertions_to_its_instance(
    pytester: pytest.Pytester, store_path: Path, only_run: Callable[[], runstore.RunView]
) -> None:
    pytester.makepyfile(
        test_fixture="""
        def test_checkout(runstore_run, tmp_path):
            assert runstore_run.enabled and runstore_run.run_id.startswith("run_")
            name = runstore_run.put_artifact("request.json", b'{"a": 1}', kind="phase_output",
                                             media_type="application/json", metadata={"lang": "ja"})
            assert name == runstore_run.instance_id + "/request.json"
            (tmp_path / "shot.png").write_bytes(b"png")
            runstore_run.put_artifact("shots/shot.png", tmp_path / "shot.png")
            runstore_run.log_metric("latency_ms", 212.5, step=1)
            runstore_run.record_assertion("total", True, expected=10, actual=10)
        """
    )
    _record(pytester, store_path).assert_outcomes(passed=1)
    view = only_run()
    instance_id = encode_nodeid("test_fixture.py::test_checkout")
    bundle = view.instance(instance_id)
    assert bundle.instance is not None and bundle.instance["status"] == "passed"
    assert {a.name for a in bundle.artifacts} == {
        f"{instance_id}/request.json",
        f"{instance_id}/shots/shot.png",
    }
    ref = view.artifact(f"{instance_id}/request.json")
    assert (ref.kind, ref.media_type, ref.metadata) == (
        "phase_output",
        "application/json",
        {"lang": "ja"},
    )
    assert view.read_artifact(f"{instance_id}/shots/shot.png") == b"png"
    (metric,) = view.read("metrics")
    assert (metric["name"], metric["value"], metric["step"], metric["instance_id"]) == (
        "latency_ms",
        212.5,
        1,
        instance_id,
    )
    assert view.summary is not None and view.summary.metrics["latency_ms"] == 212.5
    (assertion,) = bundle.assertions
    assert (assertion["name"], assertion["passed"], assertion["expected"]) == ("total", True, 10)


FIXTURE_BAD_INPUT = """
    import pytest
    from runstore import InvalidInputError

    @pytest.mark.parametrize("name", ["../escape", "/abs", "a#b", "a%41", ""])
    def test_bad_artifact_name(runstore_run, name):
        with pytest.raises(InvalidInputError):
            runstore_run.put_artifact(name, b"x")

    def test_bad_kind(runstore_run):
        with pytest.raises(InvalidInputError, match="kind"):
            runstore_run.put_artifact("a.txt", b"x", kind="nonsense")

    def test_bad_metric(runstore_run):
        with pytest.raises(InvalidInputError):
            runstore_run.log_metric("latency", float("nan"))
        with pytest.raises(InvalidInputError):
            runstore_run.log_metric("bad name!", 1.0)

    def test_bad_assertion(runstore_run):
        with pytest.raises(InvalidInputError):
            runstore_run.record_assertion("x", True, actual=object())
        with pytest.raises(InvalidInputError):
            runstore_run.record_assertion("x", "yes")
"""


def test_the_fixture_refuses_bad_input_in_the_test_and_stores_none_of_it(
    pytester: pytest.Pytester, store_path: Path, only_run: Callable[[], runstore.RunView]
) -> None:
    pytester.makepyfile(test_bad=FIXTURE_BAD_INPUT)
    _record(pytester, store_path).assert_outcomes(passed=8)
    view = only_run()
    assert view.artifacts() == []
    assert "metrics" not in view.streams() and "assertions" not in view.streams()


def test_without_recording_the_fixture_checks_the_same_and_stores_nothing(
    pytester: pytest.Pytester, store_path: Path
) -> None:
    pytester.makepyfile(test_bad=FIXTURE_BAD_INPUT)
    pytester.makepyfile(
        test_off="""
        def test_off(runstore_run):
            assert not runstore_run.enabled and runstore_run.run_id is None
            runstore_run.put_artifact("a.txt", b"x")
            runstore_run.log_metric("m", 1.0)
        """
    )
    pytester.runpytest(*INNER_ARGS).assert_outcomes(passed=9)
    assert not store_path.exists()
    assert not (pytester.path / "runs").exists()


def test_collection_errors_are_error_instances(
    pytester: pytest.Pytester, store_path: Path, only_run: Callable[[], runstore.RunView]
) -> None:
    pytester.makepyfile(
        test_broken="import no_such_module_here\n", test_fine="def test_ok(): pass\n"
    )
    result = _record(pytester, store_path, "--continue-on-collection-errors")
    result.assert_outcomes(passed=1, errors=1)
    records = _instances(only_run())
    broken = records["test_broken.py"]
    assert (broken["outcome"], broken["status"]) == ("error", "error")
    assert "no_such_module_here" in broken["longrepr"]


def test_a_passing_session_is_a_succeeded_run_and_prints_one_line(
    pytester: pytest.Pytester, store_path: Path, only_run: Callable[[], runstore.RunView]
) -> None:
    pytester.makepyfile("def test_one(): pass\n")
    result = _record(pytester, store_path)
    assert result.ret == 0
    view = only_run()
    assert view.state.status == "succeeded" and view.metadata["exitstatus"] == 0
    lines = [line for line in result.outlines if line.startswith("runstore")]
    assert lines == [f"runstore: {view.run_id} stored in {store_path}"]


def test_files_named_by_runstore_artifacts_are_stored_when_the_session_ends(
    pytester: pytest.Pytester, store_path: Path, only_run: Callable[[], runstore.RunView]
) -> None:
    pytester.makepyfile(
        """
        from pathlib import Path

        def test_writes_reports():
            Path("out").mkdir(exist_ok=True)
            Path("out/coverage.xml").write_text("<coverage/>")
            Path("out/notes.txt").write_text("notes")
        """
    )
    _record(pytester, store_path, "--runstore-artifacts", "out/*.xml").assert_outcomes(passed=1)
    view = only_run()
    assert [a.name for a in view.artifacts()] == ["files/out/coverage.xml"]
    assert view.read_artifact("files/out/coverage.xml") == b"<coverage/>"


def test_an_outcome_another_plugin_invents_is_kept_and_recording_goes_on(
    pytester: pytest.Pytester, store_path: Path, only_run: Callable[[], runstore.RunView]
) -> None:
    # pytest-rerunfailures reports a failed attempt with the outcome 'rerun'.
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(wrapper=True)
        def pytest_runtest_makereport(item, call):
            report = yield
            if item.name == "test_retried" and report.when == "call":
                report.outcome = "rerun"
            return report
        """
    )
    pytester.makepyfile("def test_retried(): pass\ndef test_after(): pass\n")
    result = _record(pytester, store_path)
    assert not any(line.startswith("runstore: warning") for line in result.outlines)
    found = {
        r["nodeid"].split("::")[1]: (r["outcome"], r["status"])
        for r in only_run().read("instances")
    }
    assert found == {"test_retried": ("rerun", "rerun"), "test_after": ("passed", "passed")}
