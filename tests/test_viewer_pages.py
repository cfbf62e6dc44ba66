"""The viewer's pages across runs and within one, in process (Starlette's TestClient).

Search and the ``where`` filter on the runs list, the chart across runs, the
compare page, next/previous failed instance, the step timeline, links between
steps, logs and artifacts, live refresh, the replay bundle, and bad input:
every page keeps the security headers. The browser click-throughs are in
tests/test_cli_view.py.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from markupsafe import escape
from starlette.testclient import TestClient

import runstore
from runstore.cli.app import cli
from runstore.viewer.app import create_app
from runstore.viewer.charts import Bar, Point, step_bars, timeline_svg, trend_svg

HOSTILE = "<script>window.pwned=1</script>\"'&"
PAGE_CSP = "default-src 'none'"


def _write_run(
    store: runstore.Store,
    run_id: str,
    failing: set[str],
    *,
    order: tuple[int, ...] = (1, 2, 3, 4, 5, 6),
    metadata: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    metric: float | None = None,
) -> None:
    """Six instances of two steps each (no demo field names); ``failing`` fail their check."""
    run = store.create_run(
        run_id, sut_name="shop", seed=1, metadata=metadata or {}, tags=tags or []
    )
    for n in order:
        instance = f"case_{n}"
        ok = instance not in failing
        for index, name in enumerate(("login", "pay"), start=1):
            ref = run.put_artifact(f"{instance}/{name}.json", orjson.dumps({"step": name}))
            run.append(
                "steps",
                {
                    "instance_id": instance,
                    "step_name": name,
                    "step_index": index,
                    "duration_ms": 100 * index,
                    "sent": ref.name,
                },
            )
            run.append(
                "assertions",
                {
                    "instance_id": instance,
                    "step_name": name,
                    "step_index": index,
                    "name": "http_ok",
                    "passed": ok or name == "login",
                },
            )
        run.log("info", f"{instance} done with {name}", instance_id=instance)
        run.append("instances", {"instance_id": instance, "passed": ok})
    if metric is not None:
        run.log_metric("latency_p95", metric)
    run.finish()


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = str(tmp_path_factory.mktemp("viewer") / "runs")
    with runstore.open(url) as store:
        _write_run(store, "run_base", {"case_2"}, metadata={"branch": "main"}, metric=120.0)
        _write_run(
            store,
            "run_next",
            {"case_2", "case_4"},
            order=(6, 5, 4, 3, 2, 1),
            metadata={"branch": "feature-x"},
            tags=["nightly"],
            metric=180.0,
        )
        _write_run(store, "run_fixed", set(), metadata={"branch": "main"}, tags=["nightly"])
    return url


@pytest.fixture(scope="module")
def client(store_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(store_url), base_url="http://localhost") as opened:
        yield opened


def _hardened(response: Any) -> None:
    assert PAGE_CSP in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script" not in response.text and " style=" not in response.text


def _runs(page: str) -> list[str]:
    return re.findall(r'<a class="run" href="/runs/[^"]+">([^<]+)</a>', page)


# -- search and the where filter --------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["run_fixed", "run_next", "run_base"]),
        ("?q=NEXT", ["run_next"]),  # run id, any case
        ("?q=feature", ["run_next"]),  # a metadata value
        ("?q=nightly", ["run_fixed", "run_next"]),  # a tag
        ("?q=shop", ["run_fixed", "run_next", "run_base"]),  # the system under test
        ("?where=metadata.branch+%3D+%27main%27", ["run_fixed", "run_base"]),
        ("?where=summary.pass_rate+%3C+1&q=base", ["run_base"]),
        ("?where=metrics.latency_p95+%3E%3D+150", ["run_next"]),
    ],
)
def test_the_runs_list_searches_and_filters(
    client: TestClient, query: str, expected: list[str]
) -> None:
    response = client.get("/" + query)
    assert response.status_code == 200
    assert _runs(response.text) == expected
    _hardened(response)


def test_search_text_is_matched_literally_never_as_filter_syntax(client: TestClient) -> None:
    for text in ("' OR run_id LIKE '%", "%", "r_n", "run%base", "run\\_base"):
        response = client.get("/", params={"q": text})
        assert response.status_code == 200, text
        assert _runs(response.text) == [], text


def test_a_malformed_filter_is_an_inline_400_naming_the_position(client: TestClient) -> None:
    response = client.get("/", params={"where": f"metadata.branch = '{HOSTILE}' AND"})
    assert response.status_code == 400
    _hardened(response)
    error = re.search(r'<p class="error-text filter-error"[^>]*>([^<]*)</p>', response.text)
    assert error is not None
    assert html.unescape(error.group(1)).startswith("invalid filter at position ")
    assert "expected" in error.group(1)
    assert 'aria-invalid="true"' in response.text
    assert escape(f"metadata.branch = '{HOSTILE}' AND") in response.text
    assert _runs(response.text) == []


def test_too_long_a_search_is_a_400_page(client: TestClient) -> None:
    response = client.get("/", params={"q": "x" * 201})
    assert response.status_code == 400
    assert "at most 200 are searched" in html.unescape(response.text)
    _hardened(response)


def test_links_to_the_next_page_keep_the_filter(client: TestClient) -> None:
    response = client.get("/", params={"q": "run", "limit": "1"})
    assert _runs(response.text) == ["run_fixed"]
    assert 'href="/?q=run&amp;offset=1"' in response.text
    assert _runs(client.get("/?q=run&offset=1&limit=1").text) == ["run_next"]


# -- live refresh -----------------------------------------------------------------------


def test_the_runs_list_refreshes_while_a_listed_run_is_live(tmp_path: Path) -> None:
    url = str(tmp_path / "runs")
    with runstore.open(url) as store:
        _write_run(store, "run_done", set())
        live = store.create_run("run_live")
        live.append("instances", {"instance_id": "a", "status": "passed"})
        with TestClient(create_app(url), base_url="http://localhost") as client:
            page = client.get("/").text
            assert '<meta http-equiv="refresh" content="5">' in page
            assert "live: refreshes every 5 s" in page
            paused = client.get("/?live=0").text
            assert 'http-equiv="refresh"' not in paused
            finished = client.get("/?status=succeeded").text  # the live run not listed
            assert 'http-equiv="refresh"' not in finished
            instance = client.get("/runs/run_live/instances/a").text
            assert '<meta http-equiv="refresh" content="5">' in instance
            logs = client.get("/runs/run_live/streams/instances").text
            assert '<meta http-equiv="refresh" content="5">' in logs
        live.finish()


def test_finished_runs_do_not_refresh(client: TestClient) -> None:
    for path in ("/", "/runs/run_base", "/runs/run_base/instances/case_1"):
        assert 'http-equiv="refresh"' not in client.get(path).text, path


# -- compare ----------------------------------------------------------------------------


def _section(page: str, name: str) -> list[str]:
    found = re.search(rf'<table class="changes {name}">(.*?)</table>', page, re.S)
    return re.findall(r'<td class="instance-id">([^<]+)</td>', found.group(1)) if found else []


def test_compare_lists_regressions_then_fixes_and_links_both_runs(client: TestClient) -> None:
    response = client.get("/compare?a=run_next&b=run_fixed")
    assert response.status_code == 200
    _hardened(response)
    page = response.text
    assert _section(page, "regressions") == []
    assert _section(page, "fixes") == ["case_2", "case_4"]
    assert '<a href="/runs/run_next/instances/case_2">run_next</a>' in page
    assert '<a href="/runs/run_fixed/instances/case_2">run_fixed</a>' in page
    assert "assertion pay/http_ok: failed -&gt; passed" in page
    back = client.get("/compare?a=run_fixed&b=run_next").text
    assert _section(back, "regressions") == ["case_2", "case_4"]
    assert back.index("Regressions") < back.index("Streams")


def test_two_ticked_runs_are_compared_oldest_first(client: TestClient) -> None:
    page = client.get("/compare?run=run_next&run=run_base").text
    assert _section(page, "regressions") == ["case_4"]
    assert 'Compare <a href="/runs/run_base">run_base</a>' in page


def test_equal_runs_written_in_another_order_compare_equal(tmp_path: Path) -> None:
    url = str(tmp_path / "runs")
    with runstore.open(url) as store:
        _write_run(store, "forward", {"case_3"})
        _write_run(store, "backward", {"case_3"}, order=(6, 5, 4, 3, 2, 1))
    with TestClient(create_app(url), base_url="http://localhost") as client:
        page = client.get("/compare?a=forward&b=backward").text
    assert "The runs are equal" in page


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        ("/compare", 400, "choose two runs to compare"),
        ("/compare?run=run_base", 400, "choose two runs to compare"),
        ("/compare?a=run_base&b=run_nope", 404, "run_nope"),
        ("/compare?a=run_base&b=..%2Fetc", 400, "run id"),
    ],
)
def test_compare_refuses_bad_input(client: TestClient, path: str, status: int, text: str) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert text in html.unescape(response.text)
    _hardened(response)


def test_the_compare_page_agrees_with_runstore_diff(client: TestClient, store_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["--store", store_url, "diff", "run_base", "run_next", "--json"]
    )
    report = orjson.loads(result.stdout)
    page = client.get("/compare?a=run_base&b=run_next").text
    for name in ("regressions", "fixes", "changed", "new", "missing"):
        assert _section(page, name) == [c["instance_id"] for c in report[name]], name
    assert result.exit_code == 1  # a regression: the CI gate


# -- the chart across runs --------------------------------------------------------------


def test_the_chart_has_a_dot_per_run_for_pass_rate_duration_and_a_metric(
    client: TestClient,
) -> None:
    response = client.get("/chart")
    assert response.status_code == 200
    _hardened(response)
    charts = re.findall(r'<svg class="trend[^"]*".*?</svg>', response.text, re.S)
    assert len(charts) == 3  # pass rate, duration, latency_p95 (the only metric)
    rates = re.findall(r"<title>(run_\w+) · [\d-]+ [\d:]+: ([^<]+)</title>", charts[0])
    assert rates == [("run_base", "83.3%"), ("run_next", "66.7%"), ("run_fixed", "100.0%")]
    metric = re.findall(r"<title>(run_\w+) · [\d-]+ [\d:]+: ([^<]+)</title>", charts[2])
    assert metric == [("run_base", "120"), ("run_next", "180"), ("run_fixed", "no value")]
    assert charts[0].count('<a href="/runs/') == 3


def test_the_chart_follows_the_filter_and_refuses_a_malformed_one(client: TestClient) -> None:
    page = client.get("/chart?q=main").text  # metadata branch=main
    assert '<form class="filters" method="get" action="/chart">' in page  # filters stay here
    assert 'value="main"' in page
    assert len(re.findall(r'<circle class="dot"', page.split("</svg>")[0])) == 2
    bad = client.get("/chart", params={"where": "summary.pass_rate <"})
    assert bad.status_code == 400
    assert "invalid filter at position" in html.unescape(bad.text)
    _hardened(bad)


def test_store_text_in_an_svg_is_escaped() -> None:
    from datetime import UTC, datetime

    when = datetime(2024, 1, 15, tzinfo=UTC)
    svg = str(trend_svg([Point(HOSTILE, when, 1.0)], title=HOSTILE, fmt=str, css=HOSTILE))
    assert "<script" not in svg and HOSTILE not in svg
    assert escape(HOSTILE) in svg
    timeline = str(timeline_svg([Bar(HOSTILE, 0, 10)]))
    assert "<script" not in timeline and escape(HOSTILE) in timeline


# -- one run and one instance -----------------------------------------------------------


def test_previous_and_next_failed_instance_follow_the_runs_order(client: TestClient) -> None:
    # run_next wrote case_6 .. case_1; case_4 and case_2 fail
    def links(instance: str) -> tuple[str | None, str | None]:
        page = client.get(f"/runs/run_next/instances/{instance}").text
        prev = re.search(r'class="previous-failed" href="[^"]+/(\w+)"', page)
        nxt = re.search(r'class="next-failed" href="[^"]+/(\w+)"', page)
        return (prev.group(1) if prev else None, nxt.group(1) if nxt else None)

    assert links("case_6") == (None, "case_4")
    assert links("case_4") == (None, "case_2")
    assert links("case_3") == ("case_4", "case_2")
    assert links("case_2") == ("case_4", None)
    run_page = client.get("/runs/run_next").text
    assert 'class="next-failed" href="/runs/run_next/instances/case_4"' in run_page


def test_the_instance_navigation_is_one_item_per_link_or_message(client: TestClient) -> None:
    first = client.get("/runs/run_base/instances/case_2").text  # the only failed instance
    nav = re.search(r'<ul class="instance-nav">(.*?)</ul>', first, re.S)
    assert nav is not None
    items = [re.sub(r"<[^>]+>", "", item) for item in re.findall(r"<li>(.*?)</li>", nav.group(1))]
    assert items == [
        "no failed instance before",
        "no failed instance after",
        "download the replay bundle",
    ]


def test_multi_line_text_in_a_record_keeps_its_line_breaks_escaped(tmp_path: Path) -> None:
    url = str(tmp_path / "runs")
    longrepr = f"def test_refund():\n>       assert total == 30\nE       {HOSTILE}"
    with runstore.open(url) as store, store.create_run("run_text") as run:
        run.append("steps", {"instance_id": "t", "step_name": "call", "output": "a\n  b"})
        run.append("instances", {"instance_id": "t", "status": "failed", "longrepr": longrepr})
        run.append("instances", {"instance_id": "u", "status": "passed", "note": "one line"})
    with TestClient(create_app(url), base_url="http://localhost") as client:
        page = client.get("/runs/run_text/instances/t")
        one_line = client.get("/runs/run_text/instances/u").text
    _hardened(page)
    assert f'<tr><th>longrepr</th><td><pre class="text">{escape(longrepr)}</pre></td></tr>' in (
        page.text
    )
    assert '<tr><th>output</th><td><pre class="text">a\n  b</pre></td></tr>' in page.text
    assert "<tr><th>note</th><td>one line</td></tr>" in one_line


def test_the_instance_page_draws_a_step_timeline(client: TestClient) -> None:
    page = client.get("/runs/run_base/instances/case_2").text
    timeline = re.search(r'<svg class="timeline".*?</svg>', page, re.S)
    assert timeline is not None
    bars = re.findall(r'<rect class="(\w+)" x="([\d.]+)" y="\d+" width="([\d.]+)"', timeline[0])
    assert [kind for kind, _, _ in bars] == ["passed", "failed"]  # pay's check failed
    (_, x1, w1), (_, x2, w2) = bars
    assert float(x2) == pytest.approx(float(x1) + float(w1), abs=0.2)  # pay after login
    assert float(w2) == pytest.approx(2 * float(w1), abs=0.2)  # 200 ms against 100 ms
    assert 'href="#step-2"' in timeline[0] and 'id="step-2"' in page


def test_step_bars_place_steps_by_elapsed_time_or_one_after_another() -> None:
    by_elapsed = step_bars(
        [
            ("a", {"observation": {"latency_ms": 30}, "elapsed_ms": 30}, False),
            ("b", {"elapsed_ms": 100}, True),
        ]
    )
    assert [(b.start, b.duration) for b in by_elapsed] == [(0, 30), (30, 70)]
    chained = step_bars([("a", {"duration_ms": 5}, False), ("b", {"latency_ms": 7}, False)])
    assert [(b.start, b.duration) for b in chained] == [(0, 5), (5, 7)]
    assert timeline_svg(step_bars([("a", {}, False)])) is None  # no step took time


def test_steps_link_their_artifacts_and_artifacts_and_logs_link_back(client: TestClient) -> None:
    page = client.get("/runs/run_base/instances/case_1").text
    assert (
        '<a class="artifact-link" href="/runs/run_base/artifacts/case_1/login.json">'
        "case_1/login.json</a>"
    ) in page
    artifact = client.get("/runs/run_base/artifacts/case_1/login.json").text
    assert '<a class="instance-link" href="/runs/run_base/instances/case_1">case_1</a>' in artifact
    logs = client.get("/runs/run_base").text
    assert '<a class="instance-link" href="/runs/run_base/instances/case_3">case_3</a>' in logs


def test_the_run_page_finds_instances_by_id_and_log_lines_by_text(client: TestClient) -> None:
    page = client.get("/runs/run_base?find=SE_5").text
    rows = re.findall(r'<a href="/runs/run_base/instances/(\w+)">', page)
    assert rows == ["case_5"]
    logs = client.get("/runs/run_base", params={"grep": "CASE_4 done"}).text
    section = logs.split('id="logs"')[1]
    assert re.findall(r'<span class="msg">([^<]+)</span>', section) == ["case_4 done with pay"]


def test_the_instance_table_counts_steps_and_failures_from_the_streams(
    client: TestClient,
) -> None:
    page = client.get("/runs/run_base?instances=failed").text
    row = re.search(r"<tr>\s*<td><a href=\"/runs/run_base/instances/case_2\">.*?</tr>", page, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row[0], re.S)
    assert '"badge status-failed">failed<' in cells[1]  # from the record's boolean passed
    assert cells[3] == "pay.http_ok"
    assert cells[4] == "2"


def test_the_replay_bundle_downloads_as_json(client: TestClient) -> None:
    response = client.get("/runs/run_base/instances/case_2/bundle.json")
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in response.headers["content-security-policy"]
    bundle = response.json()
    assert bundle["instance_id"] == "case_2"
    assert [s["step_name"] for s in bundle["steps"]] == ["login", "pay"]
    assert client.get("/runs/run_base/instances/nope/bundle.json").status_code == 404


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/runs/run_nope", 404),
        ("/runs/run_nope/instances/case_1", 404),
        ("/runs/run_base/instances/nope", 404),
        ("/runs/run_base?find=" + "x" * 201, 400),
        ("/chart?limit=x", 400),
    ],
)
def test_bad_requests_get_a_page_with_the_security_headers(
    client: TestClient, path: str, status: int
) -> None:
    response = client.get(path)
    assert response.status_code == status
    _hardened(response)
