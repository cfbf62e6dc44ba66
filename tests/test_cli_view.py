"""``runstore view``: the read-only web viewer, end to end in a real headless browser.

The viewer runs as the installed ``runstore`` console script; Playwright
drives Debian's Chromium (``/usr/bin/chromium``; installed here with apt-get
when missing, as ``make browser`` does). Screenshots of every page visited go
to this session's pytest temporary directory (``screenshots``), never the
repository.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import orjson
import pytest

import runstore
from runstore.analysis.compare import compare_runs
from runstore.cli.demo import run_demo
from runstore.viewer.app import Viewer, create_app
from runstore.viewer.security import content_disposition

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
    # bootstrapped: DEMO_STAMP a file newer than what it depends on (found through VPATH)
    venv, stamp = Path(sys.executable).parent.parent, tmp_path / "demo-stamp"
    stamp.touch()
    bootstrapped = [f"VENV={venv}", f"DEMO_STAMP={stamp}", f"VPATH={REPO}"]
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
        assert rows.nth(0).inner_text().split("\t")[1:3] == [
            "run_b",
            "failed",
        ]  # after the tick box
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


# -- across runs: search, compare, the chart, next failed -----------------------------


@pytest.fixture(scope="module")
def three_demo_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The viewer serving a store of three demo runs (seeds 1, 2, 3; 20 instances each)."""
    root = tmp_path_factory.mktemp("demo3")
    with runstore.open(str(root / "runs")) as store:
        for seed in (1, 2, 3):
            run_demo(store, seed=seed, instances=20, run_id=f"night_{seed}")
        store.set_metadata("night_2", {"branch": "feature-x"})
    with serving("--store", str(root / "runs"), cwd=root) as url:
        yield url, root / "runs"


def _shot(page: Page, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"across-{name}.png"), full_page=True)


def test_searching_the_runs_and_a_malformed_filter(
    three_demo_runs: tuple[str, Path], page: Page, screenshots: Path
) -> None:
    url, _ = three_demo_runs
    page.goto(url)
    assert page.locator("table.runs a.run").all_inner_texts() == ["night_3", "night_2", "night_1"]
    page.get_by_label("search").fill("feature")  # a metadata value
    page.get_by_role("button", name="Filter").click()
    assert page.locator("table.runs a.run").all_inner_texts() == ["night_2"]
    _shot(page, screenshots, "search")
    page.get_by_label("search").fill("")
    page.get_by_label("where").fill("summary.pass_rate <")
    page.get_by_role("button", name="Filter").click()
    alert = page.get_by_role("alert")
    assert alert.inner_text().startswith("invalid filter at position 20: expected a value")
    assert page.get_by_label("where").input_value() == "summary.pass_rate <"  # kept to fix
    assert page.locator("table.runs").count() == 0
    _shot(page, screenshots, "malformed-filter")
    page.get_by_label("where").fill("run_id IN ('night_1', 'night_3')")
    page.get_by_role("button", name="Filter").click()
    assert page.locator("table.runs a.run").all_inner_texts() == ["night_3", "night_1"]


def test_ticking_two_runs_compares_them_like_runstore_compare(
    three_demo_runs: tuple[str, Path], page: Page, screenshots: Path
) -> None:
    url, root = three_demo_runs
    with runstore.open(str(root)) as store:
        expected = compare_runs(store.get_run("night_1"), store.get_run("night_2"))
    page.goto(url)
    page.get_by_label("compare night_2").check()
    page.get_by_label("compare night_1").check()
    page.get_by_role("button", name="Compare the two ticked runs").click()
    page.wait_for_url("**/compare?**")
    assert page.locator("h1").inner_text() == "Compare night_1 → night_2"
    for name in ("regressions", "fixes", "changed", "new", "missing"):
        shown = page.locator(f"table.changes.{name} td.instance-id").all_inner_texts()
        assert shown == [c.instance_id for c in getattr(expected, name)], name
    _shot(page, screenshots, "compare")
    changed = expected.regressions or expected.fixes or expected.changed
    assert changed, "seeds 1 and 2 of the demo differ somewhere"
    first = changed[0].instance_id
    page.get_by_role("link", name="night_2").nth(1).click()  # the h1's link, then the table's
    page.wait_for_url(f"**/runs/night_2/instances/{first}")
    assert page.locator("h1").inner_text().startswith(first)


