"""Fixtures for pytest-runstore's tests: inner pytest sessions and their stored runs.

The browser tests serve a recorded session with the installed ``runstore``
console script and drive Debian's Chromium (``/usr/bin/chromium``, as
tests/test_cli_view.py does; never a downloaded browser) through Playwright.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest

import runstore

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page


@pytest.fixture(autouse=True)
def _no_recording_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The outer session may itself be recorded; inner sessions decide for themselves.
    monkeypatch.delenv("PYTEST_RUNSTORE_URL", raising=False)
    monkeypatch.delenv("RUNSTORE_URL", raising=False)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def open_store(store_path: Path) -> Iterator[Callable[[], runstore.Store]]:
    opened: list[runstore.Store] = []

    def _open() -> runstore.Store:
        store = runstore.open(str(store_path))
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def only_run(open_store: Callable[[], runstore.Store]) -> Callable[[], runstore.RunView]:
    """The one run the inner session stored."""

    def _only() -> runstore.RunView:
        store = open_store()
        records = list(store.list_runs())
        assert len(records) == 1, [r.run_id for r in records]
        return store.get_run(records[0].run_id)

    return _only


# -- recorded sessions in runstore view, in a real browser ----------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass(frozen=True)
class Session:
    """A pytest session run in a process of its own: its exit status and output."""

    returncode: int
    out: str

    @property
    def run_id(self) -> str:
        """The run its ``runstore: RUN stored in URL`` line names."""
        found = re.search(r"^runstore: (run_\S+) stored in ", self.out, flags=re.MULTILINE)
        assert found is not None, self.out
        return found.group(1)


def run_session(cwd: Path, *args: str, timeout: float = 600) -> Session:
    """``python -m pytest -p no:cacheprovider ARGS...`` in ``cwd``.

    The outer session's own recording settings and ``PYTEST_ADDOPTS`` are not
    passed on: pass ``--runstore=URL`` to record.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTEST_RUNSTORE_URL", "RUNSTORE_URL", "PYTEST_ADDOPTS")
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return Session(done.returncode, done.stdout.decode() + done.stderr.decode())


def _script() -> str:
    found = shutil.which("runstore", path=str(Path(sys.executable).parent))
    assert found is not None, "the runstore console script is not installed next to python"
    return found


@contextmanager
def serving(store: Path, cwd: Path) -> Iterator[str]:
    """``runstore --store STORE view --port 0 --no-browser --json``; yields its URL."""
    process = subprocess.Popen(
        [_script(), "--store", str(store), "view", "--port", "0", "--no-browser", "--json"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, process.stderr.read().decode() if process.stderr else "no output"
        yield orjson.loads(line)["url"]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung server fails the test
            process.kill()
            process.wait()
            raise
        assert process.returncode == 130, err.decode()  # Ctrl-C ends it, as for tail -f
        assert b"Traceback" not in err


@pytest.fixture(scope="session")
def run_pytest() -> Callable[..., Session]:
    """:func:`run_session`: ``run_pytest(cwd, *pytest_args)``."""
    return run_session


@pytest.fixture(scope="session")
def serve() -> Callable[[Path, Path], AbstractContextManager[str]]:
    """:func:`serving`: ``with serve(store, cwd) as url:``, the viewer on that store."""
    return serving


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Chromium with a fresh profile, driven by Playwright (no browser download).

    Module-scoped: Playwright's sync API runs an event loop in the main thread
    while it is open.
    """
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (make browser installs Debian's chromium)")
    pytest.importorskip("playwright", reason="Playwright drives the browser (requirements-dev)")
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def page(
    browser: BrowserContext, screenshots: Path, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A new tab; a full-page screenshot of where it ended goes to ``screenshots``."""
    tab = browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
        tab.screenshot(path=str(screenshots / f"{request.node.name}.png"), full_page=True)
    finally:
        tab.close()
    assert errors == [], errors
