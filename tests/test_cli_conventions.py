"""The conventions every ``runstore`` command shares (issue 17, and issue 14's read commands).

* ``--store``/``-s``, ``--json`` and ``--verbose``/``-v`` work before or after
  any command's name;
* a run reference (``latest``, ``latest~N``, ``latest:STATUS``, a unique
  prefix) works wherever a run id does; a mistyped id gets "did you mean";
* only ``demo`` creates a store: read commands on a missing path, a run
  directory, a folder without a store or a file create nothing;
* install hints fit how runstore is installed; missing S3 credentials are
  ``permission_denied`` naming what to set.

Ctrl-C and asyncio noise, which need a real process, are in
``test_cli_signals.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson
import pytest
from click.testing import CliRunner, Result

import runstore
from runstore.cli import hints
from runstore.cli.app import cli
from runstore.cli.context import CliContext
from runstore.cli.demo import run_demo
from runstore.model.errors import BackendNotFoundError
from runstore.model.run import RunStatus
from runstore_fsspec.testing import S3Server

if TYPE_CHECKING:
    from conftest import CliStore

CORE = Path(runstore.__file__).resolve().parents[2]
"""core/ of this checkout (the tests run from an editable install)."""


def small_runs(store: CliStore | str, *run_ids: str, status: RunStatus = "succeeded") -> None:
    """Finished runs with two instances, a steps stream and a report.json artifact each."""
    with runstore.open(store if isinstance(store, str) else store.url) as opened:
        for run_id in run_ids:
            run = opened.create_run(run_id, sut_name="shop", seed=1)
            for n in (1, 2):
                run.append("steps", {"instance_id": f"inst_{n:03d}", "step_name": "buy"})
                run.append("instances", {"instance_id": f"inst_{n:03d}", "status": "passed"})
            run.put_artifact("report.json", orjson.dumps({"seed": 1}), kind="qa_report")
            run.finish(status)


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _error(result: Result) -> dict[str, Any]:
    """The ``--json`` error of a clean exit 1."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    error: dict[str, Any] = orjson.loads(result.stdout)["error"]
    return error


