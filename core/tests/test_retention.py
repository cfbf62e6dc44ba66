"""Retention policies select finished runs; live and pinned runs are never deleted."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import runstore
from runstore.model.errors import InvalidInputError, NotFoundError
from runstore.model.run import utcnow
from runstore.ops.retention import RetentionPolicy, collect_garbage, parse_age

_names = itertools.count()
Setup = list[tuple[str, dict[str, Any]]]


def _store_with_runs() -> runstore.aio.AsyncStore:
    return runstore.aio.open(f"memory://gc-{next(_names)}", heartbeat_interval=0)


async def _make(
    store: runstore.aio.AsyncStore,
    run_id: str,
    *,
    tags: list[str] | None = None,
    status: str = "succeeded",
    size: int = 10,
) -> None:
    run = await store.create_run(run_id=run_id, tags=tags)
    await run.put_artifact("a.bin", b"x" * size)
    if status == "running":
        await run.start()
        return
    await run.finish(status)  # type: ignore[arg-type]


def _gc(policy: RetentionPolicy, setup: Setup, **kwargs: object) -> list[str]:
    async def main() -> list[str]:
        store = _store_with_runs()
        for run_id, options in setup:
            await _make(store, run_id, **options)
        gone = await collect_garbage(store, policy, **kwargs)  # type: ignore[arg-type]
        left = {r.run_id for r in await store.list_runs()}
        assert not {c.run_id for c in gone} & left or kwargs.get("dry_run")
        return sorted(c.run_id for c in gone)

    return asyncio.run(main())


def test_keep_last_deletes_older_finished_runs() -> None:
    runs: Setup = [(f"run_{n}", {}) for n in range(5)]
    assert _gc(RetentionPolicy(keep_last=2), runs) == ["run_0", "run_1", "run_2"]


def test_live_and_pinned_runs_are_never_deleted() -> None:
    runs: Setup = [
        ("run_0", {"status": "running"}),
        ("run_1", {"tags": ["pinned"]}),
        ("run_2", {}),
        ("run_3", {}),
    ]
    assert _gc(RetentionPolicy(keep_last=0), runs) == ["run_2", "run_3"]


def test_status_filter_limits_what_is_selected() -> None:
    runs: Setup = [("run_0", {"status": "failed"}), ("run_1", {}), ("run_2", {"status": "crashed"})]
    assert _gc(RetentionPolicy(keep_last=0, statuses=["failed", "crashed"]), runs) == [
        "run_0",
        "run_2",
    ]


def test_older_than_uses_the_finish_time() -> None:
    runs: Setup = [("run_0", {}), ("run_1", {})]
    future = utcnow() + timedelta(days=31)
    assert _gc(RetentionPolicy(older_than=timedelta(days=30)), runs, now=future) == [
        "run_0",
        "run_1",
    ]
    assert _gc(RetentionPolicy(older_than=timedelta(days=30)), runs) == []


def test_max_total_bytes_deletes_oldest_first() -> None:
    # each run holds 10 kB of artifact plus its artifacts.jsonl line
    runs: Setup = [(f"run_{n}", {"size": 10_000}) for n in range(4)]
    assert _gc(RetentionPolicy(max_total_bytes=25_000), runs) == ["run_0", "run_1"]


def test_dry_run_deletes_nothing() -> None:
    runs: Setup = [(f"run_{n}", {}) for n in range(3)]
    assert _gc(RetentionPolicy(keep_last=1), runs, dry_run=True) == ["run_0", "run_1"]


def test_policy_that_selects_nothing_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        _gc(RetentionPolicy(statuses=["failed"]), [])


def test_policy_reads_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "retention.toml"
    path.write_text('older_than = "30d"\nkeep_last = 5\nkeep_tags = ["baseline"]\n')
    policy = RetentionPolicy.from_file(path)
    assert (policy.older_than, policy.keep_last, policy.keep_tags) == (
        timedelta(days=30),
        5,
        ["baseline"],
    )


def test_bad_policy_file_is_invalid_input(tmp_path: Path) -> None:
    path = tmp_path / "retention.json"
    path.write_text('{"keep_last": -1}')
    with pytest.raises(InvalidInputError):
        RetentionPolicy.from_file(path)
    with pytest.raises(NotFoundError):
        RetentionPolicy.from_file(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("2w", timedelta(weeks=2))],
)
def test_parse_age(text: str, expected: timedelta) -> None:
    assert parse_age(text) == expected


def test_parse_age_refuses_garbage() -> None:
    with pytest.raises(InvalidInputError):
        parse_age("thirty days")
