"""runstore.analysis: Arrow tables across runs, flattened by one rule, and SQL over them.

On the memory backend here; tests/test_analysis_backends.py runs the same
calls on the local filesystem and S3.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest

pa = pytest.importorskip("pyarrow", reason="the analysis extra (pyarrow, duckdb) is not installed")
pytest.importorskip("duckdb", reason="the analysis extra (pyarrow, duckdb) is not installed")

import runstore  # noqa: E402
from runstore import analysis  # noqa: E402
from runstore.analysis import frames  # noqa: E402
from runstore.analysis.flatten import Columns, flatten, lines_table, records_table  # noqa: E402

_names = itertools.count()


def _url() -> str:
    return f"memory://analysis-{os.getpid()}-{next(_names)}"


def write_runs(store: runstore.Store) -> None:
    """Three runs: two of project demo (seeds 1 and 2), one of project other."""
    for run_id, seed, project in (
        ("run_a", 1, "demo"),
        ("run_b", 2, "demo"),
        ("run_c", 1, "other"),
    ):
        run = store.create_run(
            run_id,
            sut_name="shop",
            seed=seed,
            metadata={"project": project, "lang": "ja"},
            tags=["nightly"],
        )
        with run:
            for n in range(1, 4):
                inst = f"inst_{n:03d}"
                status = "failed" if (seed + n) % 3 == 0 else "passed"
                run.append(
                    "instances",
                    {"instance_id": inst, "status": status, "detail": {"worker": n, "host": "h1"}},
                )
                for index, name in enumerate(("login", "pay"), start=1):
                    run.append(
                        "steps",
                        {
                            "instance_id": inst,
                            "step_name": name,
                            "step_index": index,
                            "observation": {"latency_ms": 10 * n + index, "http": {"code": 200}},
                        },
                    )
                run.append(
                    "assertions", {"instance_id": inst, "name": "ok", "passed": status == "passed"}
                )
                run.log("info", f"{inst} done", instance_id=inst)
                run.put_artifact(f"{inst}/request.json", b"{}")
            run.log_metric("loss", 1.0 / seed, step=1)
            run.put_artifact("qa/report.json", b"{}", kind="qa_report", metadata={"lang": "ja"})
            run.put_artifact("summary.txt", b"x", metadata={"instance_id": "inst_002"})


@pytest.fixture
def store() -> Iterator[runstore.Store]:
    with runstore.open(_url()) as opened:
        write_runs(opened)
        yield opened


@pytest.fixture
def empty() -> Iterator[runstore.Store]:
    with runstore.open(_url()) as opened:
        yield opened


def _column(table: Any, name: str) -> list[Any]:
    return list(table.column(name).to_pylist())


# -- the tables ----------------------------------------------------------------------


def test_runs_df_has_one_row_per_run_oldest_first(store: runstore.Store) -> None:
    table = analysis.runs_df(store)
    assert isinstance(table, pa.Table)
    assert _column(table, "run_id") == ["run_a", "run_b", "run_c"]
    assert _column(table, "seed") == [1, 2, 1]
    assert _column(table, "instance_count") == [3, 3, 3]
    assert table.schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("tags").type == pa.list_(pa.string())


def test_runs_df_flattens_metadata_and_metrics(store: runstore.Store) -> None:
    table = analysis.runs_df(store)
    assert _column(table, "metadata.project") == ["demo", "demo", "other"]
    assert _column(table, "metrics.loss") == [1.0, 0.5, 1.0]
    assert "metadata" not in table.column_names


def test_instances_df_has_a_row_per_record_with_run_and_instance_ids(
    store: runstore.Store,
) -> None:
    table = analysis.instances_df(store)
    assert table.num_rows == 9
    assert table.column_names[:2] == ["run_id", "instance_id"]
    assert None not in _column(table, "run_id")
    assert None not in _column(table, "instance_id")
    assert _column(table, "run_id") == ["run_a"] * 3 + ["run_b"] * 3 + ["run_c"] * 3


def test_nested_fields_become_columns_named_by_their_dotted_path(store: runstore.Store) -> None:
    steps = analysis.steps_df(store)
    assert steps.num_rows == 18
    assert "observation.latency_ms" in steps.column_names
    assert "observation.http.code" in steps.column_names
    assert steps.schema.field("observation.latency_ms").type == pa.int64()
    assert _column(steps, "observation.latency_ms")[:2] == [11, 12]


def test_assertions_logs_and_metrics_tables(store: runstore.Store) -> None:
    assertions = analysis.assertions_df(store)
    assert assertions.num_rows == 9
    assert assertions.schema.field("passed").type == pa.bool_()
    logs = analysis.logs_df(store)
    assert logs.num_rows == 9
    assert logs.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert _column(logs, "instance_id")[0] == "inst_001"
    metrics = analysis.metrics_df(store)
    assert _column(metrics, "name") == ["loss"] * 3
    assert _column(metrics, "value") == [1.0, 0.5, 1.0]
    assert metrics.schema.field("step").type == pa.int64()


def test_artifacts_df_belong_to_the_instance_of_their_folder_or_metadata(
    store: runstore.Store,
) -> None:
    table = analysis.artifacts_df(store, where="run_id = 'run_a'")
    rows = {row["name"]: row for row in table.to_pylist()}
    assert set(rows) == {
        "inst_001/request.json",
        "inst_002/request.json",
        "inst_003/request.json",
        "qa/report.json",
        "summary.txt",
    }
    assert rows["inst_002/request.json"]["instance_id"] == "inst_002"
    assert rows["summary.txt"]["instance_id"] == "inst_002"
    assert rows["qa/report.json"]["metadata.lang"] == "ja"
    assert rows["qa/report.json"]["kind"] == "qa_report"
    assert rows["summary.txt"]["size"] == 1
    assert all(row["run_id"] == "run_a" and row["uri"] for row in rows.values())


def test_where_selects_the_runs_whose_records_are_read(store: runstore.Store) -> None:
    table = analysis.instances_df(store, where="metadata.project = 'demo' AND run_id != 'run_a'")
    assert set(_column(table, "run_id")) == {"run_b"}
    assert table.num_rows == 3
    assert analysis.instances_df(store, where="run_id = 'nope'").num_rows == 0


def test_a_malformed_where_is_invalid_input(store: runstore.Store) -> None:
    with pytest.raises(runstore.InvalidInputError, match="position"):
        analysis.instances_df(store, where="metadata.project = ")


def test_columns_keep_the_ids_and_the_named_or_matching_columns(store: runstore.Store) -> None:
    table = analysis.steps_df(store, columns=["observation.*", "step_name"])
    assert table.column_names == [
        "run_id",
        "instance_id",
        "observation.latency_ms",
        "observation.http.code",
        "step_name",
    ]
    assert table.num_rows == 18


def test_an_unknown_column_is_invalid_input_naming_the_columns_there_are(
    store: runstore.Store,
) -> None:
    with pytest.raises(runstore.InvalidInputError, match="no column 'latency'") as caught:
        analysis.steps_df(store, columns=["latency"])
    assert "observation.latency_ms" in caught.value.details["columns"]


def test_columns_given_as_one_string_is_invalid_input(store: runstore.Store) -> None:
    with pytest.raises(runstore.InvalidInputError, match="list of names"):
        analysis.steps_df(store, columns="step_name")


def test_a_store_that_is_not_a_store_or_url_is_invalid_input() -> None:
    with pytest.raises(runstore.InvalidInputError, match="config string"):
        analysis.runs_df(42)  # type: ignore[arg-type]


def test_a_config_string_is_opened_and_read(store: runstore.Store) -> None:
    assert analysis.instances_df(store.url).num_rows == 9


def test_an_empty_store_gives_empty_tables_with_the_standard_columns(
    empty: runstore.Store,
) -> None:
    assert analysis.runs_df(empty).num_rows == 0
    assert {"run_id", "status", "pass_rate"} <= set(analysis.runs_df(empty).column_names)
    instances = analysis.instances_df(empty)
    assert instances.num_rows == 0
    assert instances.column_names[:3] == ["run_id", "instance_id", "status"]
    assert analysis.metrics_df(empty).schema.field("value").type == pa.float64()
    assert analysis.artifacts_df(empty).schema.field("size").type == pa.int64()


def test_a_stream_of_your_own_is_a_table_too(store: runstore.Store) -> None:
    with store.create_run("run_d") as run:
        run.append("phase_outputs", {"phase": "translate", "out": {"lang": "de", "words": 3}})
    table = analysis.stream_df(store, "phase_outputs")
    assert table.to_pylist() == [
        {
            "run_id": "run_d",
            "instance_id": None,
            "phase": "translate",
            "out.lang": "de",
            "out.words": 3,
        }
    ]


def test_a_record_of_its_own_run_id_gets_the_runs(empty: runstore.Store) -> None:
    with empty.create_run("run_x") as run:
        run.append("phase_outputs", {"run_id": "someone-else", "n": 1})
    assert _column(analysis.stream_df(empty, "phase_outputs"), "run_id") == ["run_x"]


def test_the_tables_convert_to_pandas(store: runstore.Store) -> None:
    pytest.importorskip("pandas", reason="pandas is not installed")
    frame = analysis.instances_df(store).to_pandas()
    assert len(frame) == 9
    assert frame.groupby("status").size().to_dict() == {"failed": 3, "passed": 6}


# -- the flattening rule, across records, blocks and runs ------------------------------


def _mixed_runs(store: runstore.Store, *values: Any) -> None:
    for n, value in enumerate(values):
        with store.create_run(f"run_{n}") as run:
            run.append("phase_outputs", {"x": value})


@pytest.mark.parametrize(
    ("values", "type_", "expected"),
    [
        ((1, 2.5), pa.float64(), [1.0, 2.5]),
        ((1, "a"), pa.string(), ["1", "a"]),
        ((True, 3), pa.string(), ["true", "3"]),
        (([1, 2], [3]), pa.list_(pa.int64()), [[1, 2], [3]]),
        (([1, "a"], [2]), pa.string(), ['[1,"a"]', "[2]"]),
        ((None, "a"), pa.string(), [None, "a"]),
        (([{"a": 1}], [{"b": "q"}]), None, [[{"a": 1, "b": None}], [{"a": None, "b": "q"}]]),
    ],
)
def test_a_column_takes_one_type_across_runs(
    empty: runstore.Store, values: tuple[Any, ...], type_: Any, expected: list[Any]
) -> None:
    _mixed_runs(empty, *values)
    table = analysis.stream_df(empty, "phase_outputs")
    if type_ is not None:
        assert table.schema.field("x").type == type_
    assert _column(table, "x") == expected


def test_types_that_change_within_one_run_follow_the_same_rule(empty: runstore.Store) -> None:
    with empty.create_run("run_1") as run:
        for value in (1, "a", 2.5, {"k": 1}):
            run.append("phase_outputs", {"x": value})
    table = analysis.stream_df(empty, "phase_outputs")
    assert _column(table, "x") == ["1", "a", "2.5", None]
    assert _column(table, "x.k") == [None, None, None, 1]


def test_blocks_of_one_run_are_combined(
    empty: runstore.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frames, "BLOCK_BYTES", 64)  # about one record a block
    with empty.create_run("run_1") as run:
        for n in range(20):
            run.append("phase_outputs", {"n": n if n % 2 else float(n), f"only_{n % 3}": n})
    table = analysis.stream_df(empty, "phase_outputs")
    assert table.num_rows == 20
    assert _column(table, "n") == [float(n) for n in range(20)]
    assert _column(table, "only_2")[:6] == [None, None, 2, None, None, 5]


def test_flatten_joins_keys_with_dots_and_keeps_arrays() -> None:
    record = {"a": {"b": {"c": 1}, "d": [1, {"e": 2}]}, "f": {}, "g": None}
    assert flatten(record) == {"a.b.c": 1, "a.d": [1, {"e": 2}], "g": None}
    assert flatten(5) == {"value": 5}


def test_the_fast_and_the_record_paths_agree() -> None:
    rows = [
        {"a": 1, "o": {"x": "s", "y": {"z": True}}, "l": [1, 2]},
        {"a": 2, "o": {"x": "t"}, "l": []},
    ]
    import orjson

    fast = lines_table([orjson.dumps(r) for r in rows])
    slow = records_table([flatten(r) for r in rows])
    assert fast is not None
    assert fast.to_pylist() == slow.to_pylist()
    assert set(fast.column_names) == set(slow.column_names)


def test_whole_second_timestamps_stay_text_as_they_were_written() -> None:
    fast = lines_table([b'{"when": "2024-01-15T10:00:00+01:00"}'])
    assert fast is not None
    assert fast.column("when").to_pylist() == ["2024-01-15T10:00:00+01:00"]


def test_columns_fill_what_a_block_lacks_with_nulls() -> None:
    columns = Columns(["run_id"], {"status": pa.string()})
    columns.add(pa.table({"run_id": ["a"], "x": [1]}))
    columns.add(pa.table({"run_id": ["b"], "y": ["q"]}))
    table = columns.table()
    assert table.column_names == ["run_id", "status", "x", "y"]
    assert table.to_pylist() == [
        {"run_id": "a", "status": None, "x": 1, "y": None},
        {"run_id": "b", "status": None, "x": None, "y": "q"},
    ]


# -- SQL -------------------------------------------------------------------------------


def test_sql_runs_over_the_views(store: runstore.Store) -> None:
    result = analysis.sql(
        "SELECT status, count(*) AS n FROM instances GROUP BY ALL ORDER BY status", store
    )
    assert result.to_pylist() == [{"status": "failed", "n": 3}, {"status": "passed", "n": 6}]


def test_sql_joins_runs_and_instances_and_quotes_dotted_columns(store: runstore.Store) -> None:
    result = analysis.sql(
        "SELECT r.\"metadata.project\" AS project, avg((i.status = 'passed')::int) AS rate "
        "FROM instances i JOIN runs r USING (run_id) GROUP BY ALL ORDER BY project",
        store,
    )
    assert [row["project"] for row in result.to_pylist()] == ["demo", "other"]


def test_sql_where_selects_the_runs_of_every_view(store: runstore.Store) -> None:
    result = analysis.sql(
        "SELECT DISTINCT run_id FROM steps ORDER BY run_id",
        store,
        where="run_id IN ('run_a', 'run_c')",
    )
    assert result.column("run_id").to_pylist() == ["run_a", "run_c"]


def test_sql_builds_only_the_views_the_query_names(
    store: runstore.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    real = frames.table

    def recording(store: runstore.Store, name: str, *args: Any, **kwargs: Any) -> Any:
        built.append(name)
        return real(store, name, *args, **kwargs)

    monkeypatch.setattr("runstore.analysis.sql_query.table", recording)
    analysis.sql("SELECT count(*) FROM steps", store)
    assert built == ["steps"]


def test_describe_lists_a_views_columns(store: runstore.Store) -> None:
    names = analysis.sql("DESCRIBE steps", store).column("column_name").to_pylist()
    assert names[:3] == ["run_id", "instance_id", "step_name"]


def test_connect_serves_several_queries(store: runstore.Store) -> None:
    with analysis.connect(store, views=["runs", "metrics"]) as con:
        assert con.sql("SELECT count(*) FROM runs").fetchall() == [(3,)]
        assert con.sql("SELECT sum(value) FROM metrics").fetchall() == [(2.5,)]


def test_connect_to_an_unknown_view_is_invalid_input(store: runstore.Store) -> None:
    with (
        pytest.raises(runstore.InvalidInputError, match="no view named 'runz'"),
        analysis.connect(store, views=["runz"]),
    ):
        pass


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELEC 1", "SQL error: Parser Error"),
        ("SELECT * FROM nosuch", "the views are: runs, instances"),
        ("SELECT nosuch FROM runs", "Binder Error"),
        ("SELECT 1; SELECT 2", "exactly one SELECT statement, got SELECT, SELECT"),
        ("COPY (SELECT 1) TO 'out.csv'", "exactly one SELECT statement, got COPY"),
        ("CREATE TABLE t AS SELECT 1", "got CREATE"),
        ("INSTALL httpfs", "got LOAD"),
        ("SELECT * FROM read_csv('/etc/passwd')", "disabled by configuration"),
        ("   ", "the query is empty"),
    ],
)
def test_bad_sql_is_invalid_input_with_duckdbs_message(
    store: runstore.Store, query: str, message: str
) -> None:
    with pytest.raises(runstore.InvalidInputError, match=message.replace("(", r"\(")) as caught:
        analysis.sql(query, store)
    assert caught.value.code == "invalid_input"
    assert caught.value.details["query"] == query
