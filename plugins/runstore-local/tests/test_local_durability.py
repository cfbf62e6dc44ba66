"""Records are on disk when append returns; crashes lose nothing acknowledged."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import runstore
from runstore.model.errors import ConflictError, UnsupportedError
from runstore_local import LocalBackend


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)  # drains and closes the pipes
    assert proc.returncode == -signal.SIGKILL


READER = """
    import sys, runstore
    with runstore.open(sys.argv[1]) as store:
        view = store.get_run(sys.argv[2])
        print(view.state.status, sum(1 for _ in view.read("steps")))
"""


def test_records_are_visible_to_another_process_before_the_run_ends(
    store: runstore.Store, root: Path
) -> None:
    run = store.create_run(run_id="run_live")
    for n in range(25):
        run.append("steps", {"n": n})
    out, err = _python(READER, str(root), "run_live").communicate(timeout=60)
    assert out.split() == ["running", "25"], err
    run.finish()


WRITER = """
    import sys, runstore
    store = runstore.open(sys.argv[1])
    run = store.create_run(run_id="run_crash")
    n = 0
    while True:
        run.append("steps", {"n": n, "pad": "x" * (n % 500)})
        print(n, flush=True)
        n += 1
"""


def test_sigkill_mid_run_loses_no_acknowledged_record(root: Path) -> None:
    writer = _python(WRITER, str(root))
    assert writer.stdout is not None
    acknowledged = -1
    for line in writer.stdout:
        acknowledged = int(line)
        if acknowledged >= 3000:
            break
    _kill(writer)
    with runstore.open(str(root)) as store:
        view = store.get_run("run_crash")
        numbers = [r["n"] for r in view.read("steps")]
        assert view.state.status == "running"
        assert [r.run_id for r in store.list_runs()] == ["run_crash"]
    assert numbers[: acknowledged + 1] == list(range(acknowledged + 1))
    assert numbers == list(range(len(numbers)))  # in order, exactly once


def test_torn_tail_is_hidden_from_readers_and_repaired_by_the_next_writer(
    store: runstore.Store, root: Path
) -> None:
    run = store.create_run(run_id="run_torn")
    run.append("steps", {"n": 1})
    run.append("steps", {"n": 2})
    store.close()
    steps = root / "run_torn" / "steps.jsonl"
    with steps.open("ab") as handle:  # what a crash mid-write leaves behind
        handle.write(b'{"n": 3, "cut sh')
    with runstore.open(str(root)) as again:
        view = again.get_run("run_torn")
        assert [r["n"] for r in view.read("steps")] == [1, 2]
        assert view.torn_tails["steps"] == len(b'{"n": 3, "cut sh')
        resumed = again.resume_run("run_torn")
        resumed.append("steps", {"n": 3})
        summary = resumed.finish()
        assert [r["n"] for r in again.get_run("run_torn").read("steps")] == [1, 2, 3]
    assert summary.stream_counts["steps"] == 3
    assert steps.read_bytes().count(b"\n") == 3


def test_torn_tail_without_any_newline_is_truncated_whole(root: Path) -> None:
    backend = LocalBackend(root)
    run_dir = root / "run_x"
    run_dir.mkdir()
    (run_dir / "steps.jsonl").write_bytes(b'{"partial": ')

    async def reopen() -> None:
        writer = await backend.open_writer("run_x", "steps")
        writer.write(b'{"n": 1}\n')
        await writer.close()
        await backend.aclose()

    asyncio.run(reopen())
    assert (run_dir / "steps.jsonl").read_bytes() == b'{"n": 1}\n'


def test_second_writer_on_one_stream_is_refused(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_two")
    run.append("steps", {"n": 1})

    async def second() -> None:
        await store.aio.log_backend.open_writer("run_two", "steps")

    with pytest.raises(ConflictError):
        store.portal.call(second())


def test_fsync_durability_group_commits_concurrent_producers(root: Path) -> None:
    async def main() -> list[int]:
        store = runstore.aio.open(str(root), durability="fsync")
        run = await store.create_run(run_id="run_fsync")

        async def produce(p: int) -> None:
            for i in range(50):
                await run.append("steps", {"p": p, "i": i})

        await asyncio.gather(*(produce(p) for p in range(16)))
        await run.finish()
        view = await store.get_run("run_fsync")
        records = [r async for r in view.read("steps")]
        await store.aclose()
        return [r["i"] for r in records if r["p"] == 3]

    assert asyncio.run(main()) == list(range(50))


def test_fsync_durability_in_the_sync_api(root: Path) -> None:
    with runstore.open(str(root), durability="fsync") as store, store.create_run(run_id="r") as run:
        for i in range(20):
            run.append("steps", {"i": i})
    with runstore.open(str(root)) as store:
        assert len(list(store.get_run("r").read("steps"))) == 20


def test_unsupported_durability_is_refused(root: Path) -> None:
    with runstore.open(str(root), durability="record") as store:
        run = store.create_run(run_id="r")
        with pytest.raises(UnsupportedError) as info:
            run.append("steps", {"n": 1})
        assert info.value.code == "unsupported"


CREATOR = """
    import sys, runstore
    with runstore.open(sys.argv[1]) as store:
        for _ in range(int(sys.argv[2])):
            print(store.create_run(sut_name="race").run_id, flush=True)
"""


def test_concurrent_run_creation_from_processes_loses_nothing(root: Path) -> None:
    runstore.open(str(root)).close()  # create the store before the race
    procs = [_python(CREATOR, str(root), "10") for _ in range(6)]
    claimed: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        claimed += out.split()
    assert len(claimed) == 60
    assert len(set(claimed)) == 60
    with runstore.open(str(root)) as store:
        assert sorted(r.run_id for r in store.list_runs()) == sorted(claimed)


def test_sigkill_leaves_every_json_file_parseable(root: Path) -> None:
    writer = _python(WRITER, str(root))
    assert writer.stdout is not None
    for line in writer.stdout:
        if int(line) >= 200:
            break
    _kill(writer)
    run_dir = root / "run_crash"
    runstore.RunManifest.model_validate_json((run_dir / "manifest.json").read_bytes())
    runstore.RunState.model_validate_json((run_dir / "state.json").read_bytes())
    assert not (run_dir / "summary.json").exists()
