"""A recorded pytest session in ``runstore view``, clicked through in a real headless browser.

A small pytest session (a pass, a failure with captured output, a skip, a
test whose node id holds a ``/``) is recorded with ``--runstore`` in a
separate process; the viewer serves it as the installed ``runstore`` console
script, and Playwright drives Debian's Chromium (the fixtures are in
conftest.py). Screenshots of the pages each test ends on go to the pytest
temporary directory (``screenshots``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pytest_runstore import encode_nodeid

import runstore

if TYPE_CHECKING:
    from conftest import Session
    from playwright.sync_api import Page

pytest.importorskip("starlette")
pytest.importorskip("jinja2")

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


@pytest.fixture(scope="module")
def recorded(
    tmp_path_factory: pytest.TempPathFactory,
    run_pytest: Callable[..., Session],
    serve: Callable[[Path, Path], AbstractContextManager[str]],
) -> Iterator[Recorded]:
    """The small session recorded into a local store, and the viewer serving that store."""
    root = tmp_path_factory.mktemp("shop")
    (root / "test_shop.py").write_text(textwrap.dedent(SUITE))
    (root / "pytest.ini").write_text("[pytest]\n")
    store = root / "runs"
    session = run_pytest(root, f"--runstore={store}")
    assert session.returncode == 1, session.out  # one test failed
    assert "1 failed, 2 passed, 1 skipped" in session.out, session.out
    with serve(store, root) as url:
        yield Recorded(store, session.run_id, url)


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
    longrepr = page.locator("table.kv tr", has=page.locator("th", has_text="longrepr"))
    lines = longrepr.locator("pre.text").inner_text().splitlines()  # line breaks kept
    assert '>       assert total == 30, "the refund lost a cent"' in lines
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
