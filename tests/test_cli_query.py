"""``runstore query`` and runstore.analysis end to end, on a local and an S3 store."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import pytest

import runstore

pytest.importorskip("pyarrow", reason="the analysis extra (pyarrow, duckdb) is not installed")
pytest.importorskip("duckdb", reason="the analysis extra (pyarrow, duckdb) is not installed")

from runstore import analysis

if TYPE_CHECKING:
    from conftest import CliStore

Runs = Callable[..., None]

# write_small_run (conftest): instances inst_001 and inst_002, passed unless (seed + n) % 3 == 0
BY_STATUS = "SELECT status, count(*) AS n FROM instances GROUP BY ALL ORDER BY status"


def _json(result: Any, code: int = 0) -> Any:
    assert result.exit_code == code, result.output
    return orjson.loads(result.stdout)


def test_the_tables_read_the_same_on_every_backend(cli_store: CliStore, small_runs: Runs) -> None:
    small_runs(cli_store, "run_a", seed=1)
    small_runs(cli_store, "run_b", seed=2)
    with runstore.open(cli_store.url) as store:
        instances = analysis.instances_df(store)
        steps = analysis.steps_df(store, where="run_id = 'run_b'")
        artifacts = analysis.artifacts_df(store)
        runs = analysis.runs_df(store)
    assert instances.select(["run_id", "instance_id", "status"]).to_pylist() == [
        {"run_id": "run_a", "instance_id": "inst_001", "status": "passed"},
        {"run_id": "run_a", "instance_id": "inst_002", "status": "failed"},
        {"run_id": "run_b", "instance_id": "inst_001", "status": "failed"},
        {"run_id": "run_b", "instance_id": "inst_002", "status": "passed"},
    ]
    assert steps.column("request").to_pylist() == ["inst_001/request.json", "inst_002/request.json"]
    assert artifacts.num_rows == 6
    assert artifacts.column("instance_id").to_pylist().count(None) == 2  # report.json, twice
    assert runs.column("pass_rate").to_pylist() == [0.5, 0.5]


def test_query_prints_a_table(cli_store: CliStore, small_runs: Runs) -> None:
    small_runs(cli_store, "run_a", "run_b", seed=1)
    result = cli_store.invoke("query", BY_STATUS)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["status", "┃", "n"]
    assert [line.split() for line in lines[2:]] == [["failed", "│", "2"], ["passed", "│", "2"]]
    assert result.stderr.strip() == "2 rows"


def test_query_json_prints_columns_and_rows(cli_store: CliStore, small_runs: Runs) -> None:
    small_runs(cli_store, "run_a", seed=1)
    small_runs(cli_store, "run_b", seed=2)
    report = _json(cli_store.invoke("query", BY_STATUS, "--where", "run_id = 'run_b'", "--json"))
    assert report == {
        "columns": ["status", "n"],
        "rows": [{"status": "failed", "n": 1}, {"status": "passed", "n": 1}],
    }


def test_query_csv_prints_a_header_and_rows(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a", seed=1, tags=("nightly",))
    result = local_store.invoke(
        "query", "SELECT run_id, tags, pass_rate, finished_at, NULL AS nothing FROM runs", "--csv"
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["run_id", "tags", "pass_rate", "finished_at", "nothing"]
    assert rows[1][:3] == ["run_a", '["nightly"]', "0.5"]
    assert rows[1][3].endswith("+00:00")
    assert rows[1][4] == ""


def test_query_reads_dotted_columns(local_store: CliStore) -> None:
    with runstore.open(local_store.url) as store, store.create_run("run_a") as run:
        run.append("steps", {"instance_id": "i1", "step_name": "s", "observation": {"ms": 7}})
    report = _json(
        local_store.invoke("query", 'SELECT "observation.ms" AS ms FROM steps', "--json")
    )
    assert report["rows"] == [{"ms": 7}]


def test_bad_sql_is_one_error_line_and_exit_1(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a")
    result = local_store.invoke("query", "SELECT * FROM nosuch")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: SQL error: Catalog Error: Table with name nosuch")
    assert "Traceback" not in result.output


def test_bad_sql_with_json_is_an_error_document(local_store: CliStore) -> None:
    report = _json(local_store.invoke("query", "SELEC 1", "--json"), code=1)
    assert report["error"]["code"] == "invalid_input"
    assert report["error"]["message"].startswith("SQL error: Parser Error")


def test_a_statement_that_is_not_a_select_is_refused(local_store: CliStore) -> None:
    result = local_store.invoke("query", "COPY (SELECT 1) TO 'out.csv'")
    assert result.exit_code == 1
    assert "exactly one SELECT statement, got COPY" in result.stderr


def test_json_and_csv_together_are_a_usage_error(local_store: CliStore) -> None:
    result = local_store.invoke("query", "SELECT 1", "--json", "--csv")
    assert result.exit_code == 2
    assert "--json and --csv cannot be used together" in result.stderr


def test_a_malformed_where_is_an_error(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a")
    result = local_store.invoke("query", "SELECT 1 FROM runs", "--where", "status =")
    assert result.exit_code == 1
    assert "invalid filter" in result.stderr


def _damage(store: CliStore, run_id: str) -> None:
    key = f"{run_id}/instances.jsonl"
    lines = store.read(key).splitlines(keepends=True)
    store.overwrite(key, lines[0] + b"{not json\n" + b"".join(lines[1:]))


def test_a_damaged_line_is_an_error_naming_its_run_and_line(
    cli_store: CliStore, small_runs: Runs
) -> None:
    small_runs(cli_store, "run_a", "run_b")
    _damage(cli_store, "run_b")
    result = cli_store.invoke("query", "SELECT count(*) FROM instances")
    assert result.exit_code == 1
    assert "instances.jsonl line 2 of run 'run_b' is not valid JSON" in result.stderr
    with pytest.raises(runstore.CorruptError) as caught:
        analysis.instances_df(cli_store.url)
    assert caught.value.details == {"run_id": "run_b", "stream": "instances", "line": 2}


def test_skip_damaged_skips_the_line_with_a_warning(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a", "run_b")
    _damage(local_store, "run_b")
    report = _json(
        local_store.invoke(
            "query", "SELECT count(*) AS n FROM instances", "--json", "--skip-damaged"
        )
    )
    assert report["rows"] == [{"n": 4}]
    with pytest.warns(analysis.DamagedLinesWarning, match="run run_b line 2"):
        assert analysis.instances_df(local_store.url, errors="skip").num_rows == 4
