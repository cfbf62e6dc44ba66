"""Replay bundles: ``view.instance(id)``, lazy artifact bytes, export to files and load back."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import runstore
import runstore.replay
from runstore.model.errors import AlreadyExistsError, CorruptError, InvalidInputError, NotFoundError
from runstore.spi.backends import BackendSpec, Target
from runstore.spi.memory import MemoryBackend

_names = itertools.count()


def _url() -> str:
    return f"memory://replay-{os.getpid()}-{next(_names)}"


@pytest.fixture
def store() -> Iterator[runstore.Store]:
    with runstore.open(_url(), heartbeat_interval=0) as store:
        yield store


def _record_run(store: runstore.Store, run_id: str = "run_replay") -> None:
    """Two instances with steps, assertions, logs, a user stream and artifacts."""
    run = store.create_run(run_id, sut_name="shop", seed=42, config={"workers": 2}, tags=["ci"])
    with run:
        run.put_artifact("shared/catalog.json", b'{"sku": 1}')
        for inst in ("inst_001", "inst_002"):
            with run.instance(inst):
                for index, step in enumerate(("login", "checkout"), start=1):
                    req = run.put_artifact(
                        f"{inst}/step_{index:03d}_request.json", f"{inst}-{step}".encode()
                    )
                    run.append(
                        "steps",
                        {"step_index": index, "step_name": step, "request_artifact": req.name},
                    )
                    run.append("assertions", {"name": f"{step}_ok", "passed": True})
                run.log("info", f"{inst} done")
                run.append("phase_outputs", {"phase": "qa", "uses": ["shared/catalog.json"]})
                run.append("instances", {"status": "running"})
                run.append("instances", {"status": "passed"})
        run.append("steps", {"step_name": "teardown"})  # belongs to no instance


# -- the bundle ------------------------------------------------------------------------


def test_bundle_holds_what_reexecuting_an_instance_needs(store: runstore.Store) -> None:
    _record_run(store)
    bundle = store.get_run("run_replay").instance("inst_002")
    assert (bundle.run_id, bundle.instance_id) == ("run_replay", "inst_002")
    assert (bundle.seed, bundle.config) == (42, {"workers": 2})
    assert bundle.manifest is not None
    assert (bundle.manifest.sut_name, bundle.manifest.tags) == ("shop", ["ci"])
    assert bundle.instance == {"status": "passed", "instance_id": "inst_002"}  # the last one
    assert [s["step_name"] for s in bundle.steps] == ["login", "checkout"]
    assert [a["name"] for a in bundle.assertions] == ["login_ok", "checkout_ok"]
    assert [line["message"] for line in bundle.logs] == ["inst_002 done"]
    assert bundle.streams == {
        "phase_outputs": [
            {"phase": "qa", "uses": ["shared/catalog.json"], "instance_id": "inst_002"}
        ]
    }
    assert [ref.name for ref in bundle.artifacts] == [
        "shared/catalog.json",  # not under inst_002/, but one of its records names it
        "inst_002/step_001_request.json",
        "inst_002/step_002_request.json",
    ]


def test_artifact_bytes_are_read_when_asked_for(store: runstore.Store) -> None:
    _record_run(store)
    bundle = store.get_run("run_replay").instance("inst_001")
    step = bundle.steps[1]
    assert bundle.read_artifact(step["request_artifact"]) == b"inst_001-checkout"
    assert b"".join(bundle.open_artifact("shared/catalog.json")) == b'{"sku": 1}'


class CountingReads:
    """A memory backend that counts artifact reads: proves the bundle loads bytes lazily."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    @runstore.hookimpl
    def runstore_register_backends(self, register: Callable[[BackendSpec], None]) -> None:
        reads = self.reads

        class Counting(MemoryBackend):
            async def read_chunks(self, run_id: str, name: str) -> AsyncIterator[bytes]:
                reads.append(name)
                async for chunk in super().read_chunks(run_id, name):
                    yield chunk

        def factory(target: Target) -> Counting:
            return Counting(f"counting-{target.path}")

        register(BackendSpec(name="counting", factory=factory, schemes=("counting",)))


def test_building_a_bundle_reads_no_artifact_bytes() -> None:
    counter = CountingReads()
    with runstore.open(f"counting://{next(_names)}", plugins=[counter]) as store:
        _record_run(store)
        bundle = store.get_run("run_replay").instance("inst_001")
        assert counter.reads == []
        bundle.read_artifact("inst_001/step_002_request.json")
        assert counter.reads == ["inst_001/step_002_request.json"]


def test_an_artifact_outside_the_bundle_is_not_found(store: runstore.Store) -> None:
    _record_run(store)
    bundle = store.get_run("run_replay").instance("inst_001")
    with pytest.raises(NotFoundError) as info:
        bundle.read_artifact("inst_002/step_001_request.json")
    assert "inst_001/step_001_request.json" in info.value.message  # lists what it has


def test_an_instance_known_only_from_its_artifacts_has_a_bundle(store: runstore.Store) -> None:
    with store.create_run(run_id="run_art") as run:
        run.put_artifact("inst_007/out.bin", b"\x00\x01")
    bundle = store.get_run("run_art").instance("inst_007")
    assert bundle.instance is None
    assert (bundle.steps, bundle.assertions, bundle.logs, bundle.streams) == ([], [], [], {})
    assert bundle.read_artifact("inst_007/out.bin") == b"\x00\x01"


