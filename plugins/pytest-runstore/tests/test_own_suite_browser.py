"""runstore's own test suite, recorded with pytest-runstore and shown by ``runstore view``.

Issue 20's done-when: "Recording runstore's own test suite stores a run with
every test, and ``runstore view`` shows it". A real part of the suite (the
core package's tests, ~1,100 of them, all but their slowest module) runs in a
process of its own with ``--runstore``, and is checked against pytest's own
account of it; ``nox -s own_suite`` (``RUNSTORE_OWN_SUITE=whole``) does the
same with the whole suite, ~3,000 tests:

* the stored run has one instance per test ``pytest --collect-only`` lists
  for the same selection, with the same node ids;
* every instance has an outcome, and its steps (setup, call, teardown) count
  exactly what pytest's summary line says (pytest counts reports: a test
  that passes and then errors in teardown counts as passed and as an error,
  and is recorded as one ``error`` instance);
* the exit status is what that summary implies (the plugin changes nothing);
* ``runstore view`` lists every test, page by page, with its status, in
  Chromium, and a test's own page renders with its steps.

Nothing depends on timing: the outcomes and counts are pytest's, whatever
they are, and durations are never compared.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pytest_runstore import encode_nodeid
from pytest_runstore.recorder import OUTCOME_STATUS

import runstore

if TYPE_CHECKING:
    from conftest import Session
    from playwright.sync_api import Page

pytest.importorskip("starlette")
pytest.importorskip("jinja2")


REPO = Path(__file__).resolve().parents[3]
WHOLE = os.environ.get("RUNSTORE_OWN_SUITE") == "whole"
"""The long form (``nox -s own_suite``): the whole suite, every test path but this module."""
SELECTION = (
    (f"--ignore={Path(__file__).relative_to(REPO)}",)
    if WHOLE
    else ("core/tests", "--ignore=core/tests/test_conformance_catches_bugs.py")
)
"""By default all of core/tests but its planted-bug proofs (two thirds of its time, 21 tests)."""
TIMEOUT = 3600 if WHOLE else 600

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2 * TIMEOUT + 300)]  # collect, run, look

_SUMMARY = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)\b")


@dataclass(frozen=True)
class OwnSuite:
    session: Session
    collected: list[str]
    """The node ids ``pytest --collect-only -q`` lists for the selection."""
    summary: Counter[str]
    """The outcome counts of the recorded session's summary line."""
    store: Path
    run: runstore.RunRecord
    summary_record: runstore.RunSummary
    records: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    url: str


def _summary_counts(out: str) -> Counter[str]:
    """``1105 passed, 6 skipped in 18.46s`` -> {"passed": 1105, "skipped": 6}."""
    (line,) = [ln for ln in out.splitlines() if re.search(r"\bin [\d.]+s\b", ln)][-1:]
    counts: Counter[str] = Counter()
    for number, word in _SUMMARY.findall(line):
        counts["error" if word.startswith("error") else word] += int(number)
    return counts


@pytest.fixture(scope="module")
def own_suite(
    tmp_path_factory: pytest.TempPathFactory,
    run_pytest: Callable[..., Session],
    serve: Callable[[Path, Path], AbstractContextManager[str]],
) -> Iterator[OwnSuite]:
    """The selection collected, then run and recorded into a local store, then served."""
    where = tmp_path_factory.mktemp("own-suite")
    store = where / "runs"
    listing = run_pytest(REPO, "--collect-only", "-q", *SELECTION, timeout=TIMEOUT)
    assert listing.returncode == 0, listing.out
    collected = [line for line in listing.out.splitlines() if "::" in line]
    # The inner session's temporary folders stay apart from the outer session's.
    session = run_pytest(
        REPO, *SELECTION, f"--basetemp={where / 'tmp'}", f"--runstore={store}", timeout=TIMEOUT
    )
    with runstore.open(str(store)) as opened:
        runs = list(opened.list_runs())
        assert [r.run_id for r in runs] == [session.run_id], session.out[-3000:]
        view = opened.get_run(session.run_id)
        assert view.summary is not None
        suite = OwnSuite(
            session,
            collected,
            _summary_counts(session.out),
            store,
            runs[0],
            view.summary,
            list(view.read("instances")),
            list(view.read("steps")),
            url="",
        )
    with serve(store, where) as url:
        yield dataclasses.replace(suite, url=url)


def _summary_word(step: dict[str, Any]) -> str | None:
    """What pytest's summary line counts a phase's report as: every call, and a
    setup or teardown that did not pass (an error, a skip)."""
    outcome: str = step["outcome"]
    return outcome if step["step_name"] == "call" or outcome != "passed" else None