def test_the_chart_across_runs_links_each_dot_to_its_run(
    three_demo_runs: tuple[str, Path], page: Page, screenshots: Path
) -> None:
    url, _ = three_demo_runs
    page.goto(url)
    page.get_by_role("link", name="chart these runs").click()
    page.wait_for_url("**/chart**")
    trends = page.locator("svg.trend")
    assert trends.count() == 2  # pass rate and duration: the demo logs no metric
    assert trends.nth(0).locator("circle.dot").count() == 3
    assert trends.nth(1).locator("circle.dot").count() == 3
    _shot(page, screenshots, "chart")
    trends.nth(0).locator("a").last.click()  # the newest run is on the right
    page.wait_for_url(f"{url}runs/night_3")


def test_next_failed_walks_the_failed_instances_in_order(
    three_demo_runs: tuple[str, Path], page: Page, screenshots: Path
) -> None:
    url, root = three_demo_runs
    with runstore.open(str(root)) as store:
        failed = [
            r["instance_id"]
            for r in store.get_run("night_2").read("instances")
            if r["status"] in ("failed", "error")
        ]
    assert len(failed) >= 2, "the demo fails a few of 20 instances"
    page.goto(f"{url}runs/night_2")
    page.get_by_role("link", name=f"first failed instance: {failed[0]}").click()
    visited = [page.url.rsplit("/", 1)[1]]
    while page.locator("a.next-failed").count():
        page.locator("a.next-failed").click()
        page.wait_for_load_state()
        visited.append(page.url.rsplit("/", 1)[1])
        assert "failed" in page.locator("h1").inner_text()
    assert visited == failed
    assert page.locator("svg.timeline rect").count() >= 1  # the step waterfall
    _shot(page, screenshots, "next-failed")
    page.locator("a.previous-failed").click()
    page.wait_for_url(f"**/instances/{failed[-2]}")
    page.locator("a.artifact-link").first.click()  # a step's request artifact...
    page.wait_for_url("**/artifacts/**")
    page.locator("a.instance-link").click()  # ...and back to its instance
    page.wait_for_url(f"**/instances/{failed[-2]}")


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


# -- hardened responses, over plain HTTP (and in process) ---------------------------

HARDENED = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-resource-policy": "same-origin",
}


def _assert_hardened(headers: dict[str, str], cache: str = "no-store") -> None:
    """The security headers every response of the viewer carries."""
    assert {name: headers.get(name) for name in HARDENED} == HARDENED
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "script-src" not in csp
    assert headers["cache-control"] == cache


