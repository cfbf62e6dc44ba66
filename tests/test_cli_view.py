"""``runstore view``: the read-only web viewer, end to end in a real headless browser.

The viewer runs as the installed ``runstore`` console script; Playwright
drives Debian's Chromium (``/usr/bin/chromium``; installed here with apt-get
when missing, as ``make browser`` does). Screenshots of every page visited go
to this session's pytest temporary directory (``screenshots``), never the
repository.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
import pytest

import runstore

if TYPE_CHECKING:
    from conftest import CliStore
    from playwright.sync_api import BrowserContext, Page

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
REPO = Path(__file__).resolve().parents[1]
Runs = Callable[..., None]


def _script() -> str:
    found = shutil.which("runstore", path=str(Path(sys.executable).parent))
    assert found is not None, "the runstore console script is not installed next to python"
    return found


def _ensure_chromium() -> None:
    """Install Debian's Chromium when it is missing; skip only if that is impossible."""
    if CHROMIUM.exists():
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(f"{CHROMIUM} is missing and apt-get cannot install it here (run make browser)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(command, capture_output=True, env=env, timeout=900, check=False)
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace")[-500:]
            pytest.skip(f"{CHROMIUM} is missing and {' '.join(command)} failed: {tail}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Chromium with a fresh profile, driven by Playwright (no browser download).

    Module-scoped: Playwright's sync API runs an event loop in the main thread
    while it is open, which would break later tests that call ``asyncio.run``.
    """
    _ensure_chromium()
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
        name = request.node.name.replace("/", "_").replace("[", "-").rstrip("]")
        tab.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)
    finally:
        tab.close()
    assert errors == [], errors


@contextmanager
def serving(*args: str, cwd: Path) -> Iterator[str]:
    """``runstore ... view --port 0 --no-browser --json`` as a process; yields the URL."""
    process = subprocess.Popen(
        [_script(), *args, "view", "--port", "0", "--no-browser", "--json"],
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
        assert process.returncode == 130, err.decode()  # Ctrl-C, as for tail -f
        assert b"Traceback" not in err


def _request(url: str, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    """A raw HTTP request (the path is sent exactly as given, unlike a browser's)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


# -- the newcomer's path ------------------------------------------------------------


def test_make_demo_then_runstore_view_shows_the_demo_run(tmp_path: Path, page: Page) -> None:
    # `make demo` as the README says, from a fresh directory, with this venv taken as
    # bootstrapped (STAMP: a file that exists, REQS: nothing it depends on)
    venv = Path(sys.executable).parent.parent
    bootstrapped = [f"VENV={venv}", f"STAMP={sys.executable}", "REQS="]
    made = subprocess.run(
        ["make", "-f", str(REPO / "Makefile"), "demo", *bootstrapped],
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert made.returncode == 0, made.stderr.decode()
    assert b"  runstore view\n" in made.stdout  # the demo says how to look at it in a browser
    (run_id,) = [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith("run_")]
    with serving(cwd=tmp_path) as url:
        page.goto(url)
        assert page.title() == "runs · runstore"
        link = page.get_by_role("link", name=run_id)
        link.click()
        page.wait_for_url(f"{url}runs/{run_id}")
        assert page.locator("h1").inner_text().startswith(run_id)
        cards = page.locator(".cards").inner_text()
        assert "INSTANCES\n100" in cards.upper()
        assert page.locator("svg.chart rect.passed").count() == 3  # all, checkout, refund
        assert page.locator("svg.chart rect.failed").count() == 3
        assert page.locator("table.instances tbody tr").count() == 50
        assert "demo run finished" in page.locator("#logs").inner_text()


# -- browsing a run, on a local and an S3 store -------------------------------------


def test_browsing_runs_an_instance_its_artifacts_and_the_logs(
    cli_store: CliStore, small_runs: Runs, tmp_path: Path, page: Page
) -> None:
    small_runs(cli_store, "run_a", seed=1)
    small_runs(cli_store, "run_b", seed=2, status="failed", tags=("nightly",))
    with serving("--store", cli_store.url, cwd=tmp_path) as url:
        page.goto(url)
        rows = page.locator("table.runs tbody tr")
        assert rows.count() == 2
        assert rows.nth(0).inner_text().split("\t")[:2] == ["run_b", "failed"]
        assert "50.0%" in rows.nth(0).inner_text()

        page.get_by_role("link", name="run_b").click()
        assert "1 passed, 1 failed" in (page.locator("svg.chart").text_content() or "")
        page.get_by_role("link", name="failed", exact=True).click()
        failed = page.locator("table.instances tbody tr")
        assert failed.count() == 1
        failed.get_by_role("link").click()
        page.wait_for_url(f"{url}runs/run_b/instances/inst_001")

        assert page.locator("article.step h3").inner_text().startswith("Step 1 · buy")
        assertion = page.locator("table.assertions tbody tr")
        assert "ok" in assertion.inner_text() and "failed" in assertion.inner_text()
        request_json = page.locator("figure.artifact pre.json").first.inner_text()
        assert orjson.loads(request_json) == {"n": 1, "seed": 2}
        assert '"n": 1' in request_json  # pretty-printed, not the stored compact bytes

        page.get_by_role("link", name="run_b").click()
        assert "started" in page.locator("#logs").inner_text()
        page.get_by_role("link", name="steps.jsonl").click()
        assert page.locator("ol.records li").count() == 2


def test_the_run_list_filters_by_status_sut_and_tag(
    local_store: CliStore, small_runs: Runs, tmp_path: Path, page: Page
) -> None:
    small_runs(local_store, "run_ok")
    small_runs(local_store, "run_bad", status="failed", tags=("nightly",))
    with runstore.open(local_store.url) as store:
        store.create_run("run_other", sut_name="payments").finish()
    with serving("--store", local_store.url, cwd=tmp_path) as url:
        page.goto(url)
        page.get_by_label("failed").check()
        page.get_by_role("button", name="Filter").click()
        assert page.locator("table.runs a.run").all_inner_texts() == ["run_bad"]
        page.goto(url + "?sut=payments")
        assert page.locator("table.runs a.run").all_inner_texts() == ["run_other"]
        page.goto(url)
        page.get_by_label("tag").select_option("nightly")
        page.get_by_role("button", name="Filter").click()
        assert page.locator("table.runs a.run").all_inner_texts() == ["run_bad"]


def test_a_live_run_is_marked_live_and_refreshes_itself(
    local_store: CliStore, tmp_path: Path, page: Page
) -> None:
    with runstore.open(local_store.url) as store:
        run = store.create_run("run_live")
        run.append("instances", {"instance_id": "i1", "status": "passed"})
        with serving("--store", local_store.url, cwd=tmp_path) as url:
            page.goto(f"{url}runs/run_live")
            assert "live" in page.locator("h1").inner_text()
            refresh = page.locator('meta[http-equiv="refresh"]')
            assert refresh.get_attribute("content") == "5"
        run.finish()


def test_stored_html_is_shown_as_text_never_run(
    local_store: CliStore, tmp_path: Path, page: Page
) -> None:
    hostile = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
    with runstore.open(local_store.url) as store, store.create_run("run_x") as run:
        run.append("instances", {"instance_id": "i1", "status": "passed", "note": hostile})
        run.append("steps", {"instance_id": "i1", "step_name": hostile, "out": "i1/page.html"})
        run.put_artifact("i1/page.html", hostile.encode())
    with serving("--store", local_store.url, cwd=tmp_path) as url:
        page.goto(f"{url}runs/run_x/instances/i1")
        assert hostile in page.locator("main").inner_text()
        assert page.evaluate("window.pwned") is None
        page.goto(f"{url}runs/run_x/artifacts/i1/page.html")
        assert hostile in page.locator("figure.artifact pre").inner_text()
        assert page.evaluate("window.pwned") is None


# -- read-only and safe, over plain HTTP --------------------------------------------


def test_no_request_can_change_the_store(
    local_store: CliStore, small_runs: Runs, tmp_path: Path
) -> None:
    small_runs(local_store, "run_a")
    before = sorted(p.relative_to(tmp_path) for p in local_store.root.rglob("*") if p.is_file())  # type: ignore[union-attr]
    with serving("--store", local_store.url, cwd=tmp_path) as url:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            for path in ("/", "/runs/run_a", "/runs/run_a/raw/report.json"):
                status, _, _ = _request(url, method, path)
                assert status == 405, (method, path)
    after = sorted(p.relative_to(tmp_path) for p in local_store.root.rglob("*") if p.is_file())  # type: ignore[union-attr]
    assert after == before


@pytest.mark.parametrize(
    "path",
    [
        "/runs/run_a/raw/../manifest.json",
        "/runs/run_a/raw/..%2Fmanifest.json",
        "/runs/run_a/artifacts/%2Fetc%2Fpasswd",
        "/runs/..%2F..%2Fetc/raw/passwd",
        "/runs/run_a/streams/..%2Fstate",
    ],
)
def test_hostile_names_in_the_url_are_refused(
    local_store: CliStore, small_runs: Runs, tmp_path: Path, path: str
) -> None:
    small_runs(local_store, "run_a")
    with serving("--store", local_store.url, cwd=tmp_path) as url:
        status, _, body = _request(url, "GET", path)
    assert status in (400, 404), (path, status)
    assert b'"run_id"' not in body and b"root:" not in body


def test_artifacts_are_served_inert(
    local_store: CliStore, small_runs: Runs, tmp_path: Path
) -> None:
    small_runs(local_store, "run_a")
    with runstore.open(local_store.url) as store, store.create_run("run_h") as run:
        run.put_artifact("page.html", b"<script>alert(1)</script>")
    with serving("--store", local_store.url, cwd=tmp_path) as url:
        status, headers, body = _request(url, "GET", "/runs/run_a/raw/report.json")
        assert status == 200
        assert orjson.loads(body) == {"seed": 1}
        assert headers["content-type"].startswith("application/json")
        assert headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in headers["content-security-policy"]
        status, headers, _ = _request(url, "GET", "/runs/run_h/raw/page.html")
        assert headers["content-type"] == "application/octet-stream"
        assert headers["content-disposition"].startswith("attachment")


def test_only_loopback_host_names_are_served(local_store: CliStore, tmp_path: Path) -> None:
    with serving("--store", local_store.url, cwd=tmp_path) as url:
        assert _request(url, "GET", "/")[0] == 200
        assert _request(url, "GET", "/", {"Host": "evil.example:80"})[0] == 400


def test_unknown_pages_and_runs_are_404_pages(local_store: CliStore, tmp_path: Path) -> None:
    with serving("--store", local_store.url, cwd=tmp_path) as url:
        status, _, body = _request(url, "GET", "/runs/run_nope")
        assert status == 404
        assert b"run_nope" in body
        assert _request(url, "GET", "/nowhere")[0] == 404


# -- the caller's data on the run page, over plain HTTP -----------------------------

HOSTILE = "<script>window.pwned = 1</script>"


def _between(page: str, start: str, end: str) -> str:
    """The part of ``page`` after the first ``start`` and before the next ``end``."""
    _, found, rest = page.partition(start)
    assert found, f"{start!r} not in the page"
    return rest.partition(end)[0]


@pytest.fixture(scope="module")
def caller_run_page(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The HTML of the run page of a finished run carrying the caller's data.

    Its tags and metadata were changed after it finished; its state data and
    an artifact's metadata hold markup.
    """
    root = tmp_path_factory.mktemp("caller")
    url = str(root / "runs")
    with runstore.open(url) as store:
        run = store.create_run("run_c", tags=["nightly"], metadata={"owner": "qa"})
        run.set_state({"cursor": 17, "note": HOSTILE})
        run.log_metric("accuracy", 0.93)
        for n, outcome in enumerate(("passed", "error", "skipped")):
            run.append("instances", {"instance_id": f"i{n}", "status": outcome})
        run.put_artifact("model.bin", b"weights", metadata={"epoch": 3, "note": HOSTILE})
        run.finish()
        store.set_metadata("run_c", {"reviewed_by": "ana"})
        store.set_tags("run_c", add=["reviewed"], remove=["nightly"])
    with serving("--store", url, cwd=root) as server:
        status, _, body = _request(server, "GET", "/runs/run_c")
    assert status == 200
    page: str = body.decode()
    return page


def test_the_run_page_shows_the_current_tags_and_metadata(caller_run_page: str) -> None:
    assert '<span class="tag">reviewed</span>' in caller_run_page
    assert "nightly" not in caller_run_page
    assert "<tr><th>owner</th><td>qa</td></tr>" in caller_run_page
    assert "<tr><th>reviewed_by</th><td>ana</td></tr>" in caller_run_page


def test_the_run_page_shows_the_state_data_as_pretty_json(caller_run_page: str) -> None:
    data = _between(caller_run_page, '<pre class="json small state-data">', "</pre>")
    assert "{\n  &#34;cursor&#34;: 17,\n  &#34;note&#34;: " in data


def test_the_run_page_escapes_the_markup_in_state_data_and_artifact_metadata(
    caller_run_page: str,
) -> None:
    assert HOSTILE not in caller_run_page
    assert caller_run_page.count("&lt;script&gt;window.pwned = 1&lt;/script&gt;") == 2


def test_the_run_page_shows_summary_metrics_and_error_and_skip_counts(
    caller_run_page: str,
) -> None:
    assert '<tr><th>accuracy</th><td class="num">0.93</td></tr>' in caller_run_page
    assert '<div class="k">errors</div><div class="v">1</div>' in caller_run_page
    assert '<div class="k">skipped</div><div class="v">1</div>' in caller_run_page


def test_the_run_page_shows_each_artifacts_metadata(caller_run_page: str) -> None:
    row = _between(caller_run_page, '<table class="run-artifacts">', "</tr>\n  </tbody>")
    assert "/runs/run_c/artifacts/model.bin" in row
    assert '<td class="metadata"><code>{&#34;epoch&#34;: 3, &#34;note&#34;: ' in row


# -- the command itself -------------------------------------------------------------


def test_view_without_the_extra_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"  # as if starlette were not installed
        "from runstore.cli import main\n"
        f"main(['--store', {str(tmp_path / 'runs')!r}, 'view', '--no-browser'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "pip install 'runstore[view]'" in done.stderr.decode()
    assert "starlette" in done.stderr.decode()


def test_view_refuses_a_store_no_backend_serves(tmp_path: Path) -> None:
    done = subprocess.run(
        [_script(), "--store", "nosuch://x", "view", "--no-browser"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert b"nosuch" in done.stderr
    assert b"Traceback" not in done.stderr
