"""recover, verify and diff on a real local store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import runstore
from runstore.model.run import utcnow
from runstore.ops.maintenance import diff_runs, recover_runs, verify_run


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def store(root: Path) -> Iterator[runstore.Store]:
    with runstore.open(str(root)) as store:
        yield store


def _abandon(store: runstore.Store, run_id: str, records: int = 3) -> None:
    """A run whose writer went away without finishing."""
    run = store.create_run(run_id=run_id)
    for n in range(records):
        run.append("instances", {"instance_id": f"i{n}", "status": "passed" if n % 2 else "failed"})
    run.put_artifact("i0/out.json", b"{}")
    store.portal.call(run.aio.core.release())  # as if its process died: streams unlocked


def _recover(store: runstore.Store, **kwargs: object) -> list[object]:
    return list(store.portal.call(recover_runs(store.aio, **kwargs)))  # type: ignore[arg-type]


def test_recover_marks_dead_runs_crashed_and_rebuilds_their_summary(store: runstore.Store) -> None:
    _abandon(store, "run_dead")
    later = utcnow() + timedelta(hours=1)
    (result,) = _recover(store, now=later)
    assert result.action == "marked_crashed"  # type: ignore[attr-defined]
    view = store.get_run("run_dead")
    assert view.state.status == "crashed"
    assert view.summary is not None
    assert (view.summary.pass_count, view.summary.fail_count) == (1, 2)
    assert view.summary.artifact_count == 1


def test_recover_leaves_runs_with_a_fresh_heartbeat_alone(store: runstore.Store) -> None:
    _abandon(store, "run_alive")
    (result,) = _recover(store)
    assert result.action == "alive"  # type: ignore[attr-defined]
    assert store.get_run("run_alive").state.status == "running"


def test_recover_is_idempotent(store: runstore.Store) -> None:
    _abandon(store, "run_dead")
    later = utcnow() + timedelta(hours=1)
    _recover(store, now=later)
    before = store.get_run("run_dead").state
    assert _recover(store, now=later) == []
    assert store.get_run("run_dead").state == before


def test_recover_repairs_torn_tails(store: runstore.Store, root: Path) -> None:
    _abandon(store, "run_torn")
    store.close()
    with (root / "run_torn" / "instances.jsonl").open("ab") as handle:
        handle.write(b'{"instance_id": "i9", "sta')
    with runstore.open(str(root)) as again:
        (result,) = _recover(again, now=utcnow() + timedelta(hours=1))
        assert result.torn_bytes == {"instances": 26}  # type: ignore[attr-defined]
        assert again.portal.call(verify_run(again.aio, "run_torn")) == []
    assert (root / "run_torn" / "instances.jsonl").read_bytes().endswith(b"}\n")


def test_dry_run_recover_changes_nothing(store: runstore.Store) -> None:
    _abandon(store, "run_dead")
    (result,) = _recover(store, now=utcnow() + timedelta(hours=1), dry_run=True)
    assert result.action == "marked_crashed"  # type: ignore[attr-defined]
    assert store.get_run("run_dead").state.status == "running"


def test_verify_finds_nothing_wrong_in_a_clean_run(store: runstore.Store) -> None:
    with store.create_run(run_id="run_ok") as run:
        run.append("instances", {"instance_id": "i1", "status": "passed"})
        run.put_artifact("i1/a.json", b"{}")
    assert store.portal.call(verify_run(store.aio, "run_ok")) == []


def test_verify_reports_a_tampered_artifact(store: runstore.Store, root: Path) -> None:
    with store.create_run(run_id="run_t") as run:
        run.put_artifact("i1/a.json", b"{}")
    (root / "run_t" / "artifacts" / "i1" / "a.json").write_bytes(b"[]")
    (problem,) = store.portal.call(verify_run(store.aio, "run_t"))
    assert problem.where == "artifacts/i1/a.json"
    assert "sha256" in problem.message


def test_verify_reports_a_corrupt_line_with_its_number(store: runstore.Store, root: Path) -> None:
    with store.create_run(run_id="run_c") as run:
        for n in range(3):
            run.append("steps", {"n": n})
    path = root / "run_c" / "steps.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"{not json}\n" + lines[2])
    problems = store.portal.call(verify_run(store.aio, "run_c"))
    assert any("line 2" in p.message for p in problems)


def test_verify_reports_summary_out_of_step_with_streams(store: runstore.Store, root: Path) -> None:
    with store.create_run(run_id="run_s") as run:
        run.append("steps", {"n": 1})
    with (root / "run_s" / "steps.jsonl").open("ab") as handle:
        handle.write(b'{"n": 2}\n')
    problems = store.portal.call(verify_run(store.aio, "run_s"))
    assert [p.where for p in problems] == ["summary.json"]


def _seeded(store: runstore.Store, run_id: str, seed: int) -> runstore.RunView:
    with store.create_run(run_id=run_id, seed=seed, config={"n": 2}) as run:
        for n in range(3):
            run.append("steps", {"n": n, "value": seed * n})
            run.log("info", "step", n=n)
        run.put_artifact("out.json", str(seed).encode())
    return store.get_run(run_id)


def test_diff_of_two_same_seed_runs_is_empty(store: runstore.Store) -> None:
    a, b = _seeded(store, "run_a", 3), _seeded(store, "run_b", 3)
    assert store.portal.call(diff_runs(a.aio, b.aio)) == []


def test_diff_names_differing_records_and_artifacts(store: runstore.Store) -> None:
    a, b = _seeded(store, "run_a", 3), _seeded(store, "run_b", 4)
    wheres = [d.where for d in store.portal.call(diff_runs(a.aio, b.aio))]
    assert "manifest.json" in wheres
    assert "steps.jsonl line 2" in wheres
    assert "artifacts/out.json" in wheres


def test_diff_across_two_stores(store: runstore.Store) -> None:
    other = runstore.open("memory://diff-other")
    a = _seeded(store, "run_a", 5)
    b = _seeded(other, "run_a", 5)

    async def compare() -> int:
        left = await store.aio.get_run("run_a")
        right = await other.aio.get_run("run_a")
        return len(await diff_runs(left, right))

    assert asyncio.run(compare()) == 0
    assert a.run_id == b.run_id
    other.close()
