"""The ``runstore`` command line, end to end against the local filesystem backend.

Most tests drive the click command in-process (``CliRunner``); the
``TestConsoleScript`` ones run the installed ``runstore`` script (and
``python -m runstore``) in a subprocess, as a user would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

import runstore
from runstore.cli import app as cli_module
from runstore.cli.app import cli
from runstore.cli.demo import run_demo

Invoke = Callable[..., Result]

DEMO_RUN = "run_demo"
DEMO_INSTANCES = 12


# -- helpers ------------------------------------------------------------------------


def _invoker(root: Path) -> Invoke:
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
        return runner.invoke(cli, ["--store", str(root), *args], env=env)

    return invoke


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def _jsonl(result: Result) -> list[Any]:
    assert result.exit_code == 0, result.output
    return [orjson.loads(line) for line in result.stdout.splitlines()]


def _assert_clean_failure(result: Result, code: int) -> None:
    """Failed with ``code`` through a normal exit, not an uncaught exception."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output


_TIME_KEYS = frozenset({"ts", "timestamp", "duration_ms"})


def _strip_volatile(value: Any) -> Any:
    """Drop what legitimately differs between two same-seed runs: times and the run id."""
    if isinstance(value, dict):
        return {
            k: _strip_volatile(v)
            for k, v in value.items()
            if k not in _TIME_KEYS and not k.endswith("_at") and k != "run_id"
        }
    if isinstance(value, list):
        return [_strip_volatile(v) for v in value]
    return value