def test_the_run_has_one_instance_per_collected_test(own_suite: OwnSuite) -> None:
    assert len(own_suite.collected) > 1000
    assert own_suite.run.run_id == own_suite.session.run_id
    nodeids = [r["nodeid"] for r in own_suite.records]
    assert len(nodeids) == len(set(nodeids))
    assert sorted(nodeids) == sorted(own_suite.collected)
    assert [r["instance_id"] for r in own_suite.records] == [encode_nodeid(n) for n in nodeids]
    assert own_suite.summary_record.instance_count == len(own_suite.collected)


def test_every_instance_has_an_outcome_and_its_steps_count_pytests_summary(
    own_suite: OwnSuite,
) -> None:
    words: dict[str, list[str]] = {r["instance_id"]: [] for r in own_suite.records}
    for step in own_suite.steps:
        word = _summary_word(step)
        if word is not None:
            words[step["instance_id"]].append(word)
    assert Counter(w for counted in words.values() for w in counted) == own_suite.summary, (
        own_suite.session.out[-3000:]
    )
    for record in own_suite.records:
        assert record["outcome"] in OUTCOME_STATUS
        assert record["status"] == OUTCOME_STATUS[record["outcome"]]
        assert record["outcome"] in words[record["instance_id"]], record
    once = [r["outcome"] for r in own_suite.records if len(words[r["instance_id"]]) == 1]
    assert len(once) > 1000  # counted once by pytest: the instance is that count
    assert own_suite.summary["passed"] >= Counter(once)["passed"] > 1000


def test_the_exit_status_and_output_are_pytests_own(own_suite: OwnSuite) -> None:
    failing = own_suite.summary["failed"] + own_suite.summary["error"]
    assert own_suite.session.returncode == (1 if failing else 0), own_suite.session.out[-3000:]
    assert own_suite.run.status == ("failed" if failing else "succeeded")
    lines = [ln for ln in own_suite.session.out.splitlines() if ln.startswith("runstore:")]
    assert lines == [f"runstore: {own_suite.run.run_id} stored in {own_suite.store}"]


def test_the_viewer_lists_every_test_with_its_status(own_suite: OwnSuite, page: Page) -> None:
    page.goto(f"{own_suite.url}runs/{own_suite.run.run_id}")
    cards = dict(
        zip(
            page.locator("section.cards .k").all_text_contents(),
            page.locator("section.cards .v").all_text_contents(),
            strict=True,
        )
    )
    statuses = Counter(r["status"] for r in own_suite.records)
    assert int(cards["instances"]) == len(own_suite.records)
    assert (int(cards["passed"]), int(cards["skipped"])) == (
        statuses["passed"],
        statuses["skipped"],
    )
    shown: dict[str, str] = {}
    while True:
        for row in page.locator("table.instances tbody tr").all():
            instance_id, status = row.locator("td").all_inner_texts()[:2]
            assert instance_id not in shown, instance_id
            shown[instance_id] = status.strip()
        following = page.get_by_role("link", name="next →")
        if not following.count():
            break
        following.click()
        page.wait_for_load_state()
    assert shown == {r["instance_id"]: r["status"] for r in own_suite.records}


def test_a_tests_page_renders_its_record_and_steps(own_suite: OwnSuite, page: Page) -> None:
    skipped = next((r for r in own_suite.records if r["outcome"] == "skipped"), None)
    chosen = skipped or own_suite.records[-1]
    page.goto(f"{own_suite.url}runs/{own_suite.run.run_id}")
    page.get_by_label("instance id").fill(chosen["instance_id"])
    page.get_by_role("button", name="Find").click()
    page.wait_for_load_state()
    page.get_by_role("link", name=chosen["instance_id"], exact=True).click()
    page.wait_for_url("**/instances/**")
    heading = page.locator("h1").inner_text()
    assert heading.startswith(chosen["instance_id"]) and chosen["status"] in heading
    fields = dict(
        zip(
            page.locator("main > table.kv th").all_inner_texts(),
            page.locator("main > table.kv td").all_inner_texts(),
            strict=True,
        )
    )
    assert (fields["nodeid"], fields["outcome"]) == (chosen["nodeid"], chosen["outcome"])
    if skipped is not None:
        assert fields["reason"] == skipped["reason"]
    phases = [h.split(" · ")[1] for h in page.locator("article.step h3").all_inner_texts()]
    assert phases[0] == "setup"
