"""Torn tails at every byte offset, and corruption in the middle of a stream.

A stream cut short at byte ``k`` (what a crash in the middle of a write
leaves) must read as exactly the records whose line ends at or before ``k``;
the bytes after the last newline are the torn tail: hidden from readers,
reported in ``view.torn_tails``, and cut off by the next writer. A damaged
line *followed by other lines* is not a torn tail: reading it raises
:class:`~runstore.model.errors.CorruptError` naming its line number, it is never
skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import Figures, Scale

import runstore
from runstore.model.errors import CorruptError
from runstore.model.records import LineDecoder, encode_record
from runstore.ops.maintenance import verify_run
from runstore_fsspec.testing import S3Server
from runstore_local import LocalBackend

RECORDS: list[dict[str, Any]] = [
    {"n": 0, "text": "plain"},
    {"n": 1, "text": "ünïcödé ☃ 𝄞 (multi-byte characters a cut can split)"},
    {"n": 2, "nested": {"a": [1, 2.5, {"b": None, "c": True}]}},
    {"n": 3, "escaped": 'quote " backslash \\ newline \n tab \t'},
    {"n": 4, "big": 1.5e300, "neg": -(2**62)},
    {"n": 5, "empty": {}, "list": []},
]
LINES = [encode_record(r) for r in RECORDS]
DATA = b"".join(LINES)
ENDS = [sum(len(line) for line in LINES[: i + 1]) for i in range(len(LINES))]


def complete_prefix(offset: int) -> tuple[list[dict[str, Any]], int]:
    """The records a reader must return for ``DATA[:offset]``, and the torn bytes after them."""
    whole = [i for i, end in enumerate(ENDS) if end <= offset]
    kept = ENDS[whole[-1]] if whole else 0
    return [RECORDS[i] for i in whole], offset - kept


def offsets(scale: Scale, *, every: int) -> Iterator[int]:
    """Every offset in the long form; in the quick subset every ``every``-th and each line end."""
    edges = {0, len(DATA)} | {e + d for e in ENDS for d in (-1, 0, 1)}
    for offset in range(len(DATA) + 1):
        if scale.long or offset % every == 0 or offset in edges:
            yield offset


def test_the_decoder_returns_exactly_the_complete_prefix_at_every_offset_and_split() -> None:
    for offset in range(len(DATA) + 1):
        expected, torn = complete_prefix(offset)
        for split in range(offset + 1):  # the cut may fall anywhere between two reads
            decoder = LineDecoder("steps")
            records = decoder.decode(decoder.feed(DATA[:split]))
            records += decoder.decode(decoder.feed(DATA[split:offset]))
            assert records == expected, (offset, split)
            assert decoder.torn_tail == torn
            assert decoder.offset == offset - torn


def test_reader_hides_a_torn_tail_at_every_offset_and_the_next_writer_cuts_it_off(
    root: Path, figures: Figures
) -> None:
    with runstore.open(str(root), heartbeat_interval=0) as store:
        store.create_run(run_id="run_torn")
    steps = root / "run_torn" / "steps.jsonl"
    backend = LocalBackend(root)
    extra = encode_record({"n": "next"})

    async def next_writer() -> None:
        writer = await backend.open_writer("run_torn", "steps")
        writer.write(extra)
        await writer.close()

    with runstore.open(str(root), heartbeat_interval=0) as store:
        for offset in range(len(DATA) + 1):
            expected, torn = complete_prefix(offset)
            steps.write_bytes(DATA[:offset])
            view = store.get_run("run_torn")
            assert list(view.read("steps")) == expected, offset
            assert view.torn_tails["steps"] == torn, offset
            asyncio.run(next_writer())
            assert steps.read_bytes() == DATA[: offset - torn] + extra, offset
            assert list(view.read("steps")) == [*expected, {"n": "next"}]
            assert view.torn_tails["steps"] == 0
    asyncio.run(backend.aclose())
    figures.add("torn.local.offsets", len(DATA) + 1)


def test_resume_run_repairs_the_torn_tail_it_finds(
    root: Path, scale: Scale, figures: Figures
) -> None:
    tried = 0
    with runstore.open(str(root), heartbeat_interval=0) as store:
        for offset in offsets(scale, every=7):
            run_id = f"run_{offset:04d}"
            store.create_run(run_id=run_id)
            (root / run_id / "steps.jsonl").write_bytes(DATA[:offset])
            expected, _ = complete_prefix(offset)
            run = store.resume_run(run_id, force=True)  # its creator stands for a dead writer
            run.append("steps", {"n": "resumed"})
            summary = run.finish()
            assert summary.stream_counts == {"steps": len(expected) + 1}
            view = store.get_run(run_id)
            assert list(view.read("steps")) == [*expected, {"n": "resumed"}]
            assert view.torn_tails["steps"] == 0
            tried += 1
    figures.add("torn.local.resumed_offsets", tried)


def test_resume_run_repairs_torn_tails_of_streams_it_never_writes_again(root: Path) -> None:
    with runstore.open(str(root), heartbeat_interval=0) as store:
        store.create_run(run_id="run_idle").put_artifact("a.txt", b"a")
    refs = (root / "run_idle" / "artifacts.jsonl").read_bytes()
    torn = {"steps": DATA[: ENDS[1] + 5], "logs": DATA[: ENDS[0] + 9], "artifacts": refs + b'{"ru'}
    for stream, data in torn.items():
        (root / "run_idle" / f"{stream}.jsonl").write_bytes(data)
    with runstore.open(str(root), heartbeat_interval=0) as store:
        run = store.resume_run("run_idle")
        run.append("instances", {"n": 0})  # only another stream is written
        run.finish()
        view = store.get_run("run_idle")
        assert list(view.read("steps")) == RECORDS[:2]
        assert list(view.read("logs")) == RECORDS[:1]
        assert [ref.name for ref in view.artifacts()] == ["a.txt"]
        assert set(view.torn_tails.values()) == {0}
        assert store.portal.call(verify_run(store.aio, "run_idle")) == []
    assert (root / "run_idle" / "steps.jsonl").read_bytes() == DATA[: ENDS[1]]
    assert (root / "run_idle" / "logs.jsonl").read_bytes() == DATA[: ENDS[0]]
    assert (root / "run_idle" / "artifacts.jsonl").read_bytes() == refs


def test_torn_artifact_reference_is_hidden_and_the_artifact_stays_readable(
    root: Path, figures: Figures
) -> None:
    with runstore.open(str(root), heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_refs")
        run.put_artifact("a/one.txt", b"one")
        run.put_artifact("a/two.txt", b"two")
        run.finish()
        refs = root / "run_refs" / "artifacts.jsonl"
        whole = refs.read_bytes()
        first_end = whole.index(b"\n") + 1
        for offset in range(first_end, len(whole)):
            refs.write_bytes(whole[:offset])
            view = store.get_run("run_refs")
            names = [ref.name for ref in view.artifacts()]
            assert names == (["a/one.txt", "a/two.txt"] if offset == len(whole) else ["a/one.txt"])
            assert view.read_artifact("a/one.txt", verify=True) == b"one"
    figures.add("torn.local.offsets", len(whole) - first_end)


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "garbage byte": lambda line: b"X" + line[1:],
    "cut short, newline kept": lambda line: line[: len(line) // 2] + b"\n",
    "empty line": lambda line: b"\n" + line,
    "zero-filled block": lambda line: b"\0" * (len(line) - 1) + b"\n",
    "two records glued": lambda line: line[:-1] + line,
}


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_a_damaged_middle_line_is_corruption_with_its_line_number(root: Path, how: str) -> None:
    with runstore.open(str(root), heartbeat_interval=0) as store:
        for index in range(len(LINES) - 1):  # every line that other lines follow
            run_id = f"run_{index}"
            store.create_run(run_id=run_id)
            damaged = [*LINES]
            damaged[index] = CORRUPTIONS[how](LINES[index])
            (root / run_id / "steps.jsonl").write_bytes(b"".join(damaged))
            view = store.get_run(run_id)
            with pytest.raises(CorruptError) as info:
                list(view.read("steps"))
            assert info.value.code == "corrupt"
            assert info.value.details["line"] == index + 1, (how, index)
            assert f"line {index + 1} " in info.value.message


def test_a_damaged_artifact_reference_is_corruption_with_its_line_number(root: Path) -> None:
    with runstore.open(str(root), heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_refs")
        for n in range(3):
            run.put_artifact(f"f{n}.txt", b"x")
        run.finish()
        refs = root / "run_refs" / "artifacts.jsonl"
        lines = refs.read_bytes().splitlines(keepends=True)
        lines[1] = orjson.dumps({"name": "f1.txt"}) + b"\n"  # valid JSON, not a reference
        refs.write_bytes(b"".join(lines))
        with pytest.raises(CorruptError) as info:
            store.get_run("run_refs").artifacts()
        assert info.value.details["line"] == 2


@pytest.mark.s3
def test_reader_hides_a_torn_tail_of_an_s3_stream_at_every_offset(
    s3: S3Server, scale: Scale, figures: Figures
) -> None:
    url = s3.url("torn")
    client = s3.client()
    tried = 0
    with runstore.open(url, heartbeat_interval=0) as store:
        store.create_run(run_id="run_torn").finish()
        for offset in offsets(scale, every=13):
            expected, torn = complete_prefix(offset)
            client.put_object(Bucket=s3.bucket, Key="torn/run_torn/steps.jsonl", Body=DATA[:offset])
            view = store.get_run("run_torn")
            assert list(view.read("steps")) == expected, offset
            assert view.torn_tails["steps"] == torn, offset
            tried += 1
    figures.add("torn.s3.offsets", tried)
