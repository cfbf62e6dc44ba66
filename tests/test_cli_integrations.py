"""Integrations end to end: ``runstore schema``, ``runstore replay``, the example observer
plugin as an installed package, the logging handler across a crash, and every Python
example in docs/integrations.md and docs/replay.md, run as written."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

import runstore
import runstore.replay
import runstore.streams
from runstore.cli.app import cli
from runstore.cli.demo import run_demo
from runstore.registry.plugins import Plugins

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLE_PLUGIN = "print-phase-outputs"
EXAMPLE_DISTRIBUTION = "runstore-print-phase-outputs"


def _invoke(*args: str, store: Path | None = None) -> Result:
    prefix = ["--store", str(store)] if store is not None else []
    return CliRunner().invoke(cli, [*prefix, *args])


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def _python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env}
    environment.pop("RUNSTORE_URL", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def demo_store(tmp_path: Path) -> Path:
    """A local store holding the seeded demo run ``run_demo`` (6 instances)."""
    root = tmp_path / "runs"
    with runstore.open(str(root)) as store:
        run_demo(store, seed=11, instances=6, run_id="run_demo")
    return root


# -- runstore schema -------------------------------------------------------------------


def test_schema_prints_every_schema_by_name() -> None:
    assert _json(_invoke("schema")) == runstore.streams.schemas()


def test_schema_prints_one_stream() -> None:
    assert _json(_invoke("schema", "steps")) == runstore.streams.schema("steps")


def test_schema_out_writes_one_file_per_schema(tmp_path: Path) -> None:
    result = _invoke("schema", "--out", str(tmp_path / "schemas"), "--json")
    written = _json(result)["written"]
    assert sorted(Path(p).name for p in written) == sorted(
        f"{name}.schema.json" for name in runstore.streams.schemas()
    )
    steps = json.loads((tmp_path / "schemas" / "steps.schema.json").read_text())
    assert steps == runstore.streams.schema("steps")


def test_schema_of_a_user_model(tmp_path: Path) -> None:
    result = _invoke(
        "schema",
        "phase_outputs",
        "--model",
        "runstore.model.run:ArtifactRef",
        "--out",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    exported = json.loads((tmp_path / "phase_outputs.schema.json").read_text())
    assert exported["title"] == "phase_outputs.jsonl line"
    assert "sha256" in exported["properties"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["schema", "nope"], "runstore defines: instances, steps"),
        (["schema", "--model", "no_colon"], "MODULE:CLASS"),
        (["schema", "--model", "runstore.nowhere:X"], "cannot import"),
        (["schema", "--model", "runstore.model.run:utcnow"], "not a pydantic model"),
    ],
)
def test_schema_errors_are_one_line_and_exit_1(args: list[str], says: str) -> None:
    result = _invoke(*args)
    assert result.exit_code == 1
    assert says in result.stderr
    assert "Traceback" not in result.output


# -- runstore replay -------------------------------------------------------------------


def test_replay_exports_a_bundle_that_loads_back(demo_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "inst_002"
    result = _invoke("replay", "run_demo", "inst_002", "--out", str(out), store=demo_store)
    assert result.exit_code == 0, result.output
    assert "Exported inst_002 of run run_demo" in result.stdout
    with runstore.open(str(demo_store)) as store:
        original = store.get_run("run_demo").instance("inst_002")
    loaded = runstore.replay.load(out)
    assert loaded == original
    for ref in loaded.artifacts:
        assert (out / "artifacts" / ref.name).stat().st_size == ref.size
        assert loaded.read_artifact(ref.name)  # sha256 checked


def test_replay_refuses_to_overwrite_without_force(demo_store: Path, tmp_path: Path) -> None:
    args = ("replay", "run_demo", "inst_001", "--out", str(tmp_path))
    assert _invoke(*args, store=demo_store).exit_code == 0
    again = _invoke(*args, store=demo_store)
    assert again.exit_code == 1
    assert "exists" in again.stderr
    assert _invoke(*args, "--force", store=demo_store).exit_code == 0


def test_replay_json_reports_what_was_written(demo_store: Path, tmp_path: Path) -> None:
    report = _json(
        _invoke("replay", "run_demo", "inst_003", "-o", str(tmp_path), "--json", store=demo_store)
    )
    bundle = runstore.replay.load(tmp_path)
    assert report == {
        "bundle": str(tmp_path / "bundle.json"),
        "run_id": "run_demo",
        "instance_id": "inst_003",
        "steps": len(bundle.steps),
        "assertions": len(bundle.assertions),
        "logs": len(bundle.logs),
        "artifacts": len(bundle.artifacts),
        "artifact_bytes": sum(ref.size for ref in bundle.artifacts),
    }
    assert report["steps"] > 0 and report["artifacts"] == 2 * report["steps"]


def test_replay_of_an_unknown_instance_is_not_found(demo_store: Path, tmp_path: Path) -> None:
    result = _invoke(
        "replay", "run_demo", "inst_999", "--out", str(tmp_path), "--json", store=demo_store
    )
    assert result.exit_code == 1
    assert orjson.loads(result.stdout)["error"]["code"] == "not_found"
    assert not (tmp_path / "bundle.json").exists()


def test_replay_through_the_console_script(demo_store: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "runstore",
            "--store",
            str(demo_store),
            "replay",
            "run_demo",
            "inst_004",
            "--out",
            str(tmp_path / "b"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["instance_id"] == "inst_004"
    assert runstore.replay.load(tmp_path / "b").instance_id == "inst_004"


# -- the example observer plugin, installed ----------------------------------------------


def test_example_plugin_is_installed_and_discovered_by_its_entry_point() -> None:
    try:
        importlib.metadata.distribution(EXAMPLE_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a broken dev env
        pytest.fail(
            f"{EXAMPLE_DISTRIBUTION} is not installed: "
            "pip install -e docs/examples/print-phase-outputs (requirements-dev.txt does)"
        )
    plugins = Plugins()
    assert EXAMPLE_PLUGIN in plugins.names()
    assert plugins.distribution_of(EXAMPLE_PLUGIN) == EXAMPLE_DISTRIBUTION


_STORE_PHASE_OUTPUTS = """
    import runstore
    with runstore.open("runs") as store, store.create_run(run_id="run_po") as run:
        run.put_artifact("extract/out.json", b"{}", kind="phase_output")
        run.put_artifact("extract/debug.log", b"noise", kind="intermediate")
        run.put_artifact("translate/fr.json", b'{"a": 1}', kind="phase_output")
        run.put_artifact("translate/fr.json", b'{"a": 1}', kind="phase_output")  # no event
        refs = [ref.model_dump_json() for ref in store.get_run("run_po").artifacts()]
    print("\\n".join(refs))
