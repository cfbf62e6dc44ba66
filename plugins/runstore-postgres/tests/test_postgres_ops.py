"""The store-wide tools on postgres: ``cp`` (local <-> postgres <-> S3), ``verify``, ``gc``,
``ls --where``, through the CLI as a user runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from click.testing import CliRunner, Result

import runstore
from runstore.cli.app import cli
from runstore_fsspec.testing import S3Server
from runstore_postgres.testing import PostgresServer


def _invoke(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--store", url, *args], catch_exceptions=False)


def _json(url: str, *args: str) -> Any:
    result = _invoke(url, *args, "--json")
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def _schema_of(url: str) -> str:
    return url.rsplit("schema=", 1)[1]


def _sql(server: PostgresServer, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(server.url(), autocommit=True) as conn:
        cur = conn.execute(statement.encode())
        return cur.fetchall() if cur.description else []


def _write_runs(url: str) -> None:
    """Two finished runs holding every kind of thing a run can hold."""
    with runstore.open(url) as store:
        run = store.create_run(
            run_id="run_full",
            sut_name="shop",
            scenario_ids=["checkout"],
            seed=7,
            config={"workers": 2},
            metadata={"project": "demo", "lang": "ja", "n": 3},
            tags=["nightly"],
            log_retention={"logs": 30},
        )
        with run:
            run.set_state({"phase": "translate", "done": 0})
            run.update_state({"done": 2})
            run.append("instances", {"instance_id": "inst_001", "status": "passed"})
            run.append("instances", {"instance_id": "inst_002", "status": "failed"})
            run.append("steps", {"instance_id": "inst_001", "step_name": "login", "obs": [1, 2]})
            run.append("assertions", {"instance_id": "inst_001", "name": "total", "passed": True})
            run.append("outputs", {"text": "こんにちは"})
            run.log("info", "checkout done", instance_id="inst_001")
            run.log_metric("latency_ms", 212.0, step=3)
            run.put_artifact(
                "qa/report.json", b'{"ok": true}', kind="qa_report", metadata={"lang": "ja"}
            )
            run.put_artifact("inst_001/big.bin", bytes(range(256)) * 9000)  # > 1 MiB: 2 chunks
            run.finish(metrics={"p95_latency_ms": 212.5})
        store.set_metadata("run_full", {"reviewed": True})
        store.set_tags("run_full", add=["golden"])
        failed = store.create_run(run_id="run_failed", sut_name="shop")
        failed.append("steps", {"n": 1})
        failed.finish("failed", error="boom")


def _contents(url: str, run_id: str) -> dict[str, Any]:
    """Everything a user can read of a run, in plain data."""
    with runstore.open(url) as store:
        view = store.get_run(run_id)
        state = view.state.model_dump(mode="json")
        summary = view.summary.model_dump(mode="json") if view.summary else None
        streams = {name: list(view.read(name)) for name in view.streams()}
        refs = [ref.model_dump(mode="json", exclude={"uri"}) for ref in view.artifacts()]
        data = {ref["name"]: b"".join(view.open_artifact(ref["name"], verify=True)) for ref in refs}
        record = store.list_runs(where=f"run_id = '{run_id}'")[0].model_dump(mode="json")
        return {
            "manifest": view.manifest.model_dump(mode="json"),
            "state": state,
            "summary": summary,
            "streams": streams,
            "artifacts": refs,
            "data": data,
            "record": record,
            "labels": (view.metadata, view.tags),
        }


def test_cp_between_local_postgres_and_s3_carries_everything(
    tmp_path: Path, postgres_url: str, s3: S3Server
) -> None:
    local, back = str(tmp_path / "runs"), str(tmp_path / "back")
    _write_runs(local)
    original = {run_id: _contents(local, run_id) for run_id in ("run_full", "run_failed")}
    assert original["run_full"]["labels"] == (
        {"project": "demo", "lang": "ja", "n": 3, "reviewed": True},
        ["nightly", "golden"],
    )
    assert original["run_full"]["state"]["data"] == {"phase": "translate", "done": 2}
    assert original["run_full"]["artifacts"][0]["metadata"] == {"lang": "ja"}
    s3_url = s3.url("runs")
    hops = [(local, postgres_url), (postgres_url, s3_url), (s3_url, back), (s3_url, postgres_url)]
    for source, dest in hops[:3]:
        report = _json(source, "cp", dest)
        assert sorted(report["copied"]) == ["run_failed", "run_full"], (source, dest)
        assert _invoke(dest, "verify").exit_code == 0, dest
        for run_id, expected in original.items():
            assert _contents(dest, run_id) == expected, (dest, run_id)
            same = _invoke(dest, "diff", run_id, run_id, "--store-b", local)
            assert same.exit_code == 0, same.output
    again = _json(*hops[3][:1], "cp", hops[3][1])  # back into postgres: already there
    assert (again["copied"], sorted(again["skipped"])) == ([], ["run_failed", "run_full"])


def test_verify_on_postgres_reports_a_damaged_artifact_and_stream_line(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    _write_runs(postgres_url)
    assert _json(postgres_url, "verify")["ok"] is True
    schema = _schema_of(postgres_url)
    _sql(
        postgres_server,
        f"UPDATE {schema}.artifact_chunks SET data = 'tampered' FROM {schema}.artifacts a "
        f"WHERE a.artifact_id = artifact_chunks.artifact_id AND a.name = 'qa/report.json'",
    )
    # Same length (offsets stay right), not JSON any more.
    _sql(
        postgres_server,
        f"UPDATE {schema}.stream_records SET line = convert_to(repeat('x', length(line) - 1) "
        f"|| E'\\n', 'UTF8') FROM {schema}.streams s WHERE s.stream_id = "
        f"stream_records.stream_id AND s.run_id = 'run_failed' AND s.name = 'steps'",
    )
    result = _invoke(postgres_url, "verify", "--json")
    assert result.exit_code != 0
    report = orjson.loads(result.stdout)
    problems = {r["run_id"]: r["problems"] for r in report["runs"] if not r["ok"]}
    assert set(problems) == {"run_full", "run_failed"}
    assert any("qa/report.json" in p["where"] + p["message"] for p in problems["run_full"])
    assert [p["line"] for p in problems["run_failed"] if p["where"].startswith("steps")] == [1]


def test_gc_on_postgres_deletes_what_the_policy_selects_and_leaves_no_rows(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    with runstore.open(postgres_url) as store:
        for run_id in ("run_1", "run_2", "run_3"):
            run = store.create_run(run_id=run_id, log_retention={"logs": 0})
            run.append("steps", {"run": run_id})
            run.log("info", "bye")
            run.put_artifact("a.txt", run_id.encode())
            run.finish()
        store.set_tags("run_1", add=["pinned"])
        live = store.create_run(run_id="run_live")
        live.append("steps", {"n": 1})
        report = _json(postgres_url, "gc", "--keep-last", "2")
        live.finish()
    # The newest two (run_live, run_3) are kept, run_1 is pinned.
    assert [r["run_id"] for r in report["runs"]] == ["run_2"]
    # Expired log streams go too, except a pinned run's.
    assert [(s["run_id"], s["stream"]) for s in report["streams"]] == [("run_3", "logs")]
    schema = _schema_of(postgres_url)
    for table in ("runs", "streams", "artifacts"):
        ids = {row[0] for row in _sql(postgres_server, f"SELECT run_id FROM {schema}.{table}")}
        assert "run_2" not in ids, table
    orphans = _sql(
        postgres_server,
        f"SELECT count(*) FROM {schema}.stream_records r LEFT JOIN {schema}.streams s "
        f"USING (stream_id) WHERE s.stream_id IS NULL",
    )
    assert orphans == [(0,)]
    with runstore.open(postgres_url) as store:
        assert store.get_run("run_3").streams() == ["artifacts", "steps"]
        assert list(store.get_run("run_3").read("steps")) == [{"run": "run_3"}]
    assert _json(postgres_url, "verify")["ok"] is True


def test_ls_where_on_postgres(postgres_url: str) -> None:
    _write_runs(postgres_url)
    listed = _json(
        postgres_url,
        "ls",
        "--where",
        "metadata.project = 'demo' AND tags CONTAINS 'golden' AND summary.pass_rate < 0.9",
    )
    assert [r["run_id"] for r in listed] == ["run_full"]
    listed = _json(postgres_url, "ls", "--where", "status = 'failed' OR metadata.n >= 4")
    assert [r["run_id"] for r in listed] == ["run_failed"]


@pytest.mark.parametrize("where", ["metadata.project = ", "nonsense.field = 1"])
def test_ls_with_a_bad_where_on_postgres_is_a_clear_error(postgres_url: str, where: str) -> None:
    _write_runs(postgres_url)
    result = _invoke(postgres_url, "ls", "--where", where)
    assert result.exit_code != 0
    assert "invalid filter" in result.output, result.output
