"""The command line on streams with damaged lines: ``tail``, ``replay`` and ``verify``.

A damaged line is one that is not JSON, planted behind runstore's back after
the run was written through the API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from click.testing import Result

import runstore
from runstore import reading
from runstore_local.backend import LocalBackend

if TYPE_CHECKING:
    from conftest import CliStore

Runs = Callable[..., None]
GARBAGE = b"{not json"


def _steps(store: CliStore, count: int, run_id: str = "run_a") -> None:
    with runstore.open(store.url) as opened, opened.create_run(run_id) as run:
        for n in range(count):
            run.append("steps", {"n": n})


def _damage(store: CliStore, key: str, *numbers: int) -> None:
    """Replace lines ``numbers`` (1-based) of a stored stream with a line that is not JSON."""
    lines = store.read(key).splitlines(keepends=True)
    for number in numbers:
        lines[number - 1] = GARBAGE + b"\n"
    store.overwrite(key, b"".join(lines))


def _records(result: Result) -> list[Any]:
    return [orjson.loads(line) for line in result.stdout.splitlines()]


# -- tail ---------------------------------------------------------------------------------


def test_tail_n_3_prints_the_last_3_records(local_store: CliStore) -> None:
    _steps(local_store, 10)
    result = local_store.invoke("tail", "run_a", "steps", "-n", "3", "--json")
    assert result.exit_code == 0, result.output
    assert [r["n"] for r in _records(result)] == [7, 8, 9]


def test_tail_on_a_corrupt_line_in_the_middle_prints_the_others_reports_it_and_exits_1(
    cli_store: CliStore,
) -> None:
    _steps(cli_store, 5)
    _damage(cli_store, "run_a/steps.jsonl", 3)
    result = cli_store.invoke("tail", "run_a", "steps")
    assert result.exit_code == 1, result.output
    assert [r["n"] for r in _records(result)] == [0, 1, 3, 4]
    report, error = result.stderr.splitlines()
    assert report.startswith("line 3: not valid JSON (")
    assert error.startswith("error: steps.jsonl has damaged lines (1 skipped)")
    assert "Traceback" not in result.output


def test_tail_json_puts_the_damage_report_in_the_closing_error_object(
    local_store: CliStore,
) -> None:
    _steps(local_store, 5)
    _damage(local_store, "run_a/steps.jsonl", 2, 4)
    result = local_store.invoke("tail", "run_a", "steps", "--json")
    assert result.exit_code == 1, result.output
    *records, last = _records(result)
    assert [r["n"] for r in records] == [0, 2, 4]
    error = last["error"]
    assert error["code"] == "corrupt"
    assert error["details"]["count"] == 2
    assert [(d["line"], d["size"]) for d in error["details"]["damaged"]] == [
        (2, len(GARBAGE)),
        (4, len(GARBAGE)),
    ]
    assert result.stderr == ""


def test_tail_n_is_untroubled_by_a_corrupt_line_before_the_last_n(local_store: CliStore) -> None:
    _steps(local_store, 20)
    _damage(local_store, "run_a/steps.jsonl", 2)
    result = local_store.invoke("tail", "run_a", "steps", "-n", "3", "--json")
    assert result.exit_code == 0, result.output
    assert [r["n"] for r in _records(result)] == [17, 18, 19]


def test_tail_n_reads_only_the_end_of_a_long_stream(
    local_store: CliStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with runstore.open(local_store.url) as opened, opened.create_run("run_a") as run:
        for n in range(50_000):
            run.append("steps", {"n": n, "pad": "x" * 20})
    size = len(local_store.read("run_a/steps.jsonl"))
    reads: list[tuple[int, int]] = []  # (offset asked for, bytes taken)
    original = LocalBackend.read_bytes

    async def counting(
        self: LocalBackend, run_id: str, stream: str, offset: int = 0
    ) -> AsyncIterator[bytes]:
        reads.append((offset, 0))
        async for chunk in original(self, run_id, stream, offset):
            reads[-1] = (offset, reads[-1][1] + len(chunk))
            yield chunk

    monkeypatch.setattr(LocalBackend, "read_bytes", counting)
    result = local_store.invoke("tail", "run_a", "steps", "-n", "3", "--json")
    assert result.exit_code == 0, result.output
    assert [r["n"] for r in _records(result)] == [49_997, 49_998, 49_999]
    assert size > 20 * reading.FIRST_BLOCK
    assert reads == [(size - reading.FIRST_BLOCK, reading.FIRST_BLOCK)]


def test_tail_follow_goes_on_from_the_end_of_a_live_stream(local_store: CliStore) -> None:
    started = threading.Event()

    def writer() -> None:
        with runstore.open(local_store.url) as opened:
            run = opened.create_run("live")
            for n in range(5):
                run.append("steps", {"n": n})
            started.set()
            for n in range(5, 10):
                time.sleep(0.05)
                run.append("steps", {"n": n})
            run.finish()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert started.wait(10)
        result = local_store.invoke(
            "tail", "live", "steps", "-f", "-n", "2", "--poll-interval", "0.02", "--json"
        )
    finally:
        thread.join()
    assert result.exit_code == 0, result.output
    numbers = [r["n"] for r in _records(result)]
    first = numbers[0]  # the last 2 of the records there when tail started (at least 5)
    assert first >= 3
    assert numbers == list(range(first, 10))


# -- replay and verify -------------------------------------------------------------------


def test_replay_of_an_unrelated_instance_works_and_notes_the_damage(
    local_store: CliStore, small_runs: Runs, tmp_path: Path
) -> None:
    small_runs(local_store, "run_a")
    _damage(local_store, "run_a/steps.jsonl", 2)  # inst_002's step
    result = local_store.invoke("replay", "run_a", "inst_001", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    bundle = orjson.loads((tmp_path / "out" / "bundle.json").read_bytes())
    assert [s["instance_id"] for s in bundle["steps"]] == ["inst_001"]
    assert bundle["damaged"] == {"steps": 1}


def test_verify_lists_each_of_two_damaged_lines(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a")
    _damage(local_store, "run_a/assertions.jsonl", 1, 2)
    result = local_store.invoke("verify", "--json")
    assert result.exit_code == 1, result.output
    (run,) = orjson.loads(result.stdout)["runs"]
    damaged = [p for p in run["problems"] if p["line"] is not None]
    assert [(p["where"], p["line"]) for p in damaged] == [
        ("assertions.jsonl", 1),
        ("assertions.jsonl", 2),
    ]
    human = local_store.invoke("verify").stdout.splitlines()
    for number in (1, 2):
        listed = f"      assertions.jsonl: line {number}: not valid JSON ("
        assert any(line.startswith(listed) for line in human), human
