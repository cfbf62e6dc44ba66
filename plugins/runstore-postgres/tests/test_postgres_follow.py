"""Live tails on postgres: followers are woken by LISTEN/NOTIFY, not by their poll interval.

Every follower here polls once an hour (``poll_interval=3600``): a record that
reaches it, and a follow that ends when the run finishes, came through a
notification. A broken wake-up shows as a ``queue.Empty`` after a minute.
"""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest

import runstore
from runstore.model.errors import InvalidInputError
from runstore.registry.config import parse_target
from runstore_postgres.backend import PostgresBackend
from runstore_postgres.testing import PostgresServer

HOUR = 3600.0
PATIENCE = 60.0  # seconds a step may take on a loaded machine; a poll would take an hour
_DONE = object()

_WRITER = """
import sys, runstore
with runstore.open(sys.argv[1]) as store:
    run = store.create_run(run_id="run_live")
    run.append("steps", {"n": 0})
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "finish":
            break
        run.append("steps", {"n": int(line)})
        print("appended", flush=True)
    run.finish()
print("finished", flush=True)
"""


def _backend(url: str) -> PostgresBackend:
    return PostgresBackend.from_target(parse_target(url)[1])


@pytest.fixture
def writer(postgres_url: str) -> Iterator[subprocess.Popen[str]]:
    """Another process writing run ``run_live``: one record, then one per line it is sent."""
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, postgres_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        yield process
        process.kill()


def _say(process: subprocess.Popen[str], line: str, answer: str) -> None:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()
    assert process.stdout.readline() == answer + "\n"


def _pipe(source: IO[str] | None, into: queue.Queue[str]) -> None:
    for line in source or ():
        into.put(line)


def _follow(url: str, into: queue.Queue[Any]) -> None:
    with runstore.open(url) as store:
        for record in store.get_run("run_live").read("steps", follow=True, poll_interval=HOUR):
            into.put(record)
    into.put(_DONE)


def test_a_follower_sees_another_process_append_without_waiting_a_poll_interval(
    postgres_url: str, writer: subprocess.Popen[str]
) -> None:
    seen: queue.Queue[Any] = queue.Queue()
    follower = threading.Thread(target=_follow, args=(postgres_url, seen), daemon=True)
    follower.start()
    assert seen.get(timeout=PATIENCE) == {"n": 0}
    for n in (1, 2):
        _say(writer, str(n), "appended")
        assert seen.get(timeout=PATIENCE) == {"n": n}
    _say(writer, "finish", "finished")
    assert seen.get(timeout=PATIENCE) is _DONE  # the run's end is notified too
    follower.join(PATIENCE)


def test_tail_f_prints_records_of_a_live_run_as_they_are_committed(postgres_url: str) -> None:
    with runstore.open(postgres_url) as store:
        run = store.create_run(run_id="run_live")
        run.append("steps", {"n": 0})
        command = [
            *(str(Path(sys.executable).with_name("runstore")), "--store", postgres_url),
            *("tail", "-f", "--json", "--poll-interval", str(HOUR), "run_live", "steps"),
        ]
        env = {**os.environ, "NO_COLOR": "1"}
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as tail:
            lines: queue.Queue[str] = queue.Queue()
            threading.Thread(target=_pipe, args=(tail.stdout, lines), daemon=True).start()
            try:
                assert lines.get(timeout=PATIENCE) == '{"n":0}\n'
                run.append("steps", {"n": 1})
                assert lines.get(timeout=PATIENCE) == '{"n":1}\n'
                run.finish()
                assert tail.wait(PATIENCE) == 0  # the end of the run stops it
            finally:
                tail.kill()


def test_a_record_committed_before_the_wait_ends_it_at_once(postgres_url: str) -> None:
    async def scenario() -> None:
        follower, writer = _backend(postgres_url), _backend(postgres_url)
        with runstore.open(postgres_url) as store:
            store.create_run(run_id="run_x")  # a live run: the wait does not end at once
        try:
            stream = await writer.open_writer("run_x", "steps")
            stream.write(b'{"n":1}\n')
            await stream.commit()  # between a follower's read and its wait
            await asyncio.wait_for(follower.wait_for_append("run_x", "steps", 0, HOUR), PATIENCE)
            await stream.close()
        finally:
            await follower.aclose()
            await writer.aclose()

    asyncio.run(scenario())


def test_a_lost_listening_connection_wakes_the_follower_and_is_opened_again(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    async def scenario() -> None:
        backend = _backend(postgres_url)
        with runstore.open(postgres_url) as store:
            store.create_run(run_id="run_x")
        try:
            waiting = asyncio.create_task(backend.wait_for_append("run_x", "steps", 0, HOUR))
            while not await _listeners(postgres_server):
                await asyncio.sleep(0.05)
            with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN %'"
                )
            await asyncio.wait_for(waiting, PATIENCE)
            again = asyncio.create_task(backend.wait_for_append("run_x", "steps", 0, HOUR))
            while not await _listeners(postgres_server):
                await asyncio.sleep(0.05)
            again.cancel()
        finally:
            await backend.aclose()

    asyncio.run(scenario())


async def _listeners(server: PostgresServer) -> int:
    async with await psycopg.AsyncConnection.connect(server.url(), autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND state = 'idle'"
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def test_without_notify_a_follower_polls(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    async def scenario() -> None:
        backend = _backend(postgres_url + "&notify=false")
        try:
            assert backend.notify is False
            await backend.wait_for_append("run_x", "steps", 0, 0.01)  # a plain sleep
            assert await _listeners(postgres_server) == 0
        finally:
            await backend.aclose()

    asyncio.run(scenario())


def test_a_notify_option_that_is_not_a_flag_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match=r"notify=.*true or false"):
        runstore.open("postgresql://nobody@127.0.0.1:1/db?notify=maybe")