def test_an_unknown_instance_is_not_found(store: runstore.Store) -> None:
    _record_run(store)
    with pytest.raises(NotFoundError) as info:
        store.get_run("run_replay").instance("inst_404")
    assert info.value.details == {"run_id": "run_replay", "instance_id": "inst_404"}


# -- export and load ---------------------------------------------------------------------


def test_export_writes_bundle_json_and_the_artifact_files(
    store: runstore.Store, tmp_path: Path
) -> None:
    _record_run(store)
    bundle = store.get_run("run_replay").instance("inst_001")
    path = bundle.export(tmp_path / "out")
    assert path == tmp_path / "out" / "bundle.json"
    data = json.loads(path.read_text())
    assert data["format"] == runstore.replay.BUNDLE_FORMAT
    assert (data["run_id"], data["instance_id"], data["seed"]) == ("run_replay", "inst_001", 42)
    assert data["steps"] == bundle.steps
    assert [a["path"] for a in data["artifacts"]] == [
        "artifacts/shared/catalog.json",
        "artifacts/inst_001/step_001_request.json",
        "artifacts/inst_001/step_002_request.json",
    ]
    for ref in bundle.artifacts:
        assert (tmp_path / "out" / "artifacts" / ref.name).read_bytes() == bundle.read_artifact(
            ref.name
        )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["artifacts", "bundle.json"]


def test_export_refuses_to_overwrite_unless_asked(store: runstore.Store, tmp_path: Path) -> None:
    _record_run(store)
    bundle = store.get_run("run_replay").instance("inst_001")
    bundle.export(tmp_path)
    with pytest.raises(AlreadyExistsError):
        bundle.export(tmp_path)
    assert bundle.export(tmp_path, overwrite=True) == tmp_path / "bundle.json"


def test_load_reads_an_export_back(store: runstore.Store, tmp_path: Path) -> None:
    _record_run(store)
    original = store.get_run("run_replay").instance("inst_002")
    original.export(tmp_path / "b")
    loaded = runstore.replay.load(tmp_path / "b")
    assert loaded == original
    assert loaded.read_artifact("inst_002/step_002_request.json") == b"inst_002-checkout"
    assert runstore.replay.load(tmp_path / "b" / "bundle.json") == original


def test_load_detects_a_modified_artifact_file(store: runstore.Store, tmp_path: Path) -> None:
    _record_run(store)
    store.get_run("run_replay").instance("inst_001").export(tmp_path)
    (tmp_path / "artifacts" / "inst_001" / "step_001_request.json").write_bytes(b"tampered")
    loaded = runstore.replay.load(tmp_path)
    with pytest.raises(CorruptError):
        loaded.read_artifact("inst_001/step_001_request.json")
    assert loaded.read_artifact("inst_001/step_001_request.json", verify=False) == b"tampered"
    (tmp_path / "artifacts" / "shared" / "catalog.json").unlink()
    with pytest.raises(NotFoundError):
        loaded.read_artifact("shared/catalog.json")


def test_load_refuses_what_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        runstore.replay.load(tmp_path)
    (tmp_path / "bundle.json").write_text('{"format": "something/else"}')
    with pytest.raises(InvalidInputError):
        runstore.replay.load(tmp_path)
    (tmp_path / "bundle.json").write_text("{not json")
    with pytest.raises(CorruptError):
        runstore.replay.load(tmp_path)
    (tmp_path / "bundle.json").write_text(json.dumps({"format": runstore.replay.BUNDLE_FORMAT}))
    with pytest.raises(CorruptError):
        runstore.replay.load(tmp_path)


def test_load_refuses_artifact_paths_that_escape_the_bundle(
    store: runstore.Store, tmp_path: Path
) -> None:
    _record_run(store)
    path = store.get_run("run_replay").instance("inst_001").export(tmp_path)
    data = json.loads(path.read_text())
    data["artifacts"][0]["name"] = "../../etc/passwd"
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidInputError):
        runstore.replay.load(tmp_path)


# -- async -----------------------------------------------------------------------------


def test_async_bundle_reads_and_exports(tmp_path: Path) -> None:
    async def main() -> None:
        async with runstore.aio.open(_url(), heartbeat_interval=0) as store:
            run = await store.create_run(run_id="run_async", seed=7)
            async with run, run.instance("inst_001"):
                ref = await run.put_artifact("inst_001/a.txt", b"abc")
                await run.append("steps", {"step_name": "s", "artifact": ref.name})
            view = await store.get_run("run_async")
            bundle = await view.instance("inst_001")
            assert isinstance(bundle, runstore.aio.AsyncInstanceBundle)
            assert bundle.seed == 7
            assert await bundle.read_artifact("inst_001/a.txt") == b"abc"
            await bundle.export(tmp_path)

    asyncio.run(main())
    loaded = runstore.replay.load(tmp_path)
    assert loaded.steps == [
        {"step_name": "s", "artifact": "inst_001/a.txt", "instance_id": "inst_001"}
    ]
    assert loaded.read_artifact("inst_001/a.txt") == b"abc"
