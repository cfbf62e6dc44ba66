"""A store written before the open data model (runstore 0.1, 2026-11) still reads and works.

``tests/fixtures/old-format-store`` holds a demo run as that version wrote it:
no caller state, metadata, metrics, error or skip counts, artifact metadata.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import runstore
from runstore.ops.maintenance import verify_run

FIXTURE = Path(__file__).parent / "fixtures" / "old-format-store"
RUN = "run_20240115_001"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[runstore.Store]:
    root = tmp_path / "runs"
    shutil.copytree(FIXTURE, root)
    with runstore.open(str(root)) as opened:
        yield opened


def test_an_old_run_lists_with_the_new_fields_empty(store: runstore.Store) -> None:
    (record,) = store.list_runs()
    assert (record.run_id, record.status) == (RUN, "succeeded")
    assert (record.metadata, record.metrics, record.error_count) == ({}, {}, 0)


def test_an_old_run_reads_with_missing_fields_as_none(store: runstore.Store) -> None:
    view = store.get_run(RUN)
    assert view.state.data is None
    assert (view.state.metadata, view.state.tags) == (None, None)
    assert (view.metadata, view.manifest.metadata) == ({}, {})
    assert view.summary is not None
    assert (view.summary.metrics, view.summary.skip_count) == ({}, 0)
    refs = view.artifacts()
    assert refs and all(ref.metadata is None for ref in refs)
    assert all(ref.uri is not None and ref.uri.startswith("file://") for ref in refs)
    assert len(list(view.read("steps"))) > 0


def test_an_old_run_verifies_clean_and_takes_new_labels(store: runstore.Store) -> None:
    assert store.portal.call(verify_run(store.aio, RUN)) == []
    record = store.set_metadata(RUN, {"reviewed": True})
    assert record.metadata == {"reviewed": True}
    assert store.portal.call(verify_run(store.aio, RUN)) == []
