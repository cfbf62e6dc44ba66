"""An S3 endpoint that ignores conditional writes (s3rver, npm) is detected and served safely.

s3rver accepts a second ``PUT`` with ``If-None-Match: *`` and a ``PUT`` with a
stale ``If-Match``. Before the probe, runstore trusted both on every S3
endpoint, and on s3rver it reused run ids, let a second create reset a
finished run, overwrote artifacts and state, and lost records of racing
writers, all silently. Each test below is one of those attacks.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

import runstore
from runstore.model.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidInputError,
    UnsupportedError,
)
from runstore.model.run import RunRecord
from runstore_fsspec._conditional import VERDICT_KEY, Verdict, forget_verdicts
from runstore_fsspec._lease import CLAIMS_DIR
from runstore_fsspec._s3 import PROBE_DIR
from runstore_fsspec.backend import FsspecBackend
from runstore_fsspec.testing import S3rver, S3Server


def backend_of(store: runstore.Store) -> FsspecBackend:
    backend = store.aio.state_backend
    assert isinstance(backend, FsspecBackend)
    return backend


def verdict_of(store: runstore.Store) -> Verdict:
    verdict = store.portal.call(backend_of(store).check_conditional_writes())
    assert verdict is not None
    return verdict


def start_python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def results(processes: list[subprocess.Popen[str]]) -> list[dict[str, object]]:
    """Each process's one JSON line (they report refusals themselves, so all exit 0)."""
    try:
        outputs = [process.communicate(timeout=240) for process in processes]
    finally:
        for process in processes:
            process.kill()
            process.wait()
    found: list[dict[str, object]] = []
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        found.append(json.loads(out))
    return found


# s3rver's own races, not runstore's: it answers 500 InternalError to a DeleteObjects
# while another client writes or deletes in the same folder (two clients without
# retries: 234 of 300 calls), which lease claims do; and its PUT is not atomic for a
# concurrent reader (a resume may read another writer's state.json half written).
# More retries absorb most 500s; what is left must surface typed, acknowledging nothing.
S3RVER_RETRIES = 10
S3RVER_FAULTS = ("backend_unavailable", "corrupt")


@pytest.fixture(autouse=True)
def fresh_verdicts() -> Iterator[None]:
    """Every test starts with a process that has probed nothing yet."""
    forget_verdicts()
    yield
    forget_verdicts()


@pytest.fixture
def store(s3rver: S3rver) -> Iterator[runstore.Store]:
    with runstore.open(s3rver.url("runs"), heartbeat_interval=0) as store:
        yield store


# -- the probe -------------------------------------------------------------------------


def test_probe_finds_that_s3rver_ignores_conditional_writes(
    s3rver: S3rver, store: runstore.Store
) -> None:
    verdict = verdict_of(store)
    assert not verdict.honoured
    assert verdict.source == "probe"
    assert verdict.endpoint == s3rver.endpoint
    assert "If-None-Match: * was ignored" in str(verdict.reason)
    capabilities = backend_of(store).capabilities
    assert not capabilities.conditional_create
    assert not capabilities.compare_and_swap
    # the verdict is recorded for other processes; the sentinel is gone
    assert s3rver.keys("runs/") == [f"runs/{VERDICT_KEY}"]
    assert not s3rver.keys(f"runs/{PROBE_DIR}")


def test_probe_finds_that_moto_honours_conditional_writes(s3: S3Server) -> None:
    with runstore.open(s3.url("runs"), heartbeat_interval=0) as store:
        verdict = verdict_of(store)
        assert verdict.honoured, verdict.reason
        assert backend_of(store).capabilities.multi_writer
        store.create_run(run_id="run_moto")
        assert not s3.keys(f"runs/{CLAIMS_DIR}")  # multi-writer: no lease taken


def test_the_first_write_probes_before_it_relies_on_conditional_writes(
    s3rver: S3rver, store: runstore.Store
) -> None:
    assert not s3rver.keys()  # opening writes nothing
    store.create_run(run_id="run_first")
    assert f"runs/{VERDICT_KEY}" in s3rver.keys("runs/")
    assert not backend_of(store).capabilities.conditional_create