"""


def test_example_plugin_prints_one_line_per_persisted_phase_output(tmp_path: Path) -> None:
    done = _python(_STORE_PHASE_OUTPUTS, tmp_path)
    assert done.returncode == 0, done.stderr
    stored = [json.loads(line) for line in done.stdout.splitlines()]
    printed = [json.loads(line) for line in done.stderr.splitlines()]
    assert printed == [ref for ref in stored if ref["kind"] == "phase_output"]
    assert [ref["name"] for ref in printed] == ["extract/out.json", "translate/fr.json"]


def test_example_plugin_appends_to_the_file_named_by_its_variable(tmp_path: Path) -> None:
    target = tmp_path / "outputs.jsonl"
    done = _python(_STORE_PHASE_OUTPUTS, tmp_path, RUNSTORE_PHASE_OUTPUTS_FILE=str(target))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert [json.loads(line)["name"] for line in target.read_text().splitlines()] == [
        "extract/out.json",
        "translate/fr.json",
    ]


def test_example_plugin_can_be_disabled_by_name(tmp_path: Path) -> None:
    done = _python(_STORE_PHASE_OUTPUTS, tmp_path, RUNSTORE_DISABLE_PLUGINS=EXAMPLE_PLUGIN)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


# -- the logging handler and a crash -----------------------------------------------------


@pytest.mark.parametrize("durability", ["flush", "fsync"])
def test_acknowledged_log_records_survive_kill_9(tmp_path: Path, durability: str) -> None:
    """Acknowledged: returned from the logging call (flush policy) or from handler.flush()."""
    script = f"""
        import logging, os, signal, sys
        import runstore, runstore.logging
        store = runstore.open("runs", durability={durability!r})
        run = store.create_run(run_id="run_crash")
        log = logging.getLogger("harness")
        handler = runstore.logging.capture(run, log)
        for n in range(300):
            log.info("record %d", n)
            if {durability!r} == "flush":
                print(n, flush=True)  # acknowledged as the call returned
        if {durability!r} == "fsync":
            handler.flush()
            print(299, flush=True)  # acknowledged by flush
            log.info("not acknowledged")
        os.kill(os.getpid(), signal.SIGKILL)
    """
    done = _python(script, tmp_path)
    assert done.returncode == -signal.SIGKILL, done.stderr
    acknowledged = int(done.stdout.split()[-1]) + 1
    with runstore.open(str(tmp_path / "runs")) as store:
        view = store.get_run("run_crash")
        messages = [line["message"] for line in view.read("logs")]
        assert view.torn_tails.get("logs", 0) == 0
    assert acknowledged == 300
    assert messages[:acknowledged] == [f"record {n}" for n in range(acknowledged)]


# -- the docs run as written -------------------------------------------------------------


def _python_blocks(page: Path) -> list[tuple[int, str]]:
    """``(line number, code)`` of each fenced ```python block of ``page``."""
    text = page.read_text()
    return [
        (text.count("\n", 0, match.start()) + 2, match.group(1))
        for match in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)
    ]


@pytest.mark.parametrize(("page", "at_least"), [("integrations.md", 8), ("replay.md", 4)])
def test_every_python_example_in_the_page_runs_as_written(
    page: str,
    at_least: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Blocks run in order, each in a fresh namespace, in one empty directory."""
    path = DOCS / page
    blocks = _python_blocks(path)
    assert len(blocks) >= at_least, f"{page} lost its examples"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNSTORE_URL", raising=False)
    monkeypatch.setenv("RUNSTORE_DISABLE_PLUGINS", EXAMPLE_PLUGIN)  # keep stderr for the docs
    for line, code in blocks:
        namespace: dict[str, Any] = {"__name__": "__docs__"}
        try:
            exec(compile(code, f"{path}:{line}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message is what a failure shows
            pytest.fail(f"{page}, block at line {line} failed: {exc!r}\n{code}")
    assert "Traceback" not in capsys.readouterr().err
