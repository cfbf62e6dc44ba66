"""Config strings, options, error translation and generic (non-S3) filesystems."""

from __future__ import annotations

import errno
import importlib.util
import itertools
from pathlib import Path

import fsspec
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

import runstore
from runstore.model.errors import (
    AlreadyExistsError,
    BackendNotFoundError,
    BackendUnavailableError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RunstoreError,
    StorageIOError,
)
from runstore_fsspec._errors import PreconditionFailed, translate, translating

_names = itertools.count()


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


# -- the translation table -------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, NotFoundError),
        ("404", 404, NotFoundError),
        ("NoSuchBucket", 404, NotFoundError),
        ("AccessDenied", 403, PermissionDeniedError),
        ("InvalidAccessKeyId", 403, PermissionDeniedError),
        ("SlowDown", 503, BackendUnavailableError),
        ("InternalError", 500, BackendUnavailableError),
        ("SomethingNew", 502, BackendUnavailableError),
        ("RequestTimeout", 400, BackendUnavailableError),
        ("InvalidBucketName", 400, InvalidInputError),
        ("EntityTooSmall", 400, StorageIOError),
    ],
)
def test_s3_error_codes_become_typed_errors(
    code: str, status: int, expected: type[RunstoreError]
) -> None:
    error = translate(client_error(code, status), op="PUT", key="s3://b/k")
    assert type(error) is expected
    assert isinstance(error, RunstoreError)
    assert error.details["s3_code"] == code


@pytest.mark.parametrize("code", ["PreconditionFailed", "412"])
def test_failed_precondition_is_its_own_outcome(code: str) -> None:
    assert isinstance(translate(client_error(code, 412), op="PUT", key="k"), PreconditionFailed)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (FileNotFoundError(errno.ENOENT, "gone"), NotFoundError),
        (PermissionError(errno.EACCES, "no"), PermissionDeniedError),
        (IsADirectoryError(errno.EISDIR, "dir"), ConflictError),
        (TimeoutError("slow"), BackendUnavailableError),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), BackendUnavailableError),
        (OSError(errno.ENOSPC, "full"), StorageIOError),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), BackendUnavailableError),
    ],
    ids=["enoent", "eacces", "eisdir", "timeout", "refused", "enospc", "endpoint"],
)
def test_library_exceptions_become_typed_errors(
    exc: Exception, expected: type[RunstoreError]
) -> None:
    assert type(translate(exc, op="GET", key="k")) is expected


def test_file_exists_is_a_failed_precondition() -> None:
    assert isinstance(translate(FileExistsError("k"), op="PUT", key="k"), PreconditionFailed)


def test_translated_errors_keep_the_original_as_cause() -> None:
    original = client_error("SlowDown", 503)
    with pytest.raises(BackendUnavailableError) as info, translating("PUT", "s3://b/k"):
        raise original
    assert info.value.__cause__ is original
    assert info.value.details["key"] == "s3://b/k"


# -- config strings and options --------------------------------------------------------


def test_unknown_protocol_is_backend_not_found() -> None:
    with pytest.raises(BackendNotFoundError, match="nosuch://") as info:
        runstore.open("nosuch://bucket/runs")
    assert info.value.code == "backend_not_found"


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_protocol_without_its_package_names_the_extra_to_install() -> None:
    with pytest.raises(BackendNotFoundError, match=r"install runstore-fsspec\[gcs\]"):
        runstore.open("gs://bucket/runs")


def test_unknown_s3_option_is_refused_listing_the_valid_ones() -> None:
    with pytest.raises(InvalidInputError, match="endpont_url") as info:
        runstore.open("s3://bucket/runs?endpont_url=http://127.0.0.1:9000")
    assert "endpoint_url" in info.value.message


def test_unknown_filesystem_option_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="colour"):
        runstore.open("fsspec+file:///tmp/runs", colour="blue")


def test_malformed_batch_option_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="batch_records"):
        runstore.open("fsspec+memory://opts?batch_records=many")


def test_s3_store_needs_a_bucket() -> None:
    with pytest.raises(InvalidInputError, match="bucket"):
        runstore.open("s3://")


# -- generic filesystems ---------------------------------------------------------------


def test_memory_stores_with_one_name_share_their_runs() -> None:
    name = f"shared-{next(_names)}"
    with runstore.open(f"fsspec+memory://{name}") as first:
        with first.create_run(run_id="run_a") as run:
            run.append("steps", {"n": 1})
        with runstore.open(f"fsspec+memory://{name}") as second:
            assert list(second.get_run("run_a").read("steps")) == [{"n": 1}]
    fsspec.filesystem("memory").rm(f"/{name}", recursive=True)


def test_file_store_refuses_a_taken_run_id_within_one_process(tmp_path: Path) -> None:
    with runstore.open(f"fsspec+file://{tmp_path}") as store:
        store.create_run(run_id="run_dup")
        with pytest.raises(AlreadyExistsError):
            store.create_run(run_id="run_dup")


def test_file_store_refuses_a_stale_state_within_one_process(tmp_path: Path) -> None:
    with runstore.open(f"fsspec+file://{tmp_path}", heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_cas")
        run.start()
        stale = store.get_run("run_cas").state
        run.set_phase("load", status="running")
        newer = stale.model_copy(update={"revision": stale.revision + 1})
        record = runstore.RunRecord.build(run.manifest, stale)
        with pytest.raises(ConflictError):
            store.portal.call(
                store.aio.state_backend.write_state(
                    newer, expected_revision=stale.revision, record=record
                )
            )


def test_file_store_leaves_only_the_windtunnel_tree_after_finish(tmp_path: Path) -> None:
    with (
        runstore.open(f"fsspec+file://{tmp_path}/runs") as store,
        store.create_run(run_id="run_tree") as run,
    ):
        run.append("steps", {"n": 1})
        run.flush()
        run.append("steps", {"n": 2})
        run.put_artifact("inst_001/a.json", b"{}")
    tree = sorted(
        str(p.relative_to(tmp_path / "runs" / "run_tree"))
        for p in (tmp_path / "runs" / "run_tree").rglob("*")
    )
    assert tree == [
        "artifacts",
        "artifacts.jsonl",
        "artifacts/inst_001",
        "artifacts/inst_001/a.json",
        "manifest.json",
        "state.json",
        "steps.jsonl",
        "summary.json",
    ]
    assert (tmp_path / "runs" / "run_tree" / "steps.jsonl").read_bytes() == (b'{"n":1}\n{"n":2}\n')
