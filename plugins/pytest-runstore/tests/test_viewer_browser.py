"""A recorded pytest session in ``runstore view``, clicked through in a real headless browser.

A small pytest session (a pass, a failure with captured output, a skip, a
test whose node id holds a ``/``) is recorded with ``--runstore`` in a
separate process; the viewer serves it as the installed ``runstore`` console
script, and Playwright drives Debian's Chromium (``/usr/bin/chromium``, as
tests/test_cli_view.py does; never a downloaded browser). Screenshots of the
pages each test ends on go to the pytest temporary directory
(``screenshots``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest
from pytest_runstore import encode_nodeid

import runstore

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytest.importorskip("starlette")
pytest.importorskip("jinja2")

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

SUITE = """
    import pytest

    def test_total():
        assert 2 + 2 == 4

    def test_refund():
        print("refunding 3 items")
        total = 29.99
        assert total == 30, "the refund lost a cent"

    @pytest.mark.skip(reason="no yen prices yet")
    def test_yen():
        pass

    @pytest.mark.parametrize("pair", ["eur/usd"])
    def test_rate(pair):
        assert "/" in pair
"""
FAILED = "test_shop.py::test_refund"
SLASHED = "test_shop.py::test_rate[eur/usd]"


@dataclass(frozen=True)
class Recorded:
    store: Path
    run_id: str
    url: str


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


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """The small session recorded into a local store, and the viewer serving that store."""
    root = tmp_path_factory.mktemp("shop")
    (root / "test_shop.py").write_text(textwrap.dedent(SUITE))
    (root / "pytest.ini").write_text("[pytest]\n")
    store = root / "runs"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_RUNSTORE_URL", "RUNSTORE_URL")}
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--runstore={store}"],
        cwd=root,
        env=env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    out = done.stdout.decode()
    assert done.returncode == 1, out  # one test failed
    assert "1 failed, 2 passed, 1 skipped" in out, out
    found = re.search(r"^runstore: (run_\S+) stored in ", out, flags=re.MULTILINE)
    assert found is not None, out
    with serving(store, cwd=root) as url:
        yield Recorded(store, found.group(1), url)


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


def test_the_run_list_shows_the_recorded_session_as_a_failed_run(
    recorded: Recorded, page: Page
) -> None:
    page.goto(recorded.url)
    (row,) = page.locator("table.runs tbody tr").all()
    cells = row.inner_text().split("\t")
    assert cells[1:3] == [recorded.run_id, "failed"]  # after the tick box
    assert recorded.store.parent.name in row.inner_text()  # sut_name is the rootdir's name


def test_clicking_from_the_run_to_the_failing_test_shows_its_failure(
    recorded: Recorded, page: Page
) -> None:
    page.goto(recorded.url)
    page.get_by_role("link", name=recorded.run_id).click()
    page.wait_for_url(f"{recorded.url}runs/{recorded.run_id}")
    assert page.locator("h1").inner_text().startswith(recorded.run_id)
    shown = page.locator("table.instances tbody tr td:first-child").all_inner_texts()
    expected = ["test_total", "test_refund", "test_yen", "test_rate[eur/usd]"]
    assert sorted(shown) == sorted(encode_nodeid(f"test_shop.py::{name}") for name in expected)

    page.get_by_role("link", name="failed", exact=True).click()
    (failed,) = page.locator("table.instances tbody tr").all()
    failed.get_by_role("link").click()
    page.wait_for_url("**/instances/**")
    assert page.locator("h1").inner_text().startswith(encode_nodeid(FAILED))
    main = page.locator("main").inner_text()
    assert FAILED in main  # the exact node id, beside the encoded instance id
    assert [h.split(" · ")[1] for h in page.locator("article.step h3").all_inner_texts()] == [
        "setup",
        "call",
        "teardown",
    ]
    assert "AssertionError: the refund lost a cent" in main  # the longrepr
    artifact = page.locator("figure.artifact", has_text="longrepr-call.txt")
    assert "assert 29.99 == 30" in artifact.inner_text()
    assert "refunding 3 items" in page.locator("div.logs").inner_text()  # captured stdout


def test_a_node_id_with_a_slash_opens_its_own_instance_page(recorded: Recorded, page: Page) -> None:
    page.goto(f"{recorded.url}runs/{recorded.run_id}")
    page.get_by_role("link", name=encode_nodeid(SLASHED), exact=True).click()
    page.wait_for_url("**/instances/**")
    assert page.locator("h1").inner_text().startswith(encode_nodeid(SLASHED))
    nodeid = page.locator("table.kv tr", has=page.locator("th", has_text="nodeid"))
    assert nodeid.first.locator("td").inner_text() == SLASHED
    with runstore.open(str(recorded.store)) as store:
        (record,) = [
            r for r in store.get_run(recorded.run_id).read("instances") if r["nodeid"] == SLASHED
        ]
    assert record["outcome"] == "passed"
    assert "passed" in page.locator("h1").inner_text()
