"""`runstore backends --check`: the capabilities an S3 endpoint really has."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from runstore.cli.app import cli
from runstore_fsspec.testing import S3rver, S3Server

pytestmark = pytest.mark.s3


def _check(url: str) -> dict[str, object]:
    result = CliRunner().invoke(cli, ["--store", url, "backends", "--check", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


def test_an_endpoint_that_honours_conditional_writes_keeps_them(s3: S3Server) -> None:
    report = _check(s3.url("runs"))
    assert report["backend"] == "fsspec" and report["multi_writer"] is True


def test_an_endpoint_that_ignores_them_is_reported_single_writer(s3rver: S3rver) -> None:
    report = _check(s3rver.url("runs"))
    capabilities = report["capabilities"]
    assert isinstance(capabilities, dict)
    assert capabilities["conditional_create"] is False
    assert capabilities["compare_and_swap"] is False
    assert report["multi_writer"] is False


def test_the_table_names_the_writers_it_allows(s3rver: S3rver) -> None:
    result = CliRunner().invoke(cli, ["--store", s3rver.url("runs"), "backends", "--check"])
    assert result.exit_code == 0, result.output
    assert "writers: one process at a time" in result.output
