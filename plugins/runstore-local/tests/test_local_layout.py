"""The local backend writes exactly the Windtunnel tree, deterministically."""

from __future__ import annotations

import random
from pathlib import Path

import orjson

import runstore


def _tree(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and ".runstore" not in p.parts
    )


def _seeded_run(store: runstore.Store, run_id: str, seed: int) -> None:
    rng = random.Random(seed)
    with store.create_run(
        run_id=run_id, sut_name="ecommerce", scenario_ids=["checkout"], seed=seed
    ) as run:
        for i in range(1, 4):
            inst = f"inst_{i:03d}"
            for s in range(1, 3):
                body = orjson.dumps({"step": s, "amount": rng.randint(1, 100)})
                run.put_artifact(f"{inst}/step_{s:03d}_request.json", body)
                run.append(
                    "steps",
                    {"instance_id": inst, "step_name": f"s{s}", "observation": {"ok": True}},
                )
            passed = rng.random() > 0.3
            run.append("assertions", {"instance_id": inst, "name": "total", "passed": passed})
            run.append(
                "instances", {"instance_id": inst, "status": "passed" if passed else "failed"}
            )
            run.log("info", "instance done", instance_id=inst)


def test_run_writes_exactly_the_windtunnel_tree(store: runstore.Store, root: Path) -> None:
    _seeded_run(store, "run_20240115_001", seed=42)
    assert _tree(root / "run_20240115_001") == [
        "artifacts.jsonl",
        *[f"artifacts/inst_{i:03d}/step_{s:03d}_request.json" for i in (1, 2, 3) for s in (1, 2)],
        "assertions.jsonl",
        "instances.jsonl",
        "logs.jsonl",
        "manifest.json",
        "state.json",
        "steps.jsonl",
        "summary.json",
    ]
    manifest = orjson.loads((root / "run_20240115_001" / "manifest.json").read_bytes())
    assert (manifest["run_id"], manifest["sut_name"], manifest["seed"]) == (
        "run_20240115_001",
        "ecommerce",
        42,
    )
    assert list((root / ".runstore" / "tmp").iterdir()) == []


def _strip_times(value: object) -> object:
    if isinstance(value, dict):
        return {
            k: _strip_times(v)
            for k, v in value.items()
            if not (k in ("ts", "timestamp", "duration_ms") or k.endswith("_at"))
        }
    if isinstance(value, list):
        return [_strip_times(v) for v in value]
    return value


def _contents(run_dir: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in _tree(run_dir):
        data = (run_dir / name).read_bytes()
        if name.endswith(".jsonl"):
            out[name] = [_strip_times(orjson.loads(line)) for line in data.splitlines()]
        elif name.endswith(".json") and "/" not in name:
            out[name] = _strip_times(orjson.loads(data))
        else:
            out[name] = data
    return out


def test_same_seed_gives_identical_trees_modulo_timestamps(
    store: runstore.Store, root: Path
) -> None:
    _seeded_run(store, "run_a", seed=7)
    _seeded_run(store, "run_b", seed=7)
    a, b = _contents(root / "run_a"), _contents(root / "run_b")
    assert a.keys() == b.keys()
    for name in a:
        left, right = a[name], b[name]
        if name in ("manifest.json", "state.json", "summary.json"):
            assert isinstance(left, dict) and isinstance(right, dict)
            left, right = {**left, "run_id": None}, {**right, "run_id": None}
        if name == "artifacts.jsonl":
            assert isinstance(left, list) and isinstance(right, list)
            left = [{**r, "run_id": None} for r in left]
            right = [{**r, "run_id": None} for r in right]
        assert left == right, name


def test_different_seed_changes_the_content(store: runstore.Store, root: Path) -> None:
    _seeded_run(store, "run_a", seed=1)
    _seeded_run(store, "run_b", seed=2)
    assert (
        _contents(root / "run_a")["artifacts/inst_001/step_001_request.json"]
        != _contents(root / "run_b")["artifacts/inst_001/step_001_request.json"]
    )


def test_index_is_rebuilt_from_the_runs_when_deleted(root: Path) -> None:
    with runstore.open(str(root)) as store:
        for n in range(3):
            with store.create_run(run_id=f"run_{n}", sut_name="shop"):
                pass
        before = store.list_runs()
    (root / ".runstore" / "index.sqlite3").unlink()
    with runstore.open(str(root)) as store:
        assert store.list_runs() == before
