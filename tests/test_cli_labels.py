"""``runstore meta`` and ``runstore tag``, and the labels in ``show`` and ``ls``, end to end.

Relabelling a finished run runs on a local and an S3 store (``cli_store``);
parsing, output and errors do not depend on the backend and run on the local
one (``local_store``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from click.testing import CliRunner, Result

import runstore
from runstore.cli.app import cli

if TYPE_CHECKING:
    from conftest import CliStore

Runs = Callable[..., None]


def _json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def _clean_failure(result: Result, code: int) -> None:
    """Failed with ``code`` through a normal exit, not an uncaught exception."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output


def _labels(store: CliStore, run_id: str) -> tuple[list[str], dict[str, Any]]:
    """The run's current tags and metadata, read through the API."""
    with runstore.open(store.url) as opened:
        view = opened.get_run(run_id)
        return view.tags, view.metadata


def _ls(store: CliStore, columns: int) -> list[str]:
    """``runstore ls`` at a terminal width of ``columns``: its lines."""
    result = CliRunner().invoke(cli, ["--store", store.url, "ls"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


@pytest.fixture
def run_a(local_store: CliStore, small_runs: Runs) -> CliStore:
    """``local_store`` holding one finished run, ``run_a``, tagged ``nightly``."""
    small_runs(local_store, "run_a", tags=("nightly",))
    return local_store


# -- meta ---------------------------------------------------------------------------


def test_meta_relabels_a_finished_run(cli_store: CliStore, small_runs: Runs) -> None:
    small_runs(cli_store, "run_a")
    assert cli_store.invoke("meta", "run_a", "owner=qa", "build=1234").exit_code == 0
    assert _labels(cli_store, "run_a")[1] == {"owner": "qa", "build": 1234}
    (listed,) = _json(cli_store.invoke("ls", "--json"))
    assert listed["status"] == "succeeded"
    assert listed["metadata"] == {"owner": "qa", "build": 1234}


def test_meta_reads_a_value_as_json_when_it_parses_and_as_text_otherwise(
    run_a: CliStore,
) -> None:
    args = ["n=3", "ok=true", 'langs=["ja","fr"]', "x=null", "note=hello world", "empty="]
    assert _json(run_a.invoke("meta", "run_a", *args, "--json"))["metadata"] == {
        "n": 3,
        "ok": True,
        "langs": ["ja", "fr"],
        "x": None,
        "note": "hello world",
        "empty": "",
    }


def test_meta_merges_into_the_metadata_keeping_the_keys_not_named(run_a: CliStore) -> None:
    assert run_a.invoke("meta", "run_a", "owner=qa", "build=1").exit_code == 0
    assert run_a.invoke("meta", "run_a", "build=2").exit_code == 0
    assert _labels(run_a, "run_a")[1] == {"owner": "qa", "build": 2}


def test_meta_without_pairs_prints_the_metadata_as_key_value_lines(run_a: CliStore) -> None:
    assert run_a.invoke("meta", "run_a", "owner=qa", 'langs=["ja"]').exit_code == 0
    result = run_a.invoke("meta", "run_a")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["owner=qa", 'langs=["ja"]']


def test_meta_prints_values_so_that_they_read_back_the_same(
    run_a: CliStore, small_runs: Runs
) -> None:
    small_runs(run_a, "run_b")
    args = ["n=3", 'text="3"', 'flag="true"', "word=hello", "empty=", "half=0.5"]
    printed = run_a.invoke("meta", "run_a", *args).stdout.splitlines()
    assert run_a.invoke("meta", "run_b", *printed).exit_code == 0
    assert _labels(run_a, "run_b")[1] == _labels(run_a, "run_a")[1]
    assert _labels(run_a, "run_b")[1]["text"] == "3"


def test_meta_on_a_run_without_metadata_prints_nothing_on_stdout(run_a: CliStore) -> None:
    result = run_a.invoke("meta", "run_a")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "no metadata" in result.stderr


def test_meta_json_prints_the_runs_index_record(run_a: CliStore) -> None:
    record = _json(run_a.invoke("meta", "run_a", "owner=qa", "--json"))
    assert record == _json(run_a.invoke("ls", "--json"))[0]
    assert record["tags"] == ["nightly"]


def test_meta_refusal_with_json_is_an_error_document(run_a: CliStore) -> None:
    result = run_a.invoke("meta", "run_a", "bad key=3", "--json")
    _clean_failure(result, 1)
    assert orjson.loads(result.stdout)["error"]["code"] == "invalid_input"


# -- tag ----------------------------------------------------------------------------


def test_tag_relabels_a_finished_run(cli_store: CliStore, small_runs: Runs) -> None:
    small_runs(cli_store, "run_a", tags=("nightly",))
    assert cli_store.invoke("tag", "run_a", "+reviewed", "-nightly").exit_code == 0
    assert _labels(cli_store, "run_a")[0] == ["reviewed"]
    (listed,) = _json(cli_store.invoke("ls", "--tag", "reviewed", "--json"))
    assert listed["status"] == "succeeded"


def test_tag_adds_plus_and_plain_words_and_removes_minus_words(run_a: CliStore) -> None:
    result = run_a.invoke("tag", "run_a", "+smoke", "release-2.3", "-nightly")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["smoke", "release-2.3"]


def test_tag_reads_a_minus_word_as_a_tag_to_remove_never_as_options(run_a: CliStore) -> None:
    # click would read -nightly as -n -i -g -h ... and print the help at the h
    result = run_a.invoke("tag", "run_a", "-nightly", "--json")
    assert _json(result)["tags"] == []


def test_tag_removes_a_tag_that_starts_with_a_dash_after_a_double_dash(run_a: CliStore) -> None:
    assert run_a.invoke("tag", "run_a", "+-weird").exit_code == 0
    assert _labels(run_a, "run_a")[0] == ["nightly", "-weird"]
    result = run_a.invoke("tag", "run_a", "--", "--weird")
    assert result.exit_code == 0, result.output
    assert _labels(run_a, "run_a")[0] == ["nightly"]


def test_tag_without_changes_prints_the_tags(run_a: CliStore) -> None:
    result = run_a.invoke("tag", "run_a")
    assert result.exit_code == 0, result.output
    assert result.stdout == "nightly\n"


def test_tag_json_prints_the_runs_index_record(run_a: CliStore) -> None:
    record = _json(run_a.invoke("tag", "run_a", "+smoke", "--json"))
    assert record == _json(run_a.invoke("ls", "--json"))[0]
    assert record["tags"] == ["nightly", "smoke"]


# -- refused input ------------------------------------------------------------------

REFUSED = [
    pytest.param(["meta", "owner=qa", "owner"], 2, "'owner' is not KEY=VALUE", id="meta-no-equals"),
    pytest.param(["meta", "owner=qa", "=3"], 2, "has no key before '='", id="meta-no-key"),
    pytest.param(["meta", "ok=1", "bad key=3"], 1, "invalid metadata key", id="meta-bad-key"),
    pytest.param(["meta", "ok=1", 'nested={"a": 1}'], 1, "metadata.nested", id="meta-object"),
    pytest.param(["tag", "+ok", "--frobnicate"], 2, "No such option", id="tag-unknown-option"),
    pytest.param(["tag", "+ok", "+"], 2, "'+' names no tag", id="tag-sign-alone"),
    pytest.param(["tag", "+ok", "+bad\x01tag"], 1, "invalid tag", id="tag-control-character"),
]


@pytest.mark.parametrize(("args", "code", "message"), REFUSED)
def test_bad_input_is_refused_in_one_message_and_changes_nothing(
    run_a: CliStore, args: list[str], code: int, message: str
) -> None:
    command, *words = args
    result = run_a.invoke(command, "run_a", *words)
    _clean_failure(result, code)
    assert message in result.stderr
    assert _labels(run_a, "run_a") == (["nightly"], {})


@pytest.mark.parametrize("args", [["meta", "owner=qa"], ["tag", "+x"]], ids=["meta", "tag"])
def test_an_unknown_run_exits_1(local_store: CliStore, args: list[str]) -> None:
    runstore.open(local_store.url).close()
    result = local_store.invoke(args[0], "run_nope", *args[1:])
    _clean_failure(result, 1)
    assert "run 'run_nope' not found" in result.stderr


# -- show and ls --------------------------------------------------------------------


def _caller_run(store: CliStore, run_id: str, **state: Any) -> None:
    """A finished run with metadata, state data, metrics, an error and a skipped instance."""
    with runstore.open(store.url) as opened:
        run = opened.create_run(run_id, tags=["nightly"], metadata={"owner": "qa"})
        run.set_state(state or {"cursor": 17})
        run.log_metric("accuracy", 0.93)
        run.append("instances", {"instance_id": "i1", "status": "passed"})
        run.append("instances", {"instance_id": "i2", "status": "error"})
        run.append("instances", {"instance_id": "i3", "status": "skipped"})
        run.finish()


def test_show_prints_the_current_labels_not_the_ones_at_creation(
    run_a: CliStore,
) -> None:
    assert run_a.invoke("tag", "run_a", "+reviewed", "-nightly").exit_code == 0
    assert run_a.invoke("meta", "run_a", "owner=qa").exit_code == 0
    labels = run_a.invoke("show", "run_a").stdout.split("manifest")[0]
    assert "reviewed" in labels
    assert "nightly" not in labels
    assert "owner" in labels and "qa" in labels


def test_show_prints_state_data_metrics_and_error_and_skip_counts(local_store: CliStore) -> None:
    _caller_run(local_store, "run_c")
    result = local_store.invoke("show", "run_c")
    assert result.exit_code == 0, result.output
    for expected in (
        r'data +\{"cursor":17\}',
        r"metric accuracy +0\.93",
        r"errors +1",
        r"skipped +1",
    ):
        assert re.search(expected, result.stdout), expected


def test_show_cuts_long_state_data_short(local_store: CliStore) -> None:
    _caller_run(local_store, "run_c", blob="x" * 5000)
    result = local_store.invoke("show", "run_c")
    assert result.exit_code == 0, result.output
    flat = "".join(result.stdout.replace("\u2502", "").split())  # no panel borders, no wrapping
    assert '{"blob":"' + "x" * 100 in flat
    assert "x" * 1000 not in flat
    assert "x\u2026" in flat


def test_show_json_adds_the_current_tags_and_metadata(run_a: CliStore) -> None:
    assert run_a.invoke("meta", "run_a", "owner=qa").exit_code == 0
    shown = _json(run_a.invoke("show", "run_a", "--json"))
    assert shown["tags"] == ["nightly"]
    assert shown["metadata"] == {"owner": "qa"}
    assert {"run_id", "manifest", "state", "summary", "streams", "artifacts"} <= set(shown)


def test_ls_and_show_judge_errors_like_failures_in_the_pass_rate(local_store: CliStore) -> None:
    _caller_run(local_store, "run_c")  # one passed, one error, one skipped
    assert "50.0% 1/2" in _ls(local_store, 120)[2]
    assert re.search(r"pass rate +50\.0% 1/2", local_store.invoke("show", "run_c").stdout)


def test_ls_shows_tags_and_metadata_columns_when_a_run_has_them(
    run_a: CliStore, small_runs: Runs
) -> None:
    small_runs(run_a, "run_b")
    assert run_a.invoke("meta", "run_a", "owner=qa", "n=3").exit_code == 0
    lines = _ls(run_a, 120)
    assert lines[0].split()[-2:] == ["tags", "metadata"]
    row = next(line for line in lines if line.startswith("run_a"))
    assert row.split()[-3:] == ["nightly", "owner=qa", "n=3"]


def test_ls_has_no_label_columns_when_no_run_has_labels(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a")
    header = _ls(local_store, 120)[0]
    assert "tags" not in header
    assert "metadata" not in header


def test_ls_cuts_labels_short_to_stay_within_80_columns(run_a: CliStore) -> None:
    assert run_a.invoke("meta", "run_a", "note=" + "long " * 30).exit_code == 0
    lines = _ls(run_a, 80)
    assert max(len(line) for line in lines) <= 80
    row = next(line for line in lines if line.startswith("run_a"))
    assert row.rstrip().endswith("\u2026")


def test_ls_leaves_out_the_metadata_first_and_says_so_when_80_columns_are_too_few(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_20240115_001", tags=("nightly",))
    assert local_store.invoke("meta", "run_20240115_001", "owner=qa").exit_code == 0
    lines = _ls(local_store, 80)
    assert max(len(line) for line in lines) <= 80
    assert lines[0].split()[-1] == "tags"
    assert "metadata left out at 80 columns: ls --json has them" in lines


# -- ls --where ----------------------------------------------------------------------------


def test_ls_where_filters_by_metadata_and_orders_by_a_key(
    cli_store: CliStore, small_runs: Runs
) -> None:
    for run_id in ("run_a", "run_b", "run_c"):
        small_runs(cli_store, run_id)
    cli_store.invoke("meta", "run_a", "project=demo", "rank=2")
    cli_store.invoke("meta", "run_c", "project=demo", "rank=1")
    listed = _json(
        cli_store.invoke(
            "ls", "--where", "metadata.project = 'demo'", "--order-by", "metadata.rank", "--json"
        )
    )
    assert [r["run_id"] for r in listed] == ["run_c", "run_a"]


def test_ls_pages_through_a_filtered_listing_with_the_printed_token(
    cli_store: CliStore, small_runs: Runs
) -> None:
    for run_id in ("run_a", "run_b", "run_c"):
        small_runs(cli_store, run_id)
    first = cli_store.invoke("ls", "--where", "run_id LIKE 'run_%'", "--limit", "2")
    assert first.exit_code == 0, first.output
    token = re.search(r"--page-token (\S+)", first.stdout)
    assert token is not None
    rest = _json(
        cli_store.invoke(
            "ls",
            "--where",
            "run_id LIKE 'run_%'",
            "--limit",
            "2",
            "--page-token",
            token[1],
            "--json",
        )
    )
    assert len(rest) == 1


def test_ls_with_a_malformed_filter_names_the_position(cli_store: CliStore) -> None:
    runstore.open(cli_store.url).close()
    result = cli_store.invoke("ls", "--where", "metadata.x = ")
    _clean_failure(result, 1)
    assert "position 14" in result.stderr