@dataclass
class Served:
    """One response of the app in process: its start, its body's size, the memory it took."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    size: int = 0
    peak: int = 0
    error: BaseException | None = None


def _in_process(app: Any, path: str) -> Served:
    """GET ``path`` from the ASGI ``app`` (lifespan included), tracing memory (tracemalloc).

    In a thread: Playwright holds an event loop in the main one. The body is not kept.
    """
    served = Served()
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": path, "query_string": b""}
    scope |= {
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "headers": [(b"host", b"localhost")],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            served.status = message["status"]
            served.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        else:
            served.size += len(message.get("body", b""))

    async def main() -> None:
        async with app.router.lifespan_context(app):
            tracemalloc.start()
            try:
                await app(scope, receive, send)
            except Exception as exc:  # Starlette re-raises a 500's exception for the log
                served.error = exc
            finally:
                served.peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()

    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, main()).result()
    return served


def test_every_response_carries_the_security_headers_and_only_loopback_is_served(
    local_store: CliStore, small_runs: Runs, tmp_path: Path
) -> None:
    small_runs(local_store, "run_a", "run_d")
    local_store.overwrite("run_d/logs.jsonl", b"not json\n")  # reading it is a 500 page
    asked = [  # method, status, paths
        "GET 200 / /runs/run_a /runs/run_a/instances/inst_001 /runs/run_a/streams/steps",
        "GET 200 /runs/run_a/artifacts/report.json /runs/run_a/raw/report.json /static/style.css",
        "GET 400 /runs/run_a?offset=x",
        "GET 404 /nowhere /runs/run_nope",
        "GET 500 /runs/run_d/streams/logs",  # the damaged stream
        "POST 405 /",
    ]
    with serving("--store", local_store.url, cwd=tmp_path) as url:
        for line in asked:
            method, expected, *paths = line.split()
            for path in paths:
                status, headers, body = _request(url, method, path)
                assert status == int(expected), (method, path, status)
                _assert_hardened(headers, "no-cache" if "/static/" in path else "no-store")
                assert b"<script" not in body and b" style=" not in body  # nothing inline
        assert b"run_nope" in _request(url, "GET", "/runs/run_nope")[2]
        status, headers, _ = _request(url, "GET", "/", {"Host": "evil.example:80"})
        assert status == 400
        _assert_hardened(headers)


def test_an_unexpected_error_is_a_500_page_with_the_security_headers(
    local_store: CliStore, small_runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Viewer, request: Any) -> Any:
        raise RuntimeError("a bug")

    small_runs(local_store, "run_a")
    monkeypatch.setattr(Viewer, "runs", broken)
    served = _in_process(create_app(local_store.url), "/")
    assert served.status == 500 and isinstance(served.error, RuntimeError)
    _assert_hardened(served.headers)


def test_raw_downloads_name_any_artifact_per_rfc_6266(
    local_store: CliStore, tmp_path: Path
) -> None:
    name = 'out/报告 "v2".txt'  # outside Latin-1, with a quote
    with runstore.open(local_store.url) as store, store.create_run("run_n") as run:
        run.put_artifact(name, b"hello")
    with serving("--store", local_store.url, cwd=tmp_path) as url:
        status, headers, body = _request(url, "GET", "/runs/run_n/raw/" + quote(name))
    assert (status, body) == (200, b"hello")
    _, names = headers["content-disposition"].split("; ", 1)
    assert (
        names == 'filename="__ \\"v2\\".txt"; filename*=UTF-8\'\'%E6%8A%A5%E5%91%8A%20%22v2%22.txt'
    )
    _assert_hardened(headers)


@pytest.mark.parametrize(
    ("name", "fallback", "encoded"),
    [
        ("a\\b.bin", "a\\\\b.bin", "a%5Cb.bin"),
        ("a\r\nSet-Cookie: x=1", "a__Set-Cookie: x=1", "a__Set-Cookie%3A%20x%3D1"),
        ("\x00\x7f\x85\u2028\u202e\ud800.txt", "______.txt", "______.txt"),
    ],
)
def test_content_disposition_escapes_names_and_keeps_control_characters_out(
    name: str, fallback: str, encoded: str
) -> None:
    value = content_disposition("attachment", name)
    assert value == f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


# -- records of several MiB: pages capped in bytes, memory bounded --------------------

MIB = 1 << 20
BIG = "x" * (4 * MIB)
STEPS = 44
BIGS = 6


@pytest.fixture(scope="module")
def big_records(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store whose run_big holds records of 4 MiB (13 of them) and steps of 100 kB."""
    url = str(tmp_path_factory.mktemp("big") / "runs")
    with runstore.open(url) as store, store.create_run("run_big") as run:
        run.append("instances", {"instance_id": "i1", "status": "passed", "note": BIG})
        for n in range(STEPS):
            out = BIG if n < BIGS else "y" * 100_000
            run.append("steps", {"instance_id": "i1", "step_name": f"s{n}", "out": out})
        for _ in range(BIGS):
            run.log("info", BIG, instance_id="i1")
    return url