def test_another_process_uses_the_recorded_verdict_instead_of_probing(
    s3rver: S3rver, store: runstore.Store
) -> None:
    verdict_of(store)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, runstore
                with runstore.open(sys.argv[1]) as store:
                    backend = store.aio.state_backend
                    verdict = store.portal.call(backend.check_conditional_writes())
                    print(verdict.source, verdict.honoured)
                """
            ),
            s3rver.url("runs"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.split() == ["recorded", "False"]


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param({"checked_at": datetime.now(UTC) - timedelta(days=2)}, id="too-old"),
        pytest.param({"checked_at": datetime.now(UTC) + timedelta(hours=1)}, id="in-the-future"),
        pytest.param({"endpoint": "https://s3.amazonaws.com"}, id="another-endpoint"),
    ],
)
def test_a_recorded_verdict_that_cannot_be_trusted_is_probed_again(
    s3rver: S3rver, store: runstore.Store, forged: dict[str, object]
) -> None:
    base = {
        "honoured": True,
        "endpoint": s3rver.endpoint,
        "bucket": s3rver.bucket,
        "checked_at": datetime.now(UTC),
    }
    lie = Verdict(**{**base, **forged})  # type: ignore[arg-type]
    s3rver.put(f"runs/{VERDICT_KEY}", lie.to_json())
    verdict = verdict_of(store)
    assert verdict.source == "probe"
    assert not verdict.honoured


def test_probe_interval_zero_probes_every_store(s3rver: S3rver) -> None:
    with runstore.open(s3rver.url("runs", probe_interval=0)) as first:
        assert verdict_of(first).source == "probe"
    with runstore.open(s3rver.url("runs", probe_interval=0)) as second:
        assert verdict_of(second).source == "probe"


def test_the_store_says_once_that_it_runs_single_writer(
    s3rver: S3rver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="runstore_fsspec")
    for n in range(2):
        with runstore.open(s3rver.url("runs"), heartbeat_interval=0) as store:
            store.create_run(run_id=f"run_{n}")
    said = [r.getMessage() for r in caplog.records if "does not honour" in r.getMessage()]
    assert len(said) == 1
    assert "one process at a time" in said[0]
    assert s3rver.endpoint in said[0]


def test_require_multi_writer_refuses_to_write_and_writes_nothing(s3rver: S3rver) -> None:
    with runstore.open(s3rver.url("runs", require="multi_writer")) as store:
        with pytest.raises(UnsupportedError, match="require=multi_writer") as caught:
            store.create_run(run_id="run_refused")
        assert caught.value.details["endpoint"] == s3rver.endpoint
        with pytest.raises(UnsupportedError):  # and stays refused
            store.create_run(run_id="run_refused")
    assert s3rver.keys() == [f"runs/{VERDICT_KEY}"]  # no run, no lease


def test_require_multi_writer_opens_on_an_endpoint_that_honours_them(s3: S3Server) -> None:
    with runstore.open(s3.url("runs", require="multi_writer"), heartbeat_interval=0) as store:
        store.create_run(run_id="run_ok")
        assert [r.run_id for r in store.list_runs()] == ["run_ok"]


@pytest.mark.parametrize(
    ("option", "value"),
    [("require", "everything"), ("probe_interval", "-1"), ("probe_interval", "soon")],
)
def test_bad_trust_options_are_invalid_input(s3rver: S3rver, option: str, value: str) -> None:
    with pytest.raises(InvalidInputError, match=option):
        runstore.open(s3rver.url("runs", **{option: value}))
    assert not s3rver.keys()


# -- the attacks, on s3rver --------------------------------------------------------------


def test_eight_processes_generating_run_ids_never_share_one(s3rver: S3rver) -> None:
    """Before: 20 acknowledged creations and only 16 distinct ids."""
    start_at = time.time() + 3  # every process imports first, then they start together
    code = """
        import json, sys, time, runstore
        url, start_at = sys.argv[1], float(sys.argv[2])
        ids = []
        try:
            with runstore.open(url, heartbeat_interval=0) as store:
                time.sleep(max(0.0, start_at - time.time()))
                for _ in range(3):
                    with store.create_run(sut_name="load") as run:
                        run.append("steps", {"writer": sys.argv[3]})
                    ids.append(run.run_id)
            print(json.dumps({"ids": ids}))
        except runstore.RunstoreError as exc:
            print(json.dumps({"ids": ids, "code": exc.code, "message": exc.message}))
    """
    url = s3rver.url("runs", retries=S3RVER_RETRIES)
    outcomes = results([start_python(code, url, str(start_at), str(n)) for n in range(8)])
    acknowledged = [run_id for o in outcomes for run_id in o["ids"]]  # type: ignore[attr-defined]
    assert len(acknowledged) == len(set(acknowledged))  # no id acknowledged twice
    for outcome in outcomes:
        # a process writes all its runs, or is refused (typed) before its first
        assert "code" in outcome or len(outcome["ids"]) == 3, outcome  # type: ignore[arg-type]
        assert "code" not in outcome or not outcome["ids"], outcome
        assert outcome.get("code") in (None, "unsupported", *S3RVER_FAULTS), outcome
        if outcome.get("code") == "unsupported":
            assert "another process" in str(outcome["message"])
    assert acknowledged  # someone wrote
    with runstore.open(url) as store:
        listed = store.list_runs()
        assert sorted(r.run_id for r in listed) == sorted(acknowledged)
        for run_id in acknowledged:
            assert len(list(store.get_run(run_id).read("steps"))) == 1
    if not any(o.get("code") in S3RVER_FAULTS for o in outcomes):
        assert not s3rver.keys(f"runs/{CLAIMS_DIR}")  # every lease released


def test_a_second_create_never_resets_a_finished_run(s3rver: S3rver, store: runstore.Store) -> None:
    with store.create_run(run_id="run_done") as run:
        run.append("steps", {"n": 1})
    with (
        runstore.open(s3rver.url("runs"), heartbeat_interval=0) as other,
        pytest.raises(AlreadyExistsError, match="run_done"),
    ):
        other.create_run(run_id="run_done")
    view = store.get_run("run_done")
    assert view.state.status == "succeeded"
    assert list(view.read("steps")) == [{"n": 1}]


def test_a_second_create_from_another_process_never_resets_a_finished_run(
    s3rver: S3rver,
) -> None:
    with (
        runstore.open(
            s3rver.url("runs"), heartbeat_interval=0
        ) as store,  # closing releases the lease
        store.create_run(run_id="run_done") as run,
    ):
        run.append("steps", {"n": 1})
    code = """
        import json, sys, runstore
        with runstore.open(sys.argv[1], heartbeat_interval=0) as store:
            try:
                store.create_run(run_id="run_done")
                print(json.dumps({"code": None}))
            except runstore.RunstoreError as exc:
                print(json.dumps({"code": exc.code}))
    """
    (outcome,) = results([start_python(code, s3rver.url("runs"))])
    assert outcome == {"code": "already_exists"}
    with runstore.open(s3rver.url("runs")) as reader:
        assert reader.get_run("run_done").state.status == "succeeded"


def test_an_artifact_is_never_overwritten_with_other_bytes(
    s3rver: S3rver, store: runstore.Store
) -> None:
    run = store.create_run(run_id="run_art")
    run.put_artifact("report.json", b'{"v": 1}')
    with runstore.open(s3rver.url("runs"), heartbeat_interval=0) as other:
        resumed = other.resume_run("run_art", force=True)
        with pytest.raises(ConflictError, match="different bytes"):
            resumed.put_artifact("report.json", b'{"v": 2}')
    assert store.get_run("run_art").read_artifact("report.json") == b'{"v": 1}'


def test_a_large_artifact_is_never_overwritten_either(s3rver: S3rver) -> None:
    with runstore.open(s3rver.url("runs", part_size=5 << 20), heartbeat_interval=0) as store:
        backend = backend_of(store)
        store.create_run(run_id="run_big")
        first = b"a" * (6 << 20)  # more than one part: a multipart upload

        async def chunks(data: bytes) -> AsyncIterator[bytes]:
            yield data

        store.portal.call(backend.put("run_big", "big.bin", chunks(first)))

        async def second() -> None:
            await backend.put("run_big", "big.bin", chunks(b"b" * (6 << 20)))

        with pytest.raises(ConflictError, match="different bytes"):
            store.portal.call(second())
        assert store.get_run("run_big").read_artifact("big.bin") == first


def test_state_is_never_overwritten_by_a_writer_that_read_an_older_revision(
    s3rver: S3rver, store: runstore.Store
) -> None:
    store.create_run(run_id="run_state")
    with runstore.open(s3rver.url("runs"), heartbeat_interval=0) as other:
        mine, theirs = backend_of(store), backend_of(other)

        async def race() -> None:
            seen = await mine.read_state("run_state")
            await theirs.read_state("run_state")
            manifest = await mine.read_manifest("run_state")
            first = seen.model_copy(update={"revision": seen.revision + 1, "data": {"by": "me"}})
            await mine.write_state(
                first,
                expected_revision=seen.revision,
                record=RunRecord.build(manifest, first),
            )
            second = seen.model_copy(update={"revision": seen.revision + 1, "data": {"by": "them"}})
            with pytest.raises(ConflictError, match="another writer updated it"):
                await theirs.write_state(
                    second,
                    expected_revision=seen.revision,
                    record=RunRecord.build(manifest, second),
                )

        store.portal.call(race())
    assert store.get_run("run_state").state.data == {"by": "me"}


def test_two_writers_of_one_process_on_one_stream_conflict(
    s3rver: S3rver, store: runstore.Store
) -> None:
    store.create_run(run_id="run_two").start()
    backend = backend_of(store)

    async def race() -> None:
        first = await backend.open_writer("run_two", "steps")
        second = await backend.open_writer("run_two", "steps")
        first.write(b'{"by":"first"}\n')
        await first.commit()
        second.write(b'{"by":"second"}\n')
        with pytest.raises(ConflictError, match="another writer"):
            await second.commit()

    store.portal.call(race())
    assert list(store.get_run("run_two").read("steps")) == [{"by": "first"}]


def test_two_racing_writer_processes_lose_no_acknowledged_record(s3rver: S3rver) -> None:
    """Before: 260 of 320 acknowledged records lost."""
    with runstore.open(s3rver.url("runs"), heartbeat_interval=0) as store:
        store.create_run(run_id="run_race").start()
    start_at = time.time() + 3
    code = """
        import json, sys, time, runstore
        url, start_at, me = sys.argv[1], float(sys.argv[2]), sys.argv[3]
        acknowledged = []
        try:
            with runstore.open(url, durability="record", heartbeat_interval=0) as store:
                run = store.resume_run("run_race", force=True)
                time.sleep(max(0.0, start_at - time.time()))
                for n in range(40):
                    run.append("steps", {"writer": me, "n": n})
                    acknowledged.append(n)
            print(json.dumps({"acknowledged": acknowledged}))
        except runstore.RunstoreError as exc:
            failed = {"code": exc.code, "message": exc.message}
            print(json.dumps({"acknowledged": acknowledged, **failed}))
    """
    url = s3rver.url("runs", retries=S3RVER_RETRIES)
    outcomes = results([start_python(code, url, str(start_at), me) for me in ("a", "b")])
    with runstore.open(url) as reader:
        stored = list(reader.get_run("run_race").read("steps"))
    for me, outcome in zip(("a", "b"), outcomes, strict=True):
        mine = [r["n"] for r in stored if r["writer"] == me]
        assert mine == outcome["acknowledged"]  # every acknowledged record, once, in order
        # refused by the lease, or typed errors of s3rver's own races (S3RVER_FAULTS)
        assert outcome.get("code") in (None, "unsupported", *S3RVER_FAULTS), outcome
    assert any("code" not in o for o in outcomes)  # someone wrote all its records
    assert sum(len(o["acknowledged"]) for o in outcomes) >= 40  # type: ignore[misc, arg-type]


def test_the_lease_of_a_writer_that_died_on_this_host_is_taken_over(s3rver: S3rver) -> None:
    url = s3rver.url("runs")
    died = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import os, sys, runstore
                store = runstore.open(sys.argv[1], heartbeat_interval=0)
                store.create_run(run_id="run_dead")
                os._exit(9)  # no close: the claim stays behind
                """
            ),
            url,
        ],
        timeout=120,
        check=False,
    )
    assert died.returncode == 9
    assert len(s3rver.keys(f"runs/{CLAIMS_DIR}/")) == 1
    with runstore.open(url, heartbeat_interval=0) as store:
        store.create_run(run_id="run_after")
        assert sorted(r.run_id for r in store.list_runs()) == ["run_after", "run_dead"]
    assert not s3rver.keys(f"runs/{CLAIMS_DIR}/")


