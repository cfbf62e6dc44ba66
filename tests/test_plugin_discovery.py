"""Entry-point discovery, tested with real installed packages.

The fixture packages under ``tests/fixtures/`` are installed with pip into
temporary directories and used from a subprocess whose ``PYTHONPATH`` points
there, so the test environment itself never sees them.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
PACKAGES = {
    "demo": "runstore-demo-plugin",
    "misspelled": "runstore-misspelled-plugin",
    "broken": "runstore-broken-plugin",
}
# The workspace's own plugins are blocked so that only the fixture is under test.
# Every plugin installed in the environment is blocked, so only the fixtures are under test.
WORKSPACE_PLUGINS = ",".join(
    sorted(importlib.metadata.entry_points(group="runstore.plugins").names)
)


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each fixture package pip-installed into its own directory (in parallel)."""
    root = tmp_path_factory.mktemp("plugins")
    jobs = {}
    for name, package in PACKAGES.items():
        target = root / name
        jobs[name] = (
            target,
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--no-deps",
                    "--no-build-isolation",
                    "--no-input",
                    "--disable-pip-version-check",
                    "--target",
                    str(target),
                    str(FIXTURES / package),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
    for name, (_, job) in jobs.items():
        output, _ = job.communicate(timeout=240)
        assert job.returncode == 0, (
            f"pip could not install {PACKAGES[name]} (is hatchling in requirements-dev.txt "
            f"installed?):\n{output}"
        )
    return {name: target for name, (target, _) in jobs.items()}


@dataclass
class Outcome:
    result: Any
    error: dict[str, Any] | None


def _run(code: str, path: Path, *, disabled: str = WORKSPACE_PLUGINS) -> Outcome:
    """Run ``code`` with the package in ``path`` importable; it sets ``result``.

    A RunstoreError escaping ``code`` is reported as its type and ``to_dict()``.
    """
    script = (
        "import json, runstore\n"
        "result = None\n"
        "try:\n"
        + textwrap.indent(textwrap.dedent(code), "    ")
        + "\nexcept runstore.RunstoreError as exc:\n"
        "    print(json.dumps({'error': dict(exc.to_dict(), type=type(exc).__name__)}))\n"
        "else:\n"
        "    print(json.dumps({'result': result, 'error': None}))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(path),
        "RUNSTORE_DISABLE_PLUGINS": disabled,
    }
    env.pop("RUNSTORE_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return Outcome(result=data.get("result"), error=data["error"])


def test_installed_plugin_backend_opens_from_its_scheme(installed: dict[str, Path]) -> None:
    outcome = _run(
        """
        with runstore.open("demo://x") as store:
            with store.create_run(run_id="run_1") as run:
                run.append("instances", {"instance_id": "i1", "status": "passed"})
            view = store.get_run("run_1")
            result = [
                store.backend_names,
                type(store.aio.state_backend).__name__,
                view.state.status,
                view.summary.pass_count,
            ]
        """,
        installed["demo"],
    )
    assert outcome.error is None
    assert outcome.result == [
        {"state": "demo", "logs": "demo", "artifacts": "demo"},
        "DemoBackend",
        "succeeded",
        1,
    ]


def test_installed_plugin_is_listed_by_its_entry_point_name(installed: dict[str, Path]) -> None:
    outcome = _run(
        """
        from runstore.registry.plugins import Plugins
        plugins = Plugins()
        spec = plugins.backends()["demo"]
        result = [plugins.names(), plugins.distribution_of("demo"), list(spec.schemes)]
        """,
        installed["demo"],
    )
    assert outcome.result == [["demo", "memory"], "runstore-demo-plugin", ["demo"]]


def test_installed_plugin_passes_the_registration_check(installed: dict[str, Path]) -> None:
    outcome = _run(
        """
        from runstore.testing import check_registration
        result = check_registration("runstore-demo-plugin", "demo").name
        """,
        installed["demo"],
    )
    assert outcome.result == "demo"


def test_installed_plugin_backend_can_be_forced_by_name(installed: dict[str, Path]) -> None:
    outcome = _run(
        """
        with runstore.open("demo+memory://x") as store:
            result = store.backend_names["state"]
        """,
        installed["demo"],
    )
    assert outcome.result == "demo"


def test_disabled_plugin_scheme_is_backend_not_found(installed: dict[str, Path]) -> None:
    outcome = _run(
        """
        from runstore.registry.plugins import Plugins
        result = Plugins().names()
        runstore.open("demo://x")
        """,
        installed["demo"],
        disabled=f"{WORKSPACE_PLUGINS},demo",
    )
    assert outcome.error is not None
    assert (outcome.error["type"], outcome.error["code"]) == (
        "BackendNotFoundError",
        "backend_not_found",
    )
    assert "demo://" in outcome.error["message"]
    assert "installed: memory (memory)" in outcome.error["message"]


def test_not_installed_plugin_scheme_is_backend_not_found(tmp_path: Path) -> None:
    outcome = _run('runstore.open("demo://x")', tmp_path)
    assert outcome.error is not None
    assert outcome.error["code"] == "backend_not_found"


def test_installed_misspelled_hook_fails_at_startup_naming_the_plugin(
    installed: dict[str, Path],
) -> None:
    outcome = _run('runstore.open("memory://x")', installed["misspelled"])
    assert outcome.error is not None
    assert (outcome.error["type"], outcome.error["code"]) == ("PluginError", "plugin_error")
    assert "'misspelled'" in outcome.error["message"]
    assert "runstore_register_backend" in outcome.error["message"]
    assert outcome.error["details"]["plugin"] == "misspelled"


def test_misspelled_plugin_can_be_blocked(installed: dict[str, Path]) -> None:
    outcome = _run(
        """
        with runstore.open("memory://x") as store:
            result = store.backend_names["state"]
        """,
        installed["misspelled"],
        disabled=f"{WORKSPACE_PLUGINS},misspelled",
    )
    assert (outcome.error, outcome.result) == (None, "memory")


def test_plugin_that_fails_to_import_is_named_with_how_to_block_it(
    installed: dict[str, Path],
) -> None:
    outcome = _run('runstore.open("memory://x")', installed["broken"])
    assert outcome.error is not None
    assert (outcome.error["type"], outcome.error["code"]) == ("PluginError", "plugin_error")
    assert "'broken'" in outcome.error["message"]
    assert "needs a dependency that is not installed" in outcome.error["message"]
    assert "RUNSTORE_DISABLE_PLUGINS=broken" in outcome.error["message"]