def test_pages_are_capped_in_bytes_and_link_each_cut_record_raw(
    big_records: str, tmp_path: Path
) -> None:
    with serving("--store", big_records, cwd=tmp_path) as url:
        status, _, body = _request(url, "GET", "/runs/run_big/streams/steps")
        assert status == 200 and len(body) < 3 * MIB
        page = body.decode()
        shown = page.count("<li>")
        assert BIGS < shown < STEPS
        assert page.count('truncated — <a href="/runs/run_big/streams/steps/raw?line=') == shown
        assert f"{STEPS - shown} records left for the next page" in page
        assert f'href="?offset={shown}"' in page

        status, _, body = _request(url, "GET", f"/runs/run_big/streams/steps?offset={shown}")
        assert status == 200 and body.decode().count("<li>") == STEPS - shown
        assert b"left for the next page" not in body

        status, headers, body = _request(url, "GET", "/runs/run_big/streams/steps/raw?line=2")
        assert orjson.loads(body)["step_name"] == "s1" and orjson.loads(body)["out"] == BIG
        _assert_hardened(headers)
        status, headers, body = _request(url, "GET", "/runs/run_big/streams/steps/raw")
        assert [orjson.loads(line)["step_name"] for line in body.splitlines()] == [
            f"s{n}" for n in range(STEPS)
        ]
        assert headers["content-disposition"].startswith('attachment; filename="steps.jsonl"')

        status, _, body = _request(url, "GET", "/runs/run_big")
        assert status == 200 and len(body) < 3 * MIB
        assert body.count(b"truncated") == BIGS  # the log lines
        status, _, body = _request(url, "GET", "/runs/run_big/instances/i1")
        assert status == 200 and len(body) < 3 * MIB
        assert b"more records of this instance are not shown" in body


def test_pages_of_huge_records_take_bounded_memory(big_records: str) -> None:
    app = create_app(big_records)
    for page in ("streams/steps", "streams/logs", "", "instances/i1"):
        path = f"/runs/run_big/{page}".rstrip("/")
        served = _in_process(app, path)
        # reading a line of 4 MiB peaks at ~19 MiB (in the core), its record takes 4 MiB
        # more: a page that kept the 6 of a stream would need 24 MiB more than that
        assert served.peak < 40 * MIB, f"{path}: {served.peak / MIB:.1f} MiB"
        assert served.status == 200 and served.size < 3 * MIB, path


# -- a live run whose writer died -----------------------------------------------------


def test_a_run_whose_writer_stopped_beating_is_not_called_live(
    local_store: CliStore, tmp_path: Path
) -> None:
    with runstore.open(local_store.url) as store:
        for run_id in ("run_alive", "run_dead"):  # closed unfinished: the writers are gone
            store.create_run(run_id).append("instances", {"instance_id": "i", "status": "passed"})
    state = orjson.loads(local_store.read("run_dead/state.json"))
    beat = datetime.now(UTC) - timedelta(minutes=10)
    state["heartbeat_at"] = beat.isoformat().replace("+00:00", "Z")
    local_store.overwrite("run_dead/state.json", orjson.dumps(state))
    with serving("--store", local_store.url, cwd=tmp_path) as url:
        alive = _request(url, "GET", "/runs/run_alive")[2].decode()
        dead = _request(url, "GET", "/runs/run_dead")[2].decode()
    assert "live: refreshes every 5 s" in _between(alive, "<h1>", "</h1>")
    assert 'http-equiv="refresh"' in alive
    assert "s ago)" in _between(alive, "<th>heartbeat</th>", "</tr>")
    h1 = _between(dead, "<h1>", "</h1>")
    assert "writer not seen since" in h1 and "live" not in h1
    assert "(10m 0" in h1  # how long ago
    assert 'http-equiv="refresh"' not in dead


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
