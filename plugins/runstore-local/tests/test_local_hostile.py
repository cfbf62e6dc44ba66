"""Nothing outside the store is ever touched: planted symlinks are refused, not followed."""

from __future__ import annotations

from pathlib import Path

import pytest

import runstore
from runstore.model.errors import InvalidInputError, RunstoreError


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    target = tmp_path / "outside"
    target.mkdir()
    (target / "secret.txt").write_bytes(b"secret")
    return target


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_symlinked_artifact_directory_is_refused(
    store: runstore.Store, root: Path, outside: Path
) -> None:
    before = _snapshot(outside)
    run = store.create_run(run_id="run_sym")
    run.put_artifact("ok.txt", b"1")
    (root / "run_sym" / "artifacts" / "evil").symlink_to(outside)
    with pytest.raises(InvalidInputError) as info:
        run.put_artifact("evil/planted.txt", b"payload")
    assert "symbolic link" in info.value.message
    assert _snapshot(outside) == before


def test_symlinked_artifact_file_is_neither_read_nor_replaced(
    store: runstore.Store, root: Path, outside: Path
) -> None:
    run = store.create_run(run_id="run_leaf")
    run.put_artifact("ok.txt", b"1")
    (root / "run_leaf" / "artifacts" / "secret.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(InvalidInputError):
        run.put_artifact("secret.txt", b"secret")
    with pytest.raises(InvalidInputError):
        store.get_run("run_leaf").read_artifact("secret.txt")
    assert (outside / "secret.txt").read_bytes() == b"secret"


def test_symlinked_run_directory_is_refused(
    store: runstore.Store, root: Path, outside: Path
) -> None:
    (root / "run_link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RunstoreError):
        store.create_run(run_id="run_link")
    with pytest.raises(InvalidInputError):
        store.get_run("run_link")
    assert _snapshot(outside) == {str(outside / "secret.txt"): b"secret"}


def test_symlinked_stream_file_is_refused(store: runstore.Store, root: Path, outside: Path) -> None:
    run = store.create_run(run_id="run_stream")
    (root / "run_stream" / "steps.jsonl").symlink_to(outside / "secret.txt")
    with pytest.raises(InvalidInputError):
        run.append("steps", {"n": 1})
    assert (outside / "secret.txt").read_bytes() == b"secret"


def test_symlinked_temp_directory_is_refused(root: Path, outside: Path) -> None:
    (root / ".runstore").mkdir(parents=True)
    (root / ".runstore" / "tmp").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidInputError):
        runstore.open(str(root))
    assert _snapshot(outside) == {str(outside / "secret.txt"): b"secret"}


@pytest.mark.parametrize(
    "name",
    [
        "../../outside/x",
        "/abs/x",
        "a/../../x",
        "..\\..\\x",
        "%2e%2e/x",
        "%252e%252e/x",
        "x#/../..",
        "C:/x",
    ],
)
def test_traversal_names_write_nothing_anywhere(
    store: runstore.Store, tmp_path: Path, name: str
) -> None:
    before = _snapshot(tmp_path)
    run = store.create_run(run_id="run_names")
    after_create = _snapshot(tmp_path)
    with pytest.raises(InvalidInputError):
        run.put_artifact(name, b"payload")
    assert _snapshot(tmp_path) == after_create
    assert set(before) <= set(after_create)
