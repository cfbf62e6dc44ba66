"""One damaged line must not make a whole stream unreadable.

Reads raise at a damaged line by default and skip and report it with
``errors="skip"``; ``reading.tail`` reads a stream's last records from its
end; replay bundles and ``verify_run`` go on past damage. The streams are
written through the API, then damaged in the memory backend's data.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import runstore
import runstore.aio
from runstore import reading
from runstore.model.errors import CorruptError, InvalidInputError, NotFoundError
from runstore.model.records import DAMAGED_KEPT, DamagedLine
from runstore.ops.maintenance import DAMAGE_LISTED, verify_run
from runstore.reading import tail
from runstore.spi.backends import LogBackend
from runstore.spi.memory import MemoryBackend

GARBAGE = b"{not json"


@pytest.fixture
def store() -> Iterator[runstore.Store]:
    with runstore.open(f"memory://damaged-{uuid.uuid4().hex}") as store:
        yield store


@pytest.fixture
def url(store: runstore.Store) -> str:
    return store.url


def _stored(url: str, run_id: str, stream: str) -> bytearray:
    return MemoryBackend(url.removeprefix("memory://"))._data.streams[(run_id, stream)]


def _damage(url: str, run_id: str, stream: str, *numbers: int, garbage: bytes = GARBAGE) -> None:
    """Replace lines ``numbers`` (1-based) of a stored stream with ``garbage``."""
    data = _stored(url, run_id, stream)
    lines = bytes(data).splitlines(keepends=True)
    for number in numbers:
        lines[number - 1] = garbage + b"\n"
    data[:] = b"".join(lines)


def _offset(url: str, run_id: str, stream: str, number: int) -> int:
    lines = bytes(_stored(url, run_id, stream)).splitlines(keepends=True)
    return sum(len(line) for line in lines[: number - 1])


def _steps(store: runstore.Store, run_id: str, count: int, *, finish: bool = True) -> None:
    run = store.create_run(run_id)
    for n in range(count):
        run.append("steps", {"n": n})
    if finish:
        run.finish()


def _tail(store: runstore.Store, stream: str, count: int, run_id: str = "run_d") -> reading.Tail:
    return store.portal.call(tail(store.get_run(run_id).aio, stream, count))


def _tail_of_damaged(store: runstore.Store, steps: int, damaged: int, count: int) -> reading.Tail:
    """``tail`` of a finished run of ``steps`` steps whose line ``damaged`` is not JSON."""
    _steps(store, "run_d", steps)
    _damage(store.url, "run_d", "steps", damaged)
    return _tail(store, "steps", count)


# -- read ---------------------------------------------------------------------------------


def test_read_raises_at_a_corrupt_line_by_default_naming_it(
    store: runstore.Store, url: str
) -> None:
    _steps(store, "run_d", 5)
    _damage(url, "run_d", "steps", 3)
    with pytest.raises(CorruptError) as info:
        list(store.get_run("run_d").read("steps"))
    assert info.value.details["line"] == 3
    assert info.value.details["offset"] == _offset(url, "run_d", "steps", 3)
    assert "steps.jsonl line 3 is not valid JSON" in info.value.message


def test_read_with_errors_skip_yields_the_rest_and_reports_the_damaged_line(
    store: runstore.Store, url: str
) -> None:
    _steps(store, "run_d", 5)
    _damage(url, "run_d", "steps", 3)
    view = store.get_run("run_d")
    assert [r["n"] for r in view.read("steps", errors="skip")] == [0, 1, 3, 4]
    (damaged,) = view.damaged["steps"]
    assert (damaged.stream, damaged.line, damaged.size) == ("steps", 3, len(GARBAGE))
    assert damaged.offset == _offset(url, "run_d", "steps", 3)
    assert damaged.cause.startswith("not valid JSON (")
    assert str(damaged).startswith("line 3: not valid JSON (")
    assert view.damaged["steps"].total == 1


def test_async_read_batches_with_errors_skip_skips_the_damaged_lines() -> None:
    url = f"memory://damaged-async-{uuid.uuid4().hex}"

    async def scenario() -> tuple[list[Any], list[int | None]]:
        async with runstore.aio.open(url) as store:
            async with await store.create_run("run_d") as run:
                for n in range(6):
                    await run.append("steps", {"n": n})
            _damage(url, "run_d", "steps", 2, 5)
            view = await store.get_run("run_d")
            found = [r async for batch in view.read_batches("steps", errors="skip") for r in batch]
            return found, [line.line for line in view.damaged["steps"]]

    found, lines = asyncio.run(scenario())
    assert [r["n"] for r in found] == [0, 2, 3, 5]
    assert lines == [2, 5]


def test_a_bad_errors_value_is_invalid_input(store: runstore.Store) -> None:
    _steps(store, "run_d", 1)
    with pytest.raises(InvalidInputError) as info:
        list(store.get_run("run_d").read("steps", errors="ignore"))  # type: ignore[arg-type]
    assert "'raise'" in info.value.message
    assert "'skip'" in info.value.message


def test_a_torn_tail_is_held_back_not_reported_as_damage(store: runstore.Store, url: str) -> None:
    _steps(store, "run_d", 2)
    _stored(url, "run_d", "steps").extend(b'{"n": 2')
    view = store.get_run("run_d")
    assert [r["n"] for r in view.read("steps", errors="skip")] == [0, 1]
    assert view.damaged["steps"] == []
    assert view.torn_tails["steps"] == 7


def test_a_read_keeps_the_first_damaged_lines_and_counts_them_all(
    store: runstore.Store, url: str
) -> None:
    _steps(store, "run_d", 1)
    _stored(url, "run_d", "steps").extend(b"x\n" * (DAMAGED_KEPT + 5))
    view = store.get_run("run_d")
    assert list(view.read("steps", errors="skip")) == [{"n": 0}]
    assert len(view.damaged["steps"]) == DAMAGED_KEPT
    assert view.damaged["steps"].total == DAMAGED_KEPT + 5
    assert view.damaged["steps"][-1].line == DAMAGED_KEPT + 1


# -- tail ---------------------------------------------------------------------------------


def test_tail_returns_the_last_records_whatever_damage_lies_before_them(
    store: runstore.Store,
) -> None:
    found = _tail_of_damaged(store, steps=20, damaged=2, count=3)
    assert [r["n"] for r in found.records] == [17, 18, 19]
    assert found.damaged == []


def test_tail_skips_and_numbers_damage_among_the_last_records_of_a_short_stream(
    store: runstore.Store, url: str
) -> None:
    found = _tail_of_damaged(store, steps=10, damaged=9, count=3)
    assert [r["n"] for r in found.records] == [6, 7, 9]
    assert found.damaged == [
        DamagedLine(
            "steps", 9, _offset(url, "run_d", "steps", 9), len(GARBAGE), found.damaged[0].cause
        )
    ]
    assert found.lines == 10


def test_tail_reads_only_the_end_of_a_long_stream(store: runstore.Store, url: str) -> None:
    run = store.create_run("run_d")
    for n in range(50_000):
        run.append("steps", {"n": n, "pad": "x" * 20})
    run.finish()
    backend = store.aio.log_backend
    reads: list[tuple[int, int]] = []  # (offset asked for, bytes taken)
    original = backend.read_bytes

    async def counting(run_id: str, stream: str, offset: int = 0) -> AsyncIterator[bytes]:
        reads.append((offset, 0))
        async for chunk in original(run_id, stream, offset):
            reads[-1] = (offset, reads[-1][1] + len(chunk))
            yield chunk

    backend.read_bytes = counting  # type: ignore[method-assign]
    found = _tail(store, "steps", 3)
    size = len(_stored(url, "run_d", "steps"))
    assert size > 20 * reading.FIRST_BLOCK
    assert [r["n"] for r in found.records] == [49_997, 49_998, 49_999]
    assert reads == [(size - reading.FIRST_BLOCK, reading.FIRST_BLOCK)]


def test_tail_of_a_long_stream_reports_damage_by_offset_without_a_line_number(
    store: runstore.Store, url: str
) -> None:
    found = _tail_of_damaged(store, steps=20_000, damaged=19_999, count=3)
    assert [r["n"] for r in found.records] == [19_996, 19_997, 19_999]
    (damaged,) = found.damaged
    assert damaged.line is None
    assert damaged.offset == _offset(url, "run_d", "steps", 19_999)
    assert str(damaged).startswith(f"byte {damaged.offset}: not valid JSON")


def _from_the_end(data: bytes, count: int) -> tuple[list[Any], list[tuple[int, int]], int]:
    """What tail must find, the plain way: records, damaged (line, offset) and torn bytes."""
    body, newline, torn = data.rpartition(b"\n")
    lines, offsets, offset = (body + newline).splitlines(), [], 0
    for line in lines:
        offsets.append(offset)
        offset += len(line) + 1
    records: list[Any] = []
    damaged: list[tuple[int, int]] = []
    for index in range(len(lines) - 1, -1, -1):
        if len(records) >= count:
            break
        try:
            records.insert(0, orjson.loads(lines[index]))
        except orjson.JSONDecodeError:
            damaged.insert(0, (index + 1, offsets[index]))
    return records, damaged, len(torn)


@pytest.mark.parametrize("block", [1, 3, 16, 1 << 16])
@pytest.mark.parametrize("count", [0, 1, 4, 100])
def test_tail_from_the_end_agrees_with_reading_line_by_line_whatever_the_block_size(
    store: runstore.Store, url: str, monkeypatch: pytest.MonkeyPatch, block: int, count: int
) -> None:
    _steps(store, "run_d", 12, finish=False)
    _damage(url, "run_d", "steps", 1, 6, 7, 11)
    _damage(url, "run_d", "steps", 3, garbage=b"")
    _stored(url, "run_d", "steps").extend(b'{"n": "torn')
    monkeypatch.setattr(reading, "FIRST_BLOCK", block)
    monkeypatch.setattr(reading, "MAX_BLOCK", max(block, 32))
    found = _tail(store, "steps", count)
    data = bytes(_stored(url, "run_d", "steps"))
    records, damaged, torn = _from_the_end(data, count)
    assert found.records == records
    known = found.lines is not None
    assert [(d.line, d.offset) for d in found.damaged] == [
        (line if known else None, offset) for line, offset in damaged
    ]
    assert (found.torn, found.end) == (torn, len(data) - torn)
    assert found.lines in (None, data.count(b"\n"))


def test_tail_of_a_backend_without_stream_size_reads_it_forward(
    store: runstore.Store, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _steps(store, "run_d", 8)
    _damage(url, "run_d", "steps", 2)
    monkeypatch.setattr(MemoryBackend, "stream_size", LogBackend.stream_size)
    found = _tail(store, "steps", 2)
    assert [r["n"] for r in found.records] == [6, 7]
    assert [d.line for d in found.damaged] == [2]
    assert (found.lines, found.torn) == (8, 0)


def test_following_after_tail_goes_on_from_the_end(store: runstore.Store, url: str) -> None:
    _steps(store, "run_d", 4, finish=False)
    _stored(url, "run_d", "steps").extend(b'{"n": 4')
    view = store.get_run("run_d")
    found = store.portal.call(tail(view.aio, "steps", 2))
    assert found.torn == 7
    _stored(url, "run_d", "steps").extend(b'}\n{"n": 5}\n')
    decoder = found.decoder()
    records = [
        record
        for chunk in store.portal.iterate(view.aio.follow_chunks("steps", decoder))
        for record in decoder.records(decoder.feed(chunk))
    ]
    assert [r["n"] for r in found.records + records] == [2, 3, 4, 5]


def test_tail_refuses_a_negative_count(store: runstore.Store) -> None:
    _steps(store, "run_d", 1)
    with pytest.raises(InvalidInputError):
        _tail(store, "steps", -1)


# -- replay -------------------------------------------------------------------------------


def _instances(store: runstore.Store) -> None:
    with store.create_run("run_d") as run:
        for n in (1, 2, 3):
            instance = f"inst_{n:03d}"
            run.put_artifact(f"{instance}/out.json", b"{}")
            run.append("steps", {"instance_id": instance, "step_name": "buy"})
            run.append("instances", {"instance_id": instance, "status": "passed"})


def test_replay_of_an_unrelated_instance_works_despite_a_damaged_line(
    store: runstore.Store, url: str
) -> None:
    _instances(store)
    _damage(url, "run_d", "steps", 2)  # inst_002's step
    bundle = store.get_run("run_d").instance("inst_001")
    assert bundle.steps == [{"instance_id": "inst_001", "step_name": "buy"}]
    assert bundle.instance == {"instance_id": "inst_001", "status": "passed"}
    assert [ref.name for ref in bundle.artifacts] == ["inst_001/out.json"]
    assert bundle.damaged == {"steps": 1}


def test_an_instance_found_nowhere_but_damage_somewhere_is_not_found_naming_the_damage(
    store: runstore.Store, url: str
) -> None:
    with store.create_run("run_d") as run:
        run.append("steps", {"instance_id": "inst_001"})
        run.append("steps", {"instance_id": "inst_002"})
    _damage(url, "run_d", "steps", 2)
    with pytest.raises(NotFoundError) as info:
        store.get_run("run_d").instance("inst_002")
    assert info.value.details["damaged"] == {"steps": 1}
    assert "1 damaged lines could not be read" in info.value.message


def test_a_bundle_of_an_intact_run_reports_no_damage(store: runstore.Store) -> None:
    _instances(store)
    assert store.get_run("run_d").instance("inst_002").damaged == {}


def test_replay_skips_an_artifact_line_that_is_not_a_reference(
    store: runstore.Store, url: str
) -> None:
    _instances(store)
    _damage(url, "run_d", "artifacts", 1, garbage=b'{"name": "inst_001/out.json"}')
    bundle = store.get_run("run_d").instance("inst_002")
    assert [ref.name for ref in bundle.artifacts] == ["inst_002/out.json"]
    assert bundle.damaged == {"artifacts": 1}


def test_an_exported_bundle_keeps_its_damage_count(
    store: runstore.Store, url: str, tmp_path: Path
) -> None:
    _instances(store)
    _damage(url, "run_d", "instances", 3)
    bundle = store.get_run("run_d").instance("inst_001")
    bundle.export(tmp_path)
    assert runstore.replay.load(tmp_path).damaged == {"instances": 1}


# -- verify -------------------------------------------------------------------------------


def test_verify_lists_each_damaged_line_with_its_number(store: runstore.Store, url: str) -> None:
    _steps(store, "run_d", 5)
    _damage(url, "run_d", "steps", 2, 4)
    problems = store.portal.call(verify_run(store.aio, "run_d"))
    assert [(p.where, p.line) for p in problems] == [("steps.jsonl", 2), ("steps.jsonl", 4)]
    assert all(p.message.startswith(f"line {p.line}: not valid JSON (") for p in problems)


def test_verify_lists_a_capped_number_of_damaged_lines_a_stream_then_counts_the_rest(
    store: runstore.Store, url: str
) -> None:
    _steps(store, "run_d", DAMAGE_LISTED + 7)
    _damage(url, "run_d", "steps", *range(1, DAMAGE_LISTED + 8))
    problems = store.portal.call(verify_run(store.aio, "run_d"))
    assert len(problems) == DAMAGE_LISTED + 1
    assert problems[-1].message == "and 7 more damaged lines"


def test_verify_goes_on_with_the_other_checks_after_damaged_lines(
    store: runstore.Store, url: str
) -> None:
    _instances(store)
    _damage(url, "run_d", "steps", 1)
    _damage(url, "run_d", "artifacts", 2)
    MemoryBackend(url.removeprefix("memory://"))._data.artifacts[("run_d", "inst_003/out.json")] = (
        b"[]"
    )
    problems = store.portal.call(verify_run(store.aio, "run_d"))
    assert [(p.where, p.line) for p in problems] == [
        ("steps.jsonl", 1),
        ("artifacts.jsonl", 2),
        ("artifacts/inst_003/out.json", None),
        ("summary.json", None),  # the summary counted 3 artifacts; 2 can be read
    ]