def _failure_line(result: Result) -> str:
    """The one stderr line of a clean exit 1."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    return line


# -- one option convention ----------------------------------------------------------


def _commands() -> list[str]:
    return cli.list_commands(click.Context(cli))


def _placeholders(command: click.Command) -> list[str]:
    """A value for each required argument (parsing only: nothing runs)."""
    words: list[str] = []
    for param in command.params:
        if isinstance(param, click.Argument) and param.required:
            words += ["x"] * max(param.nargs, 1)
        elif isinstance(param, click.Option) and param.required:
            words += [param.opts[0], "x"]
    return words


def _parsed(before: list[str], name: str, after: list[str]) -> CliContext:
    """What the group and command ``name`` make of their words, without running anything."""
    with cli.make_context("runstore", [*before, name]) as ctx:
        command = cli.get_command(ctx, name)
        assert command is not None
        command.make_context(name, after, parent=ctx)
        found = ctx.find_object(CliContext)
        assert found is not None
        return found


@pytest.mark.parametrize("name", _commands())
@pytest.mark.parametrize(
    "options",
    [["--store", "memory://given", "--json", "--verbose"], ["-s", "memory://given", "-v"]],
    ids=["long", "short"],
)
@pytest.mark.parametrize("position", ["before", "after"])
def test_every_command_takes_the_global_options_before_or_after_its_name(
    name: str, options: list[str], position: str
) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    if name == "tag" and position == "after" and "-s" in options:
        pytest.skip("after RUN, tag reads -WORD as a tag to remove (its --help says so)")
    words = _placeholders(command)
    if position == "before":
        cli_ctx = _parsed(options, name, words)
    else:
        cli_ctx = _parsed([], name, [*words, *options])
    assert cli_ctx.store_url == "memory://given"
    assert cli_ctx.store_from_command_line
    assert cli_ctx.verbose
    assert cli_ctx.json == ("--json" in options)


@pytest.mark.parametrize("name", _commands())
def test_every_commands_help_documents_the_global_options(name: str) -> None:
    result = _invoke(name, "--help")
    assert result.exit_code == 0, result.output
    for option in ("-s, --store URL", "--json", "-v, --verbose"):
        assert option in result.stdout, f"runstore {name} --help lacks {option}"


def test_the_store_after_the_command_is_the_store_used(tmp_path: Path) -> None:
    small = str(tmp_path / "runs")
    small_runs(small, "run_a")
    listed = orjson.loads(_invoke("ls", "--json", "--store", small).stdout)
    assert [r["run_id"] for r in listed] == ["run_a"]


def test_the_store_comes_from_the_environment_when_not_given(tmp_path: Path) -> None:
    small = str(tmp_path / "runs")
    small_runs(small, "run_a")
    result = CliRunner().invoke(cli, ["ls", "--json"], env={"RUNSTORE_URL": small})
    assert [r["run_id"] for r in orjson.loads(result.stdout)] == ["run_a"]


def test_two_different_stores_are_a_usage_error() -> None:
    result = _invoke("--store", "memory://a", "ls", "--store", "memory://b")
    assert result.exit_code == 2
    assert "give it once" in result.stderr


def test_the_same_store_twice_is_fine() -> None:
    assert _invoke("--store", "memory://a", "ls", "-s", "memory://a").exit_code == 0


def test_verbose_adds_the_code_and_details_of_an_error(local_store: CliStore) -> None:
    small_runs(local_store, "run_a")
    result = _invoke("show", "run_nope", "--store", local_store.url, "-v")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: run 'run_nope' not found")
    assert "  code: not_found" in lines
    assert any(line.startswith("  details: ") and "run_a" in line for line in lines)


# -- run references ------------------------------------------------------------------


@pytest.fixture
def three_runs(local_store: CliStore) -> list[str]:
    """run_20240115_001 (failed), run_20240115_002, run_20240116_001; newest first."""
    small_runs(local_store, "run_20240115_001", status="failed")
    small_runs(local_store, "run_20240115_002", "run_20240116_001")
    listed = orjson.loads(_invoke("--store", local_store.url, "ls", "--json").stdout)
    return [r["run_id"] for r in listed]


def _shown(store: CliStore, ref: str) -> str:
    result = _invoke("--store", store.url, "show", ref, "--json")
    assert result.exit_code == 0, result.output
    run_id: str = orjson.loads(result.stdout)["run_id"]
    return run_id


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("latest", lambda order: order[0]),
        ("latest~0", lambda order: order[0]),
        ("latest~1", lambda order: order[1]),
        ("latest~2", lambda order: order[2]),
        ("latest:failed", lambda order: "run_20240115_001"),
        ("run_20240116", lambda order: "run_20240116_001"),
        ("run_20240115_002", lambda order: "run_20240115_002"),
    ],
)
def test_a_run_reference_names_one_run(
    local_store: CliStore, three_runs: list[str], ref: str, expected: Any
) -> None:
    assert _shown(local_store, ref) == expected(three_runs)


def test_latest_succeeded_skips_the_failed_run(
    local_store: CliStore, three_runs: list[str]
) -> None:
    succeeded = [r for r in three_runs if r != "run_20240115_001"]
    assert _shown(local_store, "latest:succeeded") == succeeded[0]
    assert _shown(local_store, "latest:succeeded~1") == succeeded[1]


def test_an_ambiguous_prefix_lists_its_candidates(
    local_store: CliStore, three_runs: list[str]
) -> None:
    error = _error(_invoke("--store", local_store.url, "show", "run_20240115", "--json"))
    assert error["code"] == "invalid_input"
    assert error["details"]["candidates"] == ["run_20240115_001", "run_20240115_002"]
    line = _failure_line(_invoke("--store", local_store.url, "show", "run_2024"))
    assert "matches 3 runs: run_20240115_001, run_20240115_002, run_20240116_001" in line


def test_a_mistyped_id_gets_the_closest_ids(local_store: CliStore, three_runs: list[str]) -> None:
    line = _failure_line(_invoke("--store", local_store.url, "show", "run_20240116_01"))
    assert line.startswith("error: run 'run_20240116_01' not found")
    assert "did you mean run_20240116_001" in line
    error = _error(_invoke("--store", local_store.url, "tail", "rnu_20240115_002", "x", "--json"))
    assert error["code"] == "not_found"
    assert error["details"]["suggestions"][0] == "run_20240115_002"


def test_an_unknown_id_far_from_every_run_suggests_nothing(
    local_store: CliStore, three_runs: list[str]
) -> None:
    error = _error(_invoke("--store", local_store.url, "show", "zzz", "--json"))
    assert error["code"] == "not_found"
    assert error["details"]["suggestions"] == []
    assert "did you mean" not in error["message"]


@pytest.mark.parametrize(
    ("ref", "code", "words"),
    [
        ("latest:bogus", "invalid_input", "no run status 'bogus'"),
        ("latest~x", "invalid_input", "not a run reference"),
        ("latest:", "invalid_input", "not a run reference"),
        ("latest~3", "not_found", "it has 3 runs in all"),
        ("latest:crashed", "not_found", "0 runs with status crashed"),
        ("../etc", "invalid_input", "run id"),
    ],
)
def test_a_bad_reference_is_a_clear_error(
    local_store: CliStore, three_runs: list[str], ref: str, code: str, words: str
) -> None:
    error = _error(_invoke("--store", local_store.url, "show", ref, "--json"))
    assert error["code"] == code
    assert words in error["message"]


def test_latest_in_a_store_without_runs_is_not_found(local_store: CliStore) -> None:
    runstore.open(local_store.url).close()
    error = _error(_invoke("--store", local_store.url, "show", "latest", "--json"))
    assert error["code"] == "not_found"
    assert error["message"].endswith("it has no runs yet")


@pytest.mark.parametrize(
    "args",
    [
        ["tail", "latest~1", "instances", "--json"],
        ["cat", "latest~1", "report.json"],
        ["verify", "latest~1", "--json"],
        ["meta", "latest~1", "--json"],
        ["tag", "latest~1", "--json"],
        ["recover", "latest~1", "--dry-run", "--json"],
    ],
    ids=lambda args: args[0],
)
def test_every_command_taking_a_run_takes_a_reference(
    local_store: CliStore, three_runs: list[str], args: list[str]
) -> None:
    result = _invoke("--store", local_store.url, *args)
    assert result.exit_code == 0, result.output
    second = three_runs[1]
    if args[0] == "tail":
        assert len(result.stdout.splitlines()) == 2
    elif args[0] == "cat":
        assert orjson.loads(result.stdout) == {"seed": 1}
    elif args[0] == "verify":
        assert [r["run_id"] for r in orjson.loads(result.stdout)["runs"]] == [second]
    elif args[0] in ("meta", "tag"):
        assert orjson.loads(result.stdout)["run_id"] == second
    else:
        assert [r["run_id"] for r in orjson.loads(result.stdout)["runs"]] == [second]


def test_diff_resolves_each_run_in_its_own_store(
    local_store: CliStore, three_runs: list[str], tmp_path: Path
) -> None:
    other = str(tmp_path / "other")
    small_runs(other, "run_x")
    result = _invoke(
        "--store", local_store.url, "diff", "latest", "latest", "--store-b", other, "--json"
    )
    report = orjson.loads(result.stdout)
    assert report["run_a"]["run_id"] == three_runs[0]
    assert report["run_b"] == {"store": other, "run_id": "run_x"}
    assert report["identical"] is True  # same seed, same content


def test_compare_takes_references(local_store: CliStore, three_runs: list[str]) -> None:
    result = _invoke("--store", local_store.url, "compare", "latest~1", "latest", "--json")
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert (report["run_a"], report["run_b"]) == (three_runs[1], three_runs[0])


def test_cp_copies_the_runs_its_references_name(
    local_store: CliStore, three_runs: list[str], tmp_path: Path
) -> None:
    target = tmp_path / "copy"
    result = _invoke("--store", local_store.url, "cp", str(target), "latest:failed", "--json")
    assert orjson.loads(result.stdout)["copied"] == ["run_20240115_001"]


def test_replay_takes_a_reference(local_store: CliStore, tmp_path: Path) -> None:
    with runstore.open(local_store.url) as store:
        run_demo(store, seed=3, instances=2, run_id="run_demo")
    out = tmp_path / "bundle"
    result = _invoke("--store", local_store.url, "replay", "run_de", "inst_001", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "bundle.json").is_file()


# -- read commands never create a store ---------------------------------------------

READ_COMMANDS = [
    ["ls"],
    ["show", "run_a"],
    ["tail", "run_a", "steps"],
    ["cat", "run_a", "report.json"],
    ["verify"],
    ["diff", "run_a", "run_b"],
    ["meta", "run_a"],
    ["tag", "run_a"],
    ["replay", "run_a", "inst_001", "-o", "bundle"],
    ["gc", "--dry-run"],
    ["recover", "--dry-run"],
    ["cp", "elsewhere"],
    ["compare", "run_a", "run_b"],
    ["reindex"],
    ["view", "--no-browser"],
    ["flaky"],
    ["slowest"],
    ["broken"],
]


def _everything_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.parametrize("args", READ_COMMANDS, ids=lambda args: args[0])
def test_a_read_command_on_a_missing_store_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    runstore.open(str(tmp_path / "runs")).close()
    before = _everything_under(tmp_path)
    line = _failure_line(_invoke("--store", "runz", *args))
    assert line.startswith("error: no store at runz (no such directory); did you mean runs?")
    assert _everything_under(tmp_path) == before


def test_the_default_store_when_missing_says_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["ls", "--json"], env={"RUNSTORE_URL": None})
    error = _error(result)
    assert error["code"] == "not_found"
    assert "runstore demo" in error["message"]
    assert list(tmp_path.iterdir()) == []


def test_a_run_directory_given_as_the_store_names_its_store(local_store: CliStore) -> None:
    small_runs(local_store, "run_a")
    assert local_store.root is not None
    run_dir = local_store.root / "run_a"
    before = _everything_under(run_dir)
    error = _error(_invoke("--store", str(run_dir), "show", "x", "--json"))
    assert error["code"] == "not_found"
    assert error["details"] == {
        "url": str(run_dir),
        "store": str(local_store.root),
        "run_id": "run_a",
    }
    assert f"its store is {local_store.root}" in error["message"]
    assert _everything_under(run_dir) == before  # no .runstore/ planted in the run


def test_a_folder_holding_no_store_is_not_opened(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    small = str(tmp_path / "runs")
    small_runs(small, "run_a")
    line = _failure_line(_invoke("--store", str(tmp_path), "ls"))
    assert "the folder holds no runs" in line
    assert f"did you mean {tmp_path / 'runs'}?" in line
    assert not (tmp_path / ".runstore").exists()


def test_a_file_given_as_the_store_is_invalid_input(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    error = _error(_invoke("--store", str(tmp_path / "notes.txt"), "ls", "--json"))
    assert error["code"] == "invalid_input"
    assert "is a file" in error["message"]


def test_a_file_url_missing_its_slashes_creates_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    error = _error(_invoke("--store", "file:data/runs", "ls", "--json"))
    assert error["code"] == "invalid_input"
    assert list(tmp_path.iterdir()) == []


def test_a_missing_parent_folder_is_named(tmp_path: Path) -> None:
    line = _failure_line(_invoke("--store", str(tmp_path / "a" / "b"), "ls"))
    assert f"({tmp_path / 'a'} does not exist)" in line


def test_the_second_store_of_diff_must_exist_too(local_store: CliStore, tmp_path: Path) -> None:
    small_runs(local_store, "run_a")
    missing = tmp_path / "nowhere"
    error = _error(
        _invoke(
            "--store",
            local_store.url,
            "diff",
            "run_a",
            "run_a",
            "--store-b",
            str(missing),
            "--json",
        )
    )
    assert error["code"] == "not_found"
    assert not missing.exists()


def test_demo_creates_the_store(tmp_path: Path) -> None:
    result = _invoke("--store", str(tmp_path / "new"), "demo", "--instances", "1", "--json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / ".runstore").is_dir()


# -- hints ---------------------------------------------------------------------------


def test_this_checkout_is_found_from_the_editable_install() -> None:
    assert hints.checkout_root() == CORE.parent


def test_an_install_hint_from_a_checkout_names_both_forms() -> None:
    hint = hints.install_hint("runstore[view]")
    assert hint.startswith("pip install 'runstore[view]' (from PyPI)")
    assert f"pip install -e '{CORE}[view]'" in hint
    fsspec = hints.install_hint("runstore-fsspec[s3]")
    assert f"pip install -e '{CORE.parent / 'plugins' / 'runstore-fsspec'}[s3]'" in fsspec


def test_an_install_hint_outside_a_checkout_is_the_published_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hints, "checkout_root", lambda: None)
    assert hints.install_hint("runstore[view]") == "pip install 'runstore[view]'"


def test_a_missing_backend_package_gets_the_install_hint() -> None:
    error = BackendNotFoundError(
        "no installed backend handles s3:// (installed: local); install runstore-fsspec[s3]",
        details={"scheme": "s3", "package": "runstore-fsspec[s3]"},
    )
    explained = hints.explain(error)
    assert isinstance(explained, BackendNotFoundError)
    assert explained.message.startswith(error.message)
    assert "pip install 'runstore-fsspec[s3]'" in explained.message
    assert "pip install -e " in explained.details["install"]


def test_view_without_the_extra_names_the_checkout_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"  # as if starlette were not installed
        "from runstore.cli import main\n"
        f"main(['--store', {str(tmp_path)!r}, 'view', '--no-browser'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 1
    err = done.stderr.decode()
    assert f"pip install -e '{CORE}[view]'" in err
    assert "Traceback" not in err


def _without_credentials(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") or k in ("AWS_DEFAULT_REGION", "AWS_CA_BUNDLE")
    }
    # no ~/.aws files, no instance metadata lookups
    return {**env, "HOME": str(home), "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.mark.parametrize("json_output", [False, True], ids=["text", "json"])
def test_missing_s3_credentials_name_what_to_set(
    s3: S3Server, tmp_path: Path, json_output: bool
) -> None:
    args = ["--store", s3.url("runs"), "ls", *(["--json"] if json_output else [])]
    code = "import sys; from runstore.cli import main; main(sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        timeout=120,
        check=False,
        env=_without_credentials(tmp_path),
    )
    assert done.returncode == 1, done.stderr.decode()
    out, err = done.stdout.decode(), done.stderr.decode()
    message = orjson.loads(out)["error"]["message"] if json_output else err
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "?profile="):
        assert name in message
    assert "NoCredentialsError" in message
    if json_output:
        assert orjson.loads(out)["error"]["code"] == "permission_denied"
    else:
        assert err.startswith("error: ")
        assert "no usable S3 credentials" in err
        assert len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_tag_reads_short_words_after_the_run_as_tags_and_long_options_as_options(
    local_store: CliStore,
) -> None:
    small_runs(local_store, "run_a")
    with runstore.open(local_store.url) as store:
        store.set_tags("run_a", add=["s", "keep"])
    result = _invoke("tag", "run_a", "-s", "--store", local_store.url, "--json")
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["tags"] == ["keep"]


def test_missing_s3_credentials_are_permission_denied_in_the_api_too(
    s3: S3Server, tmp_path: Path
) -> None:
    code = (
        "import sys, runstore\n"
        "with runstore.open(sys.argv[1]) as store:\n"
        "    try:\n"
        "        store.list_runs()\n"
        "    except runstore.PermissionDeniedError as exc:\n"
        "        print(exc.code, exc.message)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, s3.url("runs")],
        capture_output=True,
        timeout=120,
        check=False,
        env=_without_credentials(tmp_path),
    )
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    assert out.startswith("permission_denied ")
    assert "AWS_ACCESS_KEY_ID" in out
    assert "AWS_PROFILE" in out


@click.command("boom")
def _boom() -> None:
    raise RuntimeError("a bug")


def test_an_unexpected_error_is_one_line_and_verbose_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(cli.commands, "boom", _boom)
    line = _failure_line(_invoke("boom"))
    assert line.startswith("error: internal error (RuntimeError: a bug); rerun with --verbose")
    error = _error(_invoke("boom", "--json"))
    assert error["details"] == {"exception": "RuntimeError('a bug')"}
    verbose = _invoke("boom", "-v")
    assert isinstance(verbose.exception, RuntimeError)  # the traceback, for the report


def test_demo_refuses_a_run_directory_or_a_file_as_its_store(local_store: CliStore) -> None:
    small_runs(local_store, "run_a")
    assert local_store.root is not None
    run_dir = local_store.root / "run_a"
    before = _everything_under(run_dir)
    error = _error(_invoke("--store", str(run_dir), "demo", "--instances", "1", "--json"))
    assert error["details"]["store"] == str(local_store.root)
    assert _everything_under(run_dir) == before
    notes = local_store.root / "notes.txt"
    notes.write_text("x")
    error = _error(_invoke("--store", str(notes), "demo", "--instances", "1", "--json"))
    assert error["code"] == "invalid_input"
