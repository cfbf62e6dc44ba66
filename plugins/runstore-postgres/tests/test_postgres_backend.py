"""What the PostgreSQL backend adds to the kit: options, migrations, writers, outages."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import runstore
from runstore.model.errors import (
    BackendUnavailableError,
    ConflictError,
    InvalidInputError,
    UnsupportedError,
)
from runstore.registry.config import parse_target
from runstore.spi.backends import RunQuery
from runstore_postgres._migrate import LATEST
from runstore_postgres.backend import PostgresBackend
from runstore_postgres.testing import PostgresServer


def _schema_of(url: str) -> str:
    return url.rsplit("schema=", 1)[1]


def _backend(url: str) -> PostgresBackend:
    return PostgresBackend.from_target(parse_target(url)[1])


def _sql(server: PostgresServer, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(server.url(), autocommit=True) as conn:
        cur = conn.execute(statement.encode(), params or None)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def store(postgres_url: str) -> Iterator[runstore.Store]:
    with runstore.open(postgres_url) as store:
        yield store


# -- config strings -------------------------------------------------------------------


def test_postgres_scheme_is_an_alias(postgres_server: PostgresServer) -> None:
    postgres_server.start()
    url = postgres_server.url(schema=postgres_server.fresh_schema()).replace(
        "postgresql://", "postgres://"
    )
    with runstore.open(url) as store:
        store.create_run(run_id="run_alias").finish()
        assert [r.run_id for r in store.list_runs()] == ["run_alias"]


@pytest.mark.parametrize(
    ("query", "word"),
    [
        ("schema=Bad-Name", "schema"),
        ("schema=1abc", "schema"),
        ("pool_max_size=0", "pool_max_size"),
        ("pool_max_size=lots", "pool_max_size"),
        ("no_such_libpq_option=1", "no_such_libpq_option"),
    ],
)
def test_bad_option_is_invalid_input_before_any_connection(query: str, word: str) -> None:
    # Port 1 on 127.0.0.1 refuses connections: an error here comes from the checks.
    with pytest.raises(InvalidInputError, match=word):
        runstore.open(f"postgresql://nobody@127.0.0.1:1/db?{query}")


def test_unreachable_server_is_backend_unavailable() -> None:
    with (
        runstore.open("postgresql://nobody@127.0.0.1:1/db?connect_timeout=2") as store,
        pytest.raises(BackendUnavailableError, match="unreachable"),
    ):
        store.list_runs()


def test_unknown_durability_is_unsupported(postgres_url: str) -> None:
    with runstore.open(postgres_url, durability="fsync") as store:
        run = store.create_run(run_id="run_fsync")
        with pytest.raises(UnsupportedError, match="'record'"):
            run.append("steps", {"n": 1})


# -- migrations -------------------------------------------------------------------------


def test_a_new_schema_is_migrated_to_the_latest_version_once(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    schema = _schema_of(postgres_url)
    for _ in range(2):
        with runstore.open(postgres_url) as store:
            store.list_runs()
    rows = _sql(postgres_server, f"SELECT version, name FROM {schema}.runstore_schema_version")
    assert rows == [(LATEST, "0001_initial.sql")]


def test_a_schema_newer_than_the_code_is_refused_and_left_unchanged(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    schema = _schema_of(postgres_url)
    with runstore.open(postgres_url) as store:
        store.create_run(run_id="run_before")
    _sql(
        postgres_server,
        f"INSERT INTO {schema}.runstore_schema_version (version, name) VALUES (99, 'future.sql')",
    )
    with runstore.open(postgres_url) as store, pytest.raises(UnsupportedError) as caught:
        store.list_runs()
    assert "schema version 99" in caught.value.message
    assert "pip install -U runstore-postgres" in caught.value.message
    assert caught.value.details == {"schema": schema, "found": 99, "supported": LATEST}
    assert _sql(postgres_server, f"SELECT run_id FROM {schema}.runs") == [("run_before",)]


# -- ids and writers ----------------------------------------------------------------------


_CREATE_RUNS = """
import json, sys, runstore
with runstore.open(sys.argv[1]) as store:
    ids = [store.create_run(sut_name="racer").run_id for _ in range(int(sys.argv[2]))]