def test_a_writer_on_another_host_is_named_and_nothing_is_written(s3rver: S3rver) -> None:
    claim = f"runs/{CLAIMS_DIR}/elsewhere.json"
    s3rver.put(claim, json.dumps({"host": "build-7", "pid": 1, "held": True}).encode())
    with runstore.open(s3rver.url("runs"), heartbeat_interval=0) as store:
        with pytest.raises(UnsupportedError, match="another process") as caught:
            store.create_run(run_id="run_blocked")
        assert "build-7" in caught.value.message
        assert claim in caught.value.message  # what to delete if that writer died
    assert s3rver.keys("runs/") == sorted([claim, f"runs/{VERDICT_KEY}"])


# -- control: the same attacks with the probe fooled ------------------------------------


def forge_honoured_verdict(s3rver: S3rver, prefix: str) -> None:
    """Record under ``prefix`` that s3rver honours conditional writes (it does not)."""
    lie = Verdict(
        honoured=True, endpoint=s3rver.endpoint, bucket=s3rver.bucket, checked_at=datetime.now(UTC)
    )
    s3rver.put(f"{prefix}/{VERDICT_KEY}", lie.to_json())


def test_control_with_a_forged_verdict_a_second_create_resets_the_run(s3rver: S3rver) -> None:
    """The checks above can fail: trusting s3rver brings the attack back, silently."""
    forge_honoured_verdict(s3rver, "runs")
    with runstore.open(s3rver.url("runs"), heartbeat_interval=0) as store:
        with store.create_run(run_id="run_done") as run:
            run.append("steps", {"n": 1})
        store.create_run(run_id="run_done")  # acknowledged: nothing noticed
        assert store.get_run("run_done").state.status != "succeeded"
        run = store.resume_run("run_done", force=True)
        run.put_artifact("report.json", b"1")
        run.put_artifact("report.json", b"2")  # acknowledged: nothing noticed
        assert store.get_run("run_done").read_artifact("report.json") == b"2"