def _tree(run_dir: Path) -> dict[str, Any]:
    """Every file of a run directory: JSON decoded and stripped, artifacts as raw bytes."""
    out: dict[str, Any] = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        name = path.relative_to(run_dir).as_posix()
        data = path.read_bytes()
        if name.startswith("artifacts/"):
            out[name] = data
        elif name.endswith(".jsonl"):
            out[name] = [_strip_volatile(orjson.loads(line)) for line in data.splitlines()]
        else:
            out[name] = _strip_volatile(orjson.loads(data))
    return out


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def invoke(root: Path) -> Invoke:
    """``runstore --store ROOT ...`` on an empty store (read commands need one to exist)."""
    runstore.open(str(root)).close()
    return _invoker(root)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one finished demo run, shared by tests that only read."""
    root = tmp_path_factory.mktemp("demo") / "runs"
    with runstore.open(str(root)) as store:
        run_demo(store, seed=42, instances=DEMO_INSTANCES, run_id=DEMO_RUN)
    return root


@pytest.fixture
def on_demo(demo_root: Path) -> Invoke:
    return _invoker(demo_root)


@pytest.fixture
def store(root: Path) -> Iterator[runstore.Store]:
    with runstore.open(str(root)) as store:
        yield store


def _finished(
    store: runstore.Store,
    run_id: str,
    *,
    status: runstore.RunStatus = "succeeded",
    sut: str = "ecommerce",
    tags: tuple[str, ...] = (),
    results: tuple[str, ...] = ("passed",),
) -> None:
    run = store.create_run(run_id, sut_name=sut, tags=tags)
    for n, outcome in enumerate(results, start=1):
        run.append("instances", {"instance_id": f"inst_{n:03d}", "status": outcome})
    run.finish(status)


@pytest.fixture
def catalogue(store: runstore.Store, invoke: Invoke) -> Invoke:
    """Four runs to filter, created oldest first: r1 .. r4."""
    _finished(store, "r1", tags=("nightly",), results=("passed", "failed"))
    _finished(store, "r2", status="failed", tags=("nightly", "smoke"))
    _finished(store, "r3", sut="payments", status="crashed")
    store.create_run("r4", sut_name="payments", tags=("smoke",)).start()
    return invoke


def _ids(result: Result) -> list[str]:
    return [record["run_id"] for record in _json(result)]


# -- demo ---------------------------------------------------------------------------


def test_demo_prints_summary_and_the_commands_to_look_at_the_run(
    invoke: Invoke, root: Path
) -> None:
    result = invoke("demo", "--instances", "5", "--run-id", "run_a")
    assert result.exit_code == 0, result.output
    store = f"--store {root}"
    for command in (
        f"runstore {store} ls",
        f"runstore {store} show run_a",
        f"runstore {store} tail run_a steps",
        f"runstore {store} cat run_a inst_001/step_001_request.json",
    ):
        assert command in result.stdout
    assert "pass rate" in result.stdout


def test_demo_json_prints_the_run_summary(invoke: Invoke) -> None:
    summary = _json(invoke("demo", "--instances", "7", "--run-id", "run_a", "--json"))
    assert summary["run_id"] == "run_a"
    assert summary["status"] == "succeeded"
    assert summary["instance_count"] == 7
    assert summary["pass_count"] + summary["fail_count"] == 7


def test_demo_without_run_id_generates_one(invoke: Invoke) -> None:
    summary = _json(invoke("demo", "--instances", "1", "--json"))
    assert summary["run_id"].startswith(f"run_{datetime.now(UTC):%Y%m%d}_")


def test_demo_writes_the_windtunnel_tree(invoke: Invoke, root: Path) -> None:
    assert invoke("demo", "--instances", "2", "--run-id", "run_a").exit_code == 0
    run_dir = root / "run_a"
    files = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    assert {
        "manifest.json",
        "state.json",
        "summary.json",
        "instances.jsonl",
        "steps.jsonl",
        "assertions.jsonl",
        "logs.jsonl",
        "artifacts.jsonl",
        "artifacts/inst_001/step_001_request.json",
        "artifacts/inst_001/step_001_response.json",
        "artifacts/inst_002/step_001_request.json",
        "artifacts/report.json",
    } <= files
    manifest = orjson.loads((run_dir / "manifest.json").read_bytes())
    assert manifest["sut_name"] == "ecommerce"
    assert manifest["scenario_ids"] == ["checkout", "refund"]
    assert manifest["seed"] == 42


def test_two_demo_runs_with_the_same_seed_have_identical_trees_modulo_timestamps(
    invoke: Invoke, root: Path
) -> None:
    for run_id in ("run_a", "run_b"):
        assert invoke("demo", "--seed", "7", "--instances", "15", "--run-id", run_id).exit_code == 0
    a, b = _tree(root / "run_a"), _tree(root / "run_b")
    assert list(a) == list(b)
    for name in a:
        assert a[name] == b[name], name


def test_demo_runs_with_different_seeds_differ(invoke: Invoke, root: Path) -> None:
    for run_id, seed in (("run_a", "1"), ("run_b", "2")):
        assert (
            invoke("demo", "--seed", seed, "--instances", "15", "--run-id", run_id).exit_code == 0
        )
    assert _tree(root / "run_a") != _tree(root / "run_b")


def test_demo_fails_the_same_instances_for_the_same_seed() -> None:
    failing: list[list[str]] = []
    for name in ("demo-fail-a", "demo-fail-b"):
        with runstore.open(f"memory://{name}") as store:
            run_demo(store, seed=42, instances=100, run_id="r")
            failing.append(
                [
                    r["instance_id"]
                    for r in store.get_run("r").read("instances")
                    if r["status"] == "failed"
                ]
            )
    assert failing[0] == failing[1]
    assert 0 < len(failing[0]) < 50


def test_demo_summary_counts_every_instance_once() -> None:
    with runstore.open("memory://demo-counts") as store:
        summary = run_demo(store, seed=3, instances=40, run_id="r")
        instances = list(store.get_run("r").read("instances"))
    assert summary.instance_count == 40
    assert [r["instance_id"] for r in instances] == [f"inst_{n:03d}" for n in range(1, 41)]
    assert summary.fail_count == sum(r["status"] == "failed" for r in instances)


def test_run_demo_reports_progress_after_each_instance() -> None:
    calls: list[tuple[int, int]] = []
    with runstore.open("memory://demo-progress") as store:
        run_demo(store, instances=4, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_demo_steps_reference_their_request_and_response_artifacts(on_demo: Invoke) -> None:
    artifacts = {a["name"] for a in _json(on_demo("show", DEMO_RUN, "--json"))["artifacts"]}
    steps = _jsonl(on_demo("tail", DEMO_RUN, "steps", "-n", "1000", "--json"))
    assert steps
    for step in steps:
        assert {step["request_artifact"], step["response_artifact"]} <= artifacts


# -- backends -----------------------------------------------------------------------


def test_backends_json_lists_installed_backends_with_schemes_and_concerns(
    invoke: Invoke,
) -> None:
    report = _json(invoke("backends", "--json"))
    backends = {b["name"]: b for b in report["backends"]}
    assert "file" in backends["local"]["schemes"]
    assert backends["local"]["distribution"] == "runstore-local"
    assert backends["memory"]["schemes"] == ["memory"]
    assert backends["memory"]["concerns"] == ["artifacts", "logs", "state"]
    assert {"local", "memory"} <= {p["name"] for p in report["plugins"]}
    assert report["store"]["backend"] == "local"


def test_backends_names_the_backend_serving_the_store(invoke: Invoke) -> None:
    result = invoke("backends")
    assert result.exit_code == 0, result.output
    assert "runstore-local" in result.stdout
    assert "-> local" in result.stdout


def test_backends_reports_a_store_no_backend_serves() -> None:
    result = CliRunner().invoke(cli, ["--store", "nosuch+file:///tmp/runs", "backends", "--json"])
    report = _json(result)
    assert report["store"]["backend"] is None
    assert "nosuch" in report["store"]["error"]


# -- ls -----------------------------------------------------------------------------


def test_ls_lists_runs_newest_first(catalogue: Invoke) -> None:
    assert _ids(catalogue("ls", "--json")) == ["r4", "r3", "r2", "r1"]


def test_ls_filters_by_status(catalogue: Invoke) -> None:
    assert _ids(catalogue("ls", "--status", "failed", "--json")) == ["r2"]


def test_ls_repeated_status_matches_any_of_them(catalogue: Invoke) -> None:
    assert _ids(catalogue("ls", "--status", "failed", "--status", "running", "--json")) == [
        "r4",
        "r2",
    ]


def test_ls_filters_by_sut(catalogue: Invoke) -> None:
    assert _ids(catalogue("ls", "--sut", "payments", "--json")) == ["r4", "r3"]


def test_ls_repeated_tag_requires_every_tag(catalogue: Invoke) -> None:
    assert _ids(catalogue("ls", "--tag", "nightly", "--json")) == ["r2", "r1"]
    assert _ids(catalogue("ls", "--tag", "nightly", "--tag", "smoke", "--json")) == ["r2"]


def test_ls_since_and_until_split_runs_by_creation_time(
    store: runstore.Store, invoke: Invoke
) -> None:
    _finished(store, "early")
    time.sleep(0.01)
    cut = datetime.now(UTC).isoformat()
    time.sleep(0.01)
    _finished(store, "late")
    assert _ids(invoke("ls", "--since", cut, "--json")) == ["late"]
    assert _ids(invoke("ls", "--until", cut, "--json")) == ["early"]


def test_ls_since_accepts_an_age(catalogue: Invoke) -> None:
    assert len(_ids(catalogue("ls", "--since", "1h", "--json"))) == 4
    assert _ids(catalogue("ls", "--until", "1h", "--json")) == []


def test_ls_naive_times_are_utc(store: runstore.Store, invoke: Invoke) -> None:
    _finished(store, "r1")
    an_hour_ago_utc = (datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None)
    assert _ids(invoke("ls", "--since", an_hour_ago_utc.isoformat(), "--json")) == ["r1"]


def test_ls_limit_and_offset_page_through_the_runs(catalogue: Invoke) -> None:
    assert _ids(catalogue("ls", "--limit", "2", "--json")) == ["r4", "r3"]
    assert _ids(catalogue("ls", "--limit", "2", "--offset", "2", "--json")) == ["r2", "r1"]
    assert _ids(catalogue("ls", "--limit", "0", "--json")) == ["r4", "r3", "r2", "r1"]


def test_ls_table_shows_status_sut_and_pass_rate(catalogue: Invoke) -> None:
    result = catalogue("ls", "--status", "succeeded")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith("r1"))
    assert row.split()[:3] == ["r1", "succeeded", "ecommerce"]
    assert "50.0% 1/2" in row


def test_ls_says_when_more_runs_may_follow(catalogue: Invoke, root: Path) -> None:
    result = catalogue("ls", "--limit", "2")
    assert f"runstore --store {root} ls --offset 2" in result.stdout


def test_ls_on_an_empty_store_suggests_the_demo(invoke: Invoke, root: Path) -> None:
    runstore.open(str(root)).close()  # a store that holds no run yet
    result = invoke("ls")
    assert result.exit_code == 0, result.output
    assert "demo" in result.stdout


def test_ls_rejects_a_malformed_time_as_a_usage_error(invoke: Invoke) -> None:
    result = invoke("ls", "--since", "last tuesday")
    _assert_clean_failure(result, 2)
    assert "not a time" in result.stderr


def test_ls_rejects_an_unknown_status_as_a_usage_error(invoke: Invoke) -> None:
    _assert_clean_failure(invoke("ls", "--status", "exploded"), 2)


# -- show ---------------------------------------------------------------------------


def test_show_json_has_manifest_state_summary_streams_and_artifacts(on_demo: Invoke) -> None:
    shown = _json(on_demo("show", DEMO_RUN, "--json"))
    assert shown["manifest"]["sut_name"] == "ecommerce"
    assert shown["state"]["status"] == "succeeded"
    summary = shown["summary"]
    assert summary["instance_count"] == DEMO_INSTANCES
    assert shown["streams"] == {**summary["stream_counts"], "artifacts": len(shown["artifacts"])}
    assert len(shown["artifacts"]) == summary["artifact_count"]
    first = shown["artifacts"][0]
    assert first["name"] == "inst_001/step_001_request.json"
    assert len(first["sha256"]) == 64


def test_show_stream_counts_match_the_records_in_each_stream(on_demo: Invoke) -> None:
    streams = _json(on_demo("show", DEMO_RUN, "--json"))["streams"]
    for stream, count in streams.items():
        assert len(_jsonl(on_demo("tail", DEMO_RUN, stream, "-n", "100000", "--json"))) == count


def test_show_prints_every_section(on_demo: Invoke) -> None:
    result = on_demo("show", DEMO_RUN)
    assert result.exit_code == 0, result.output
    for heading in ("manifest", "state", "summary", "streams", "artifacts"):
        assert heading in result.stdout
    assert "inst_001/step_001_request.json" in result.stdout


def test_show_lists_a_limited_number_of_artifacts_and_says_how_to_see_all(
    on_demo: Invoke,
) -> None:
    result = on_demo("show", DEMO_RUN, "--artifacts", "3")
    assert "inst_001/step_002_request.json" in result.stdout
    assert "inst_001/step_002_response.json" not in result.stdout
    assert "--artifacts 0 lists all" in result.stdout


def test_show_counts_the_records_of_a_live_run(store: runstore.Store, invoke: Invoke) -> None:
    run = store.create_run("live")
    for n in range(3):
        run.append("steps", {"n": n})
    shown = _json(invoke("show", "live", "--json"))
    assert shown["state"]["status"] == "running"
    assert shown["summary"] is None
    assert shown["streams"]["steps"] == 3
    run.finish()


def test_show_unknown_run_exits_1_with_a_one_line_message(invoke: Invoke) -> None:
    result = invoke("show", "run_nope")
    _assert_clean_failure(result, 1)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "run 'run_nope' not found" in result.stderr


def test_show_unknown_run_with_json_prints_the_error_as_json(invoke: Invoke) -> None:
    result = invoke("show", "run_nope", "--json")
    _assert_clean_failure(result, 1)
    error = orjson.loads(result.stdout)["error"]
    assert error["code"] == "not_found"
    assert error["details"]["run_id"] == "run_nope"


def test_show_refuses_an_invalid_run_id(invoke: Invoke) -> None:
    result = invoke("show", "../etc", "--json")
    _assert_clean_failure(result, 1)
    assert orjson.loads(result.stdout)["error"]["code"] == "invalid_input"


# -- tail ---------------------------------------------------------------------------


def test_tail_prints_the_last_n_records_in_order(on_demo: Invoke) -> None:
    records = _jsonl(on_demo("tail", DEMO_RUN, "instances", "-n", "3", "--json"))
    assert [r["instance_id"] for r in records] == ["inst_010", "inst_011", "inst_012"]


def test_tail_prints_ten_records_by_default(on_demo: Invoke) -> None:
    records = _jsonl(on_demo("tail", DEMO_RUN, "instances", "--json"))
    assert [r["instance_id"] for r in records] == [f"inst_{n:03d}" for n in range(3, 13)]


def test_tail_json_lines_are_the_records_as_stored(on_demo: Invoke, demo_root: Path) -> None:
    stored = (demo_root / DEMO_RUN / "assertions.jsonl").read_bytes().splitlines()[-5:]
    records = _jsonl(on_demo("tail", DEMO_RUN, "assertions", "-n", "5", "--json"))
    assert records == [orjson.loads(line) for line in stored]


def test_tail_renders_log_lines_for_humans(on_demo: Invoke) -> None:
    result = on_demo("tail", DEMO_RUN, "logs", "-n", "1")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert "INFO" in line
    assert "demo run finished" in line


def test_tail_unknown_stream_exits_1_naming_the_streams(on_demo: Invoke) -> None:
    result = on_demo("tail", DEMO_RUN, "nosuch")
    _assert_clean_failure(result, 1)
    assert "stream 'nosuch' not found" in result.stderr
    assert "steps" in result.stderr


def test_tail_follow_prints_every_record_until_another_thread_finishes_the_run(
    root: Path, invoke: Invoke
) -> None:
    created = threading.Event()

    def writer() -> None:
        with runstore.open(str(root)) as store:
            run = store.create_run("live")
            run.start()
            created.set()
            for n in range(8):
                run.append("steps", {"n": n})
                time.sleep(0.05)
            run.finish()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert created.wait(10)
        result = invoke("tail", "live", "steps", "-f", "-n", "100", "--poll-interval", "0.02")
    finally:
        thread.join()
    assert result.exit_code == 0, result.output
    assert [orjson.loads(line)["n"] for line in result.stdout.splitlines()] == list(range(8))


def test_tail_follow_on_a_finished_run_prints_the_tail_and_exits(on_demo: Invoke) -> None:
    records = _jsonl(on_demo("tail", DEMO_RUN, "instances", "-f", "-n", "2", "--json"))
    assert [r["instance_id"] for r in records] == ["inst_011", "inst_012"]


# -- cat ----------------------------------------------------------------------------


def test_cat_writes_the_artifact_bytes_exactly(on_demo: Invoke, demo_root: Path) -> None:
    name = "inst_001/step_001_request.json"
    result = on_demo("cat", DEMO_RUN, name)
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == (demo_root / DEMO_RUN / "artifacts" / name).read_bytes()


def test_cat_verify_passes_an_intact_artifact(on_demo: Invoke) -> None:
    result = on_demo("cat", DEMO_RUN, "report.json", "--verify")
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout_bytes)["instances"] == DEMO_INSTANCES


def test_cat_verify_exits_1_when_the_bytes_were_tampered_with(
    store: runstore.Store, invoke: Invoke, root: Path
) -> None:
    with store.create_run("r") as run:
        run.put_artifact("a.txt", b"original")
    path = root / "r" / "artifacts" / "a.txt"
    path.chmod(0o644)
    path.write_bytes(b"tampered")
    assert invoke("cat", "r", "a.txt").stdout_bytes == b"tampered"
    result = invoke("cat", "r", "a.txt", "--verify")
    _assert_clean_failure(result, 1)
    assert "does not match its sha256" in result.stderr


def test_cat_unknown_artifact_exits_1(on_demo: Invoke) -> None:
    result = on_demo("cat", DEMO_RUN, "inst_001/nope.json")
    _assert_clean_failure(result, 1)
    assert "inst_001/nope.json" in result.stderr


def test_cat_refuses_a_hostile_artifact_name(on_demo: Invoke) -> None:
    result = on_demo("cat", DEMO_RUN, "../manifest.json")
    _assert_clean_failure(result, 1)
    assert result.stdout_bytes == b""


# -- shared behaviour ---------------------------------------------------------------

READ_COMMANDS = [
    ["ls"],
    ["show", DEMO_RUN],
    ["backends"],
    ["demo", "--instances", "2", "--run-id", "run_json"],
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda a: a[0])
def test_json_output_is_one_json_document(args: list[str], tmp_path: Path, demo_root: Path) -> None:
    target = tmp_path / "runs" if args[0] == "demo" else demo_root
    result = _invoker(target)(*args, "--json")
    assert isinstance(_json(result), dict | list)


@pytest.mark.parametrize("command", ["demo", "backends", "ls", "show", "tail", "cat"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.stdout
    assert f"runstore {command}" in result.stdout


def test_a_lazy_command_is_imported_only_when_run(
    monkeypatch: pytest.MonkeyPatch, on_demo: Invoke
) -> None:
    monkeypatch.setitem(cli_module.LAZY_COMMANDS, "inspect", "runstore.cli.runs:show")
    assert "inspect" in CliRunner().invoke(cli, ["--help"]).stdout
    assert _json(on_demo("inspect", DEMO_RUN, "--json"))["run_id"] == DEMO_RUN


def test_unknown_option_is_a_usage_error(invoke: Invoke) -> None:
    result = invoke("show", "--frobnicate")
    _assert_clean_failure(result, 2)
    assert "No such option" in result.stderr


def test_missing_argument_is_a_usage_error(invoke: Invoke) -> None:
    _assert_clean_failure(invoke("tail", DEMO_RUN), 2)


def test_unknown_store_scheme_is_a_backend_not_found_error() -> None:
    result = CliRunner().invoke(cli, ["--store", "nosuch://bucket/runs", "ls", "--json"])
    _assert_clean_failure(result, 1)
    error = orjson.loads(result.stdout)["error"]
    assert error["code"] == "backend_not_found"
    assert "nosuch://" in error["message"]


def test_unknown_backend_name_says_which_backends_are_installed() -> None:
    result = CliRunner().invoke(cli, ["--store", "nosuch+file:///tmp/runs", "ls"])
    _assert_clean_failure(result, 1)
    assert "no backend named 'nosuch'" in result.stderr
    assert "local" in result.stderr
    assert "memory" in result.stderr


def test_store_comes_from_runstore_url_when_not_given(demo_root: Path) -> None:
    result = CliRunner().invoke(cli, ["ls", "--json"], env={"RUNSTORE_URL": str(demo_root)})
    assert _ids(result) == [DEMO_RUN]


def test_store_option_wins_over_runstore_url(demo_root: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["--store", str(demo_root), "ls", "--json"],
        env={"RUNSTORE_URL": str(tmp_path / "elsewhere")},
    )
    assert _ids(result) == [DEMO_RUN]


# -- the installed console script ---------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RUNSTORE_URL"}
    return {**env, **extra}


def _script() -> str:
    found = shutil.which("runstore", path=str(Path(sys.executable).parent))
    assert found is not None, "the runstore console script is not installed next to python"
    return found


def _run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [_script(), *args], cwd=cwd, env=_env(**env), capture_output=True, timeout=60, check=False
    )


class TestConsoleScript:
    def test_demo_writes_into_runs_in_the_current_directory_by_default(
        self, tmp_path: Path
    ) -> None:
        done = _run("demo", "--instances", "3", "--run-id", "run_cwd", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "runs" / "run_cwd" / "manifest.json").is_file()
        assert b"runstore show run_cwd" in done.stdout
        listed = _run("ls", "--json", cwd=tmp_path)
        assert [r["run_id"] for r in orjson.loads(listed.stdout)] == ["run_cwd"]

    def test_store_comes_from_the_environment(self, tmp_path: Path, demo_root: Path) -> None:
        done = _run("show", DEMO_RUN, "--json", cwd=tmp_path, RUNSTORE_URL=str(demo_root))
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout)["run_id"] == DEMO_RUN

    def test_cat_streams_the_raw_bytes(self, tmp_path: Path, demo_root: Path) -> None:
        name = "inst_002/step_001_response.json"
        done = _run("--store", str(demo_root), "cat", DEMO_RUN, name, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stdout == (demo_root / DEMO_RUN / "artifacts" / name).read_bytes()

    def test_errors_exit_1_without_a_traceback(self, tmp_path: Path) -> None:
        runstore.open(str(tmp_path / "runs")).close()
        done = _run("--store", str(tmp_path / "runs"), "show", "run_nope", cwd=tmp_path)
        assert done.returncode == 1
        assert done.stdout == b""
        (line,) = done.stderr.decode().splitlines()
        assert line.startswith("error: run 'run_nope' not found")

    def test_usage_errors_exit_2(self, tmp_path: Path) -> None:
        assert _run("ls", "--limit", "many", cwd=tmp_path).returncode == 2

    def test_tail_follow_stops_when_another_process_finishes_the_run(self, tmp_path: Path) -> None:
        root = tmp_path / "runs"
        with runstore.open(str(root)) as store:
            run = store.create_run("live")
            run.append("steps", {"n": 0})
            tail = subprocess.Popen(
                [
                    _script(),
                    "--store",
                    str(root),
                    "tail",
                    "live",
                    "steps",
                    "-f",
                    "-n",
                    "5",
                    "--json",
                    "--poll-interval",
                    "0.05",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_env(),
            )
            try:
                assert tail.stdout is not None
                assert orjson.loads(tail.stdout.readline()) == {"n": 0}
                for n in range(1, 4):
                    run.append("steps", {"n": n})
                    time.sleep(0.05)
                assert tail.poll() is None, "tail -f stopped while the run was live"
                run.finish()
                rest, err = tail.communicate(timeout=30)
            finally:
                if tail.poll() is None:
                    tail.kill()
                    tail.wait()
        assert tail.returncode == 0, err
        assert [orjson.loads(line) for line in rest.splitlines()] == [{"n": n} for n in (1, 2, 3)]

    def test_interrupting_tail_follow_exits_130_quietly(self, tmp_path: Path) -> None:
        root = tmp_path / "runs"
        with runstore.open(str(root)) as store:
            run = store.create_run("live")
            run.append("steps", {"n": 0})
            tail = subprocess.Popen(
                [_script(), "--store", str(root), "tail", "live", "steps", "-f"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_env(),
            )
            try:
                assert tail.stdout is not None
                assert orjson.loads(tail.stdout.readline()) == {"n": 0}
                tail.send_signal(signal.SIGINT)
                _, err = tail.communicate(timeout=30)
            finally:
                if tail.poll() is None:
                    tail.kill()
                    tail.wait()
            run.finish()
        assert tail.returncode == 130
        assert err == b"runstore: interrupted\n"

    def test_python_dash_m_runstore_is_the_same_cli(self, tmp_path: Path, demo_root: Path) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "runstore", "--store", str(demo_root), "ls", "--json"],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert [r["run_id"] for r in orjson.loads(done.stdout)] == [DEMO_RUN]
