"""The test side: what a running test adds to its reports for the recorder.

This runs in the process that runs the tests (the only process, or each
xdist worker). It never opens the store: log records and the
``runstore_run`` fixture's calls are buffered for the phase that is running
and handed to the recorder on that phase's report, as the report attribute
:data:`REPORT_ATTRIBUTE`. pytest serialises report attributes to the xdist
controller, so the one writer of the run sees them whichever process ran the
test. Entries hold only JSON values (artifact bytes as base64), as every
report consumer (xdist, pytest-reportlog) expects.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from pytest_runstore.nodeids import encode_nodeid

if TYPE_CHECKING:
    from runstore import ArtifactKind

__all__ = ["REPORT_ATTRIBUTE", "Capture", "TestRun"]

REPORT_ATTRIBUTE: Final = "runstore_records"
"""Name of the report attribute that carries a phase's buffered entries."""

Entry = dict[str, Any]


class _BufferHandler(logging.Handler):
    """Copies log records that reach the root logger into the running test's buffer."""

    def __init__(self, capture: Capture) -> None:
        super().__init__(logging.NOTSET)
        self.capture = capture

    def emit(self, record: logging.LogRecord) -> None:
        buffer = self.capture.buffer
        if buffer is None:  # between tests: not part of any instance
            return
        try:
            entry: Entry = {
                "type": "log",
                "ts": record.created,
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
            if record.exc_info:
                entry["exc_text"] = logging.Formatter().formatException(record.exc_info)
            buffer.append(entry)
        except Exception:
            self.handleError(record)


class Capture:
    """Buffers what a test logs and adds through the fixture, one phase at a time."""

    def __init__(self, run_id: str | None, url: str | None) -> None:
        self.run_id = run_id
        self.url = url
        self.buffer: list[Entry] | None = None
        self.handler = _BufferHandler(self)

    def install(self) -> None:
        logging.getLogger().addHandler(self.handler)

    def uninstall(self) -> None:
        logging.getLogger().removeHandler(self.handler)

    def pytest_runtest_logstart(self) -> None:
        self.buffer = []

    def pytest_runtest_logfinish(self) -> None:
        self.buffer = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if self.buffer:
            setattr(report, REPORT_ATTRIBUTE, self.buffer)
            self.buffer = []
        return report

    def add(self, entry: Entry) -> None:
        if self.buffer is not None:
            self.buffer.append(entry)


class TestRun:
    """What the ``runstore_run`` fixture gives a test: its own instance of the run.

    Everything it adds is stored with the test's instance when recording is
    on (artifacts under ``<instance_id>/``, metrics and assertions with its
    ``instance_id``) and is checked the same way when it is off, where it is
    then dropped: a test that passes without recording passes with it.
    """

    __test__ = False  # not a test class, whatever its name

    def __init__(self, nodeid: str, capture: Capture | None) -> None:
        self.nodeid = nodeid
        """The test's pytest node id."""
        self.instance_id = encode_nodeid(nodeid)
        """The test's instance id in the run (:mod:`pytest_runstore.nodeids`)."""
        self._capture = capture

    @property
    def enabled(self) -> bool:
        """Whether the session is being recorded."""
        return self._capture is not None

    @property
    def run_id(self) -> str | None:
        """The run being recorded, ``None`` when recording is off."""
        return None if self._capture is None else self._capture.run_id

    def put_artifact(
        self,
        name: str,
        data: bytes | str | Path,
        *,
        kind: ArtifactKind = "raw",
        media_type: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Store ``data`` (bytes, text as UTF-8, or a file's contents) as an artifact.

        It is named ``<instance_id>/<name>`` in the run; that full name is returned.
        A name or kind runstore refuses raises
        :class:`runstore.InvalidInputError` here, in the test.
        """
        from typing import get_args

        from runstore import ArtifactKind, InvalidInputError
        from runstore.model.metadata import json_object
        from runstore.model.names import validate_artifact_name

        full_name = validate_artifact_name(f"{self.instance_id}/{name}")
        if kind not in get_args(ArtifactKind):
            raise InvalidInputError(
                f"artifact kind {kind!r} is not one of {', '.join(get_args(ArtifactKind))}",
                details={"kind": repr(kind)},
            )
        if isinstance(data, Path):
            data = data.read_bytes()
        elif isinstance(data, str):
            data = data.encode("utf-8")
        elif not isinstance(data, bytes):
            raise InvalidInputError(
                f"artifact data must be bytes, str or a Path, not {type(data).__name__}",
                details={"type": type(data).__name__},
            )
        clean = None if metadata is None else json_object(metadata, "artifact metadata")
        self._add(
            {
                "type": "artifact",
                "name": full_name,
                "data": base64.b64encode(data).decode("ascii"),
                "kind": kind,
                "media_type": media_type,
                "metadata": clean,
            }
        )
        return full_name

    def log_metric(self, name: str, value: float, *, step: int | None = None) -> None:
        """Append a metric to the run's ``metrics`` stream with this test's ``instance_id``.

        ``summary.metrics`` keeps the last value of each name across the whole run.
        """
        from runstore.model.metadata import metric_record

        record = metric_record(name, value, step)
        self._add(
            {"type": "metric", "name": record["name"], "value": record["value"], "step": step}
        )

    def record_assertion(
        self,
        name: str,
        passed: bool,
        *,
        expected: Any = None,
        actual: Any = None,
        message: str | None = None,
        **fields: Any,
    ) -> None:
        """Append an ``assertions`` record (any JSON ``expected``/``actual``) for this test."""
        import orjson

        from runstore import InvalidInputError
        from runstore.model.records import encode_record

        if not isinstance(name, str) or not name:
            raise InvalidInputError("an assertion needs a non-empty name", details={})
        if not isinstance(passed, bool):
            raise InvalidInputError(
                f"passed must be a bool, not {type(passed).__name__}", details={"name": name}
            )
        record = {
            **fields,
            "name": name,
            "passed": passed,
            "expected": expected,
            "actual": actual,
            "message": message,
        }
        # Refused here, in the test, if it could not be stored; plain JSON from here on
        # (datetimes as strings), which every report consumer can carry.
        self._add({"type": "assertion", "record": orjson.loads(encode_record(record))})

    def _add(self, entry: Entry) -> None:
        if self._capture is not None:
            self._capture.add(entry)

    def __repr__(self) -> str:
        return f"<TestRun {self.instance_id!r} run_id={self.run_id!r}>"
