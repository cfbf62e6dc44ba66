"""``runstore gc``: retention policies and log retention, end to end on a local and an S3 store."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from click.testing import Result

import runstore
from runstore.model.errors import InvalidInputError

if TYPE_CHECKING:
    from conftest import CliStore

Runs = Callable[..., None]


def _report(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def _gone(result: Result) -> list[str]:
    return sorted(r["run_id"] for r in _report(result)["runs"])


def _left(store: CliStore) -> list[str]:
    return sorted(r["run_id"] for r in _report(store.invoke("ls", "--limit", "0", "--json")))


def test_dry_run_prints_what_would_go_and_deletes_nothing(
    cli_store: CliStore, small_runs: Runs
) -> None:
    small_runs(cli_store, "run_a", "run_b", "run_c")
    report = _report(cli_store.invoke("gc", "--keep-last", "1", "--dry-run", "--json"))
    assert report["dry_run"] is True
    assert sorted(r["run_id"] for r in report["runs"]) == ["run_a", "run_b"]
    assert all(r["bytes"] > 0 for r in report["runs"])
    assert report["bytes"] == sum(r["bytes"] for r in report["runs"])
    assert _left(cli_store) == ["run_a", "run_b", "run_c"]


def test_keep_last_deletes_every_older_finished_run(cli_store: CliStore, small_runs: Runs) -> None:
    small_runs(cli_store, "run_a", "run_b", "run_c")
    assert _gone(cli_store.invoke("gc", "--keep-last", "1", "--json")) == ["run_a", "run_b"]
    assert _left(cli_store) == ["run_c"]
    assert not cli_store.exists("run_a/manifest.json")
    assert not cli_store.exists("run_a/artifacts/report.json")


def test_the_human_report_says_how_many_bytes_would_go(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a", "run_b")
    result = local_store.invoke("gc", "--keep-last", "1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "run_a" in result.stdout
    assert "not among the newest 1" in result.stdout
    assert "would delete 1 runs, " in result.stdout
    assert "KiB" in result.stdout or " B" in result.stdout
    assert "(dry run: nothing was deleted)" in result.stdout


def test_a_running_run_is_never_deleted(cli_store: CliStore, small_runs: Runs) -> None:
    small_runs(cli_store, "run_a")
    with runstore.open(cli_store.url) as store:
        live = store.create_run("run_live")
        live.append("steps", {"n": 1})
        assert _gone(
            cli_store.invoke("gc", "--keep-last", "0", "--older-than", "0s", "--json")
        ) == ["run_a"]
        live.finish()
    assert _left(cli_store) == ["run_live"]


def test_pinned_and_kept_tags_protect_runs(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_pinned", tags=("pinned",))
    small_runs(local_store, "run_base", tags=("baseline",))
    small_runs(local_store, "run_plain")
    gone = _gone(local_store.invoke("gc", "--keep-last", "0", "--keep-tag", "baseline", "--json"))
    assert gone == ["run_plain"]
    assert _left(local_store) == ["run_base", "run_pinned"]


def test_older_than_deletes_runs_finished_before_that_age(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_old")
    time.sleep(1.2)
    small_runs(local_store, "run_new")
    assert _gone(local_store.invoke("gc", "--older-than", "1s", "--json")) == ["run_old"]
    assert _gone(local_store.invoke("gc", "--older-than", "1h", "--json")) == []


def test_keep_last_with_older_than_keeps_the_newest_even_when_old(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a", "run_b", "run_c")
    gone = _gone(local_store.invoke("gc", "--older-than", "0s", "--keep-last", "2", "--json"))
    assert gone == ["run_a"]


def test_status_limits_what_is_deleted(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_ok")
    small_runs(local_store, "run_failed", status="failed")
    small_runs(local_store, "run_crashed", status="crashed")
    gone = local_store.invoke(
        "gc", "--older-than", "0s", "--status", "failed", "--status", "crashed", "--json"
    )
    assert _gone(gone) == ["run_crashed", "run_failed"]
    assert _left(local_store) == ["run_ok"]


def test_max_bytes_deletes_the_oldest_runs_until_the_store_fits(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_1", "run_2", "run_3", "run_4")
    sizes = {
        r["run_id"]: r["bytes"]
        for r in _report(local_store.invoke("gc", "--keep-last", "0", "--dry-run", "--json"))[
            "runs"
        ]
    }
    cap = sizes["run_3"] + sizes["run_4"]
    assert _gone(local_store.invoke("gc", "--max-bytes", str(cap), "--json")) == ["run_1", "run_2"]


def test_rules_come_from_a_policy_file_and_options_override_it(
    local_store: CliStore, small_runs: Runs, tmp_path: Path
) -> None:
    small_runs(local_store, "run_a", "run_b", "run_c")
    policy = tmp_path / "retention.toml"
    policy.write_text('keep_last = 2\nkeep_tags = ["pinned"]\n')
    assert _gone(local_store.invoke("gc", "--policy", str(policy), "--dry-run", "--json")) == [
        "run_a"
    ]
    overridden = local_store.invoke(
        "gc", "--policy", str(policy), "--keep-last", "1", "--dry-run", "--json"
    )
    assert _gone(overridden) == ["run_a", "run_b"]
    json_policy = tmp_path / "retention.json"
    json_policy.write_text('{"keep_last": 0, "statuses": ["failed"]}')
    assert _gone(local_store.invoke("gc", "--policy", str(json_policy), "--json")) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "a month"], "invalid age"),
        (["--max-bytes", "lots"], "is not a size"),
        (["--keep-last", "-1"], "-1"),
        (["--status", "exploded"], "exploded"),
    ],
)
def test_malformed_options_are_usage_errors(
    local_store: CliStore, args: list[str], message: str
) -> None:
    result = local_store.invoke("gc", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_bad_policy_file_exits_1_naming_it(local_store: CliStore, tmp_path: Path) -> None:
    policy = tmp_path / "retention.toml"
    policy.write_text("keep_last = -3\n")
    result = local_store.invoke("gc", "--policy", str(policy))
    assert result.exit_code == 1
    assert "invalid retention policy" in result.stderr
    missing = local_store.invoke("gc", "--policy", str(tmp_path / "nope.toml"))
    assert missing.exit_code == 1
    assert "not found" in missing.stderr


def test_max_bytes_takes_units(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a")
    assert _gone(local_store.invoke("gc", "--max-bytes", "1M", "--json")) == []
    assert (
        _report(local_store.invoke("gc", "--max-bytes", "1.5KiB", "--dry-run", "--json"))["policy"][
            "max_total_bytes"
        ]
        == 1536
    )


# -- log retention ------------------------------------------------------------------


def test_gc_deletes_a_stream_whose_retention_expired_and_keeps_the_run(
    cli_store: CliStore, small_runs: Runs
) -> None:
    small_runs(cli_store, "run_a", log_retention={"logs": 0, "steps": 30})
    report = _report(cli_store.invoke("gc", "--json"))
    assert report["runs"] == []
    (expired,) = report["streams"]
    assert (expired["run_id"], expired["stream"]) == ("run_a", "logs")
    assert expired["bytes"] > 0
    assert not cli_store.exists("run_a/logs.jsonl")
    assert cli_store.exists("run_a/steps.jsonl")
    assert _report(cli_store.invoke("gc", "--json"))["streams"] == []
    verified = cli_store.invoke("verify", "run_a", "--json")
    assert verified.exit_code == 0, verified.output


def test_log_retention_dry_run_and_live_runs(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a", log_retention={"logs": 0})
    with runstore.open(local_store.url) as store:
        live = store.create_run("run_live", log_retention={"logs": 0})
        live.log("info", "still going")
        report = _report(local_store.invoke("gc", "--dry-run", "--json"))
        assert [(s["run_id"], s["stream"]) for s in report["streams"]] == [("run_a", "logs")]
        assert local_store.exists("run_a/logs.jsonl")
        live.finish()
    result = local_store.invoke("gc")
    assert "only expired log streams are collected" in result.stdout
    assert "logs.jsonl" in result.stdout


def test_a_pinned_run_keeps_its_expired_logs(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a", log_retention={"logs": 0}, tags=("pinned",))
    assert _report(local_store.invoke("gc", "--json"))["streams"] == []
    assert local_store.exists("run_a/logs.jsonl")


def test_log_references_carry_their_retention(local_store: CliStore, small_runs: Runs) -> None:
    from runstore.ops.retention import log_refs

    small_runs(local_store, "run_a", log_retention={"logs": 7})
    with runstore.open(local_store.url) as store:
        view = store.get_run("run_a")
        refs = {ref.stream: ref for ref in store.portal.call(log_refs(view.aio))}
    assert set(refs) == {"assertions", "instances", "logs", "steps"}
    assert refs["logs"].retention_days == 7
    assert refs["logs"].record_count == 1
    assert refs["steps"].retention_days is None
    assert refs["logs"].location == "run_a/logs.jsonl"


@pytest.mark.parametrize("retention", [{"artifacts": 1}, {"logs": -1}, {"../x": 1}])
def test_an_invalid_log_retention_is_refused(retention: dict[str, int]) -> None:
    with runstore.open("memory://gc-invalid") as store, pytest.raises(InvalidInputError):
        store.create_run("run_a", log_retention=retention)
