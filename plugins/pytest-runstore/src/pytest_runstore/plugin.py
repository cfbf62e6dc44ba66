"""The pytest entry point: options, switching recording on, the ``runstore_run`` fixture.

Installed but not switched on, the plugin adds its options and its fixture and
nothing else: no hook runs per test and runstore is not imported. Recording
is on with ``--runstore[=URL]``, the ``runstore_url`` ini option or
``$PYTEST_RUNSTORE_URL``; ``--no-runstore`` turns it off whatever else says.
``$RUNSTORE_URL`` alone never switches it on (other tools set it to pick a
store); it is where a bare ``--runstore`` records when nothing else names a
store.
"""

from __future__ import annotations

import os
from typing import Final

import pytest

from pytest_runstore.capture import Capture, TestRun

__all__ = ["ENV_URL", "runstore_run"]

ENV_URL: Final = "PYTEST_RUNSTORE_URL"
"""Environment variable that switches recording on and names the store."""

_CAPTURE: Final = pytest.StashKey[Capture]()
_OPTION: Final = "--runstore"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("runstore", "recording the session as a runstore run")
    group.addoption(
        _OPTION,
        nargs="?",
        const="",
        default=None,
        dest="runstore_url",
        metavar="URL",
        help="Record the session as a runstore run, in the store URL (write --runstore=URL; "
        f"bare: ${ENV_URL}, the runstore_url ini option, $RUNSTORE_URL or ./runs).",
    )
    group.addoption(
        "--no-runstore",
        action="store_true",
        dest="runstore_off",
        help=f"Do not record, whatever the ini file or ${ENV_URL} say.",
    )
    group.addoption(
        "--runstore-meta",
        action="append",
        default=[],
        dest="runstore_meta",
        metavar="KEY=VALUE",
        help="Add metadata to the recorded run (repeatable).",
    )
    group.addoption(
        "--runstore-tag",
        action="append",
        default=[],
        dest="runstore_tags",
        metavar="TAG",
        help="Tag the recorded run (repeatable).",
    )
    group.addoption(
        "--runstore-artifacts",
        action="append",
        default=[],
        dest="runstore_artifacts",
        metavar="GLOB",
        help="Store the files matching GLOB (relative to the rootdir) as artifacts of the "
        "run when the session ends (repeatable).",
    )
    parser.addini(
        "runstore_url",
        "Record every session in this runstore store (a path is relative to the ini file).",
        default="",
    )


def pytest_load_initial_conftests(args: list[str]) -> None:
    # A bare '--runstore' followed by a test path would take the path as its URL
    # (argparse's optional value): only '--runstore=URL' names a store.
    for index, arg in enumerate(args):
        if arg == _OPTION:
            args[index] = f"{_OPTION}="


def requested_url(config: pytest.Config) -> str | None:
    """The config string to record in, ``""`` for the default store, ``None``: not recording."""
    if config.getoption("runstore_off", False):
        return None
    url: str | None = config.getoption("runstore_url", None)
    ini = str(config.getini("runstore_url") or "")
    if ini and ":" not in ini and config.inipath is not None:
        ini = str(config.inipath.parent / ini)  # a path in the ini file is relative to it
    env = os.environ.get(ENV_URL, "")
    if url is not None:
        return url or env or ini
    return env or ini or None


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: the controller writes the run
        run_id = workerinput.get("runstore_run_id")
        if run_id is not None:
            capture = Capture(run_id, workerinput.get("runstore_url"))
            _start_capture(config, capture)
        return
    url = requested_url(config)
    if url is None or config.option.collectonly:  # listing tests is not a test run
        return
    from pytest_runstore.recorder import Recorder

    recorder = Recorder(config, url or None)
    config.pluginmanager.register(recorder, "runstore-recorder")
    _start_capture(config, recorder.capture)


def _start_capture(config: pytest.Config, capture: Capture) -> None:
    config.stash[_CAPTURE] = capture
    config.pluginmanager.register(capture, "runstore-capture")
    capture.install()
    config.add_cleanup(capture.uninstall)


@pytest.fixture
def runstore_run(request: pytest.FixtureRequest) -> TestRun:
    """This test's instance of the recorded run: attach artifacts, metrics, assertions.

    When the session is not recorded it checks its input the same way and drops it.
    """
    return TestRun(request.node.nodeid, request.config.stash.get(_CAPTURE, None))