print(json.dumps(ids))
"""


def test_processes_creating_runs_with_generated_ids_lose_and_repeat_none(
    postgres_url: str,
) -> None:
    processes, each = 8, 10
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _CREATE_RUNS, postgres_url, str(each)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    claimed: list[str] = []
    for worker in workers:
        out, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0
        claimed += json.loads(out)
    assert len(claimed) == len(set(claimed)) == processes * each
    with runstore.open(postgres_url) as store:
        listed = {r.run_id for r in store.list_runs()}
    assert listed == set(claimed)
    numbers = sorted(int(run_id.rsplit("_", 1)[1]) for run_id in claimed)
    assert numbers == list(range(1, processes * each + 1))


def test_a_second_writer_of_a_stream_is_refused(postgres_url: str) -> None:
    async def scenario() -> None:
        first = _backend(postgres_url)
        second = _backend(postgres_url)
        try:
            writer = await first.open_writer("run_x", "steps")
            with pytest.raises(ConflictError, match="another writer"):
                await second.open_writer("run_x", "steps")
            await writer.close()
            again = await second.open_writer("run_x", "steps")  # released on close
            await again.close()
        finally:
            await first.aclose()
            await second.aclose()

    asyncio.run(scenario())


def test_a_writer_whose_stream_was_taken_over_stores_nothing_more(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    schema = _schema_of(postgres_url)

    async def scenario() -> None:
        backend = _backend(postgres_url)
        try:
            writer = await backend.open_writer("run_x", "steps")
            writer.write(b'{"n":1}\n')
            await writer.commit()
            # What a writer that took the stream over (after this one's lock was lost) does:
            _sql(postgres_server, f"UPDATE {schema}.streams SET epoch = epoch + 1")
            assert writer.write(b'{"n":2}\n') is False
            with pytest.raises(ConflictError, match="taken over"):
                await writer.commit()
            with pytest.raises(ConflictError):
                writer.write(b'{"n":3}\n')
            stored = b"".join([c async for c in backend.read_bytes("run_x", "steps")])
            assert stored == b'{"n":1}\n'
            await writer.close()
        finally:
            await backend.aclose()

    asyncio.run(scenario())


def test_reads_from_a_byte_offset_inside_a_record(postgres_url: str) -> None:
    async def scenario() -> None:
        backend = _backend(postgres_url)
        try:
            writer = await backend.open_writer("run_x", "steps")
            writer.write(b'{"n":1}\n{"n":22}\n')
            await writer.commit()
            writer.write(b'{"n":333}\n')
            await writer.commit()
            whole = b'{"n":1}\n{"n":22}\n{"n":333}\n'
            for offset in range(len(whole) + 1):
                got = b"".join([c async for c in backend.read_bytes("run_x", "steps", offset)])
                assert got == whole[offset:], offset
            assert await backend.stream_size("run_x", "steps") == len(whole)
            await writer.close()
        finally:
            await backend.aclose()

    asyncio.run(scenario())


# -- durability -------------------------------------------------------------------------


def test_batch_acknowledges_at_once_and_flush_makes_it_durable(postgres_url: str) -> None:
    with runstore.open(postgres_url + "&batch_interval=3600", durability="batch") as writer_store:
        run = writer_store.create_run(run_id="run_batch")
        for n in range(10):
            run.append("steps", {"n": n})
        with runstore.open(postgres_url) as reader:
            assert list(reader.get_run("run_batch").read("steps")) == []  # still buffered
            run.flush()
            assert [r["n"] for r in reader.get_run("run_batch").read("steps")] == list(range(10))
        run.finish()


def test_batch_window_commits_without_a_flush(postgres_url: str) -> None:
    with runstore.open(postgres_url + "&batch_interval=0.05", durability="batch") as writer_store:
        run = writer_store.create_run(run_id="run_window")
        run.append("steps", {"n": 1})
        with runstore.open(postgres_url) as reader:
            for _ in range(600):  # up to a minute on a loaded machine; usually one round
                if list(reader.get_run("run_window").read("steps")):
                    break
                asyncio.run(asyncio.sleep(0.1))
            assert list(reader.get_run("run_window").read("steps")) == [{"n": 1}]
        run.finish()


def test_server_restart_mid_run_is_backend_unavailable_then_the_writer_goes_on(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    with runstore.open(postgres_url + "&connect_timeout=2") as store:
        run = store.create_run(run_id="run_outage")
        run.append("steps", {"n": 0})
        postgres_server.stop()
        try:
            with pytest.raises(BackendUnavailableError):
                run.append("steps", {"n": 1})
        finally:
            postgres_server.start()
        run.append("steps", {"n": 2})
        run.finish()
        records = list(store.get_run("run_outage").read("steps"))
    # Every acknowledged record is there; the refused one may have been kept in the
    # writer's buffer and stored with the next commit, never twice.
    assert records in ([{"n": 0}, {"n": 2}], [{"n": 0}, {"n": 1}, {"n": 2}])


# -- queries ----------------------------------------------------------------------------


def test_filter_values_are_bound_never_spliced(store: runstore.Store) -> None:
    hostile = "x'); DROP TABLE runs; --"
    store.create_run(run_id="run_a", metadata={"project": hostile}).finish()
    store.create_run(run_id="run_b", metadata={"project": "demo"}).finish()
    quoted = hostile.replace("'", "''")
    found = store.list_runs(where=f"metadata.project = '{quoted}' OR sut_name LIKE '{quoted}'")
    assert [r.run_id for r in found] == ["run_a"]
    assert len(store.list_runs()) == 2


def test_metadata_comparisons_follow_the_reference(store: runstore.Store) -> None:
    values: dict[str, Any] = {
        "run_int": 1,
        "run_float": 1.0,
        "run_text": "1",
        "run_bool": True,
        "run_list": [0, 1, "b"],
        "run_empty": [],
        "run_big": 2**62,
        "run_tenth": 0.1,
    }
    for run_id, value in values.items():
        store.create_run(run_id=run_id, metadata={"x": value}).finish()
    store.create_run(run_id="run_none").finish()
    filters = [
        "metadata.x = 1",
        "metadata.x = '1'",
        "metadata.x = TRUE",
        "metadata.x != 1",
        "metadata.x IN (0.1, 'b')",
        "metadata.x NOT IN (1, 'b')",
        "metadata.x > 0.5",
        "metadata.x >= 4611686018427387904",
        "metadata.x < 'c'",
        "metadata.x LIKE '_'",
        "metadata.x IS NULL",
        "metadata.x IS NOT NULL",
        "NOT (metadata.x = 1)",
        "metadata.x = 0.1",
    ]
    everything = store.list_runs()
    for where in filters:
        expected = RunQuery(where=where).apply(everything)
        got = store.list_runs(where=where)
        assert [r.run_id for r in got] == [r.run_id for r in expected], where


def test_a_value_postgres_text_cannot_hold_is_answered_by_the_reference(
    store: runstore.Store,
) -> None:
    store.create_run(run_id="run_nul", sut_name="a\x00b").finish()
    store.create_run(run_id="run_plain", sut_name="ab").finish()
    assert [r.run_id for r in store.list_runs(where="sut_name = 'a\x00b'")] == ["run_nul"]
    assert [r.run_id for r in store.list_runs(sut_name="ab")] == ["run_plain"]
    assert store.get_run("run_nul").manifest.sut_name == "a\x00b"


def test_a_metadata_filter_uses_the_gin_index(postgres_url: str) -> None:
    async def scenario() -> list[str]:
        backend = _backend(postgres_url)
        try:
            query = RunQuery(where="metadata.project = 'demo' AND tags CONTAINS 'x'", limit=50)
            # A handful of rows: the planner would scan; without scans it needs the indexes.
            return await backend.explain(query, without_scans=True)
        finally:
            await backend.aclose()

    lines = asyncio.run(scenario())
    assert any("runs_metadata" in line or "runs_tags" in line for line in lines), "\n".join(lines)
