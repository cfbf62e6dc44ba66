"""The writer of a recorded session: one run, written by one process.

It lives in the process that reports results: the only process, or the
xdist controller. Workers never open the store; what they add travels on the
reports (:mod:`pytest_runstore.capture`), so the run keeps runstore's
one-writer-per-run rule and no merge is needed when it is read.

Per test it appends one ``steps`` record per phase as the phase's report
arrives (with the phase's captured output and log records in ``logs``), and
the ``instances`` record once the teardown report closes the test. Nothing
it does can change pytest's outcome: a storage error stops the recording and
becomes a warning line in the terminal summary.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import pytest

import runstore
from pytest_runstore.capture import REPORT_ATTRIBUTE, Capture
from pytest_runstore.environment import parse_meta_options, session_metadata
from pytest_runstore.nodeids import encode_nodeid
from runstore.model.metadata import validate_metadata, validate_tags
from runstore.model.run import utcnow

if TYPE_CHECKING:
    from runstore import RunStatus

__all__ = ["OUTCOME_STATUS", "Outcome", "Recorder", "phase_outcome"]

Outcome = Literal["passed", "failed", "error", "skipped", "xfailed", "xpassed"]

OUTCOME_STATUS: Final[dict[str, str]] = {
    "passed": "passed",
    "failed": "failed",
    "error": "error",
    "skipped": "skipped",
    "xfailed": "skipped",
    "xpassed": "passed",
}
"""pytest outcome -> runstore instance status (what the run's summary counts)."""

MAX_RECORD_LONGREPR: Final = 32 << 10
"""Characters of failure text kept in the instance record (the artifact has it all)."""

_SECTION_LEVEL: Final = {"stdout": "info", "stderr": "warning"}


def phase_outcome(report: pytest.TestReport | pytest.CollectReport) -> Outcome:
    """The outcome of one phase as pytest's terminal names it."""
    when = getattr(report, "when", "collect")
    if hasattr(report, "wasxfail"):
        if report.skipped:
            return "xfailed"
        if report.passed:
            return "xpassed"
    if report.failed:
        return "failed" if when == "call" else "error"
    if report.skipped:
        return "skipped"
    # Another plugin's outcome ('rerun' of pytest-rerunfailures) is kept as given.
    return "passed" if report.passed else cast(Outcome, str(report.outcome))


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str | None:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return None


def _when(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@dataclass
class _Test:
    """One test while its phases arrive."""

    nodeid: str
    instance_id: str
    location: Any = None
    outcome: Outcome | None = None
    duration: float = 0.0
    steps: int = 0
    longreprs: list[str] = field(default_factory=list)
    reason: str | None = None
    worker: str | None = None


@dataclass
class _Problems:
    """Storage errors met while recording, shown in the terminal summary."""

    stopped: str | None = None
    warnings: list[str] = field(default_factory=list)


class Recorder:
    """pytest hooks that write the session's run (registered only when recording is on)."""

    def __init__(self, config: pytest.Config, url: str | None) -> None:
        self.config = config
        self.url = url
        self.capture = Capture(None, url)
        try:
            user = parse_meta_options(config.getoption("runstore_meta"))
            self.metadata = validate_metadata({**session_metadata(config), **user})
            self.tags = validate_tags(config.getoption("runstore_tags"), "--runstore-tag")
        except runstore.InvalidInputError as exc:
            raise pytest.UsageError(f"runstore: {exc.message}") from None
        self.store: runstore.Store | None = None
        self.run: runstore.Run | None = None
        self.tests: dict[str, _Test] = {}
        self.counts: dict[str, int] = {}
        self.problems = _Problems()

    # -- the session -------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)  # before xdist starts workers: they get the run id
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        try:
            self.store = runstore.open(self.url)
            self.url = self.store.url
            self.run = self.store.create_run(
                sut_name=self.config.rootpath.name, metadata=self.metadata, tags=self.tags
            )
            self.run.start()
        except Exception as exc:
            self._stop(exc, "could not start the run")
            return
        self.capture.run_id = self.run.run_id
        self.capture.url = self.url

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist: tell each worker which run it reports to."""
        node.workerinput["runstore_run_id"] = self.capture.run_id
        node.workerinput["runstore_url"] = self.url

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if self.run is None or report.passed:
            return
        try:
            test = self._test(report.nodeid)
            self._phase(test, report, "collect")
            self._close(test)
        except Exception as exc:
            self._stop(exc, "could not record a collection report")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.run is None:
            return
        try:
            test = self._test(report.nodeid)
            self._phase(test, report, report.when)
            if report.when == "teardown":
                self._close(test)
        except Exception as exc:
            self._stop(exc, f"could not record {report.nodeid}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        run, store = self.run, self.store
        try:
            if run is not None:
                for test in list(self.tests.values()):  # interrupted, or a worker crashed
                    self._close(test)
                self._store_files()
                status, error = _run_status(exitstatus)
                run.set_metadata(exitstatus=int(exitstatus))
                run.finish(
                    status,
                    error=error,
                    metrics={
                        "xfailed": self.counts.get("xfailed", 0),
                        "xpassed": self.counts.get("xpassed", 0),
                    },
                )
        except Exception as exc:
            self._stop(exc, "could not finish the run")
        finally:
            self.run = None
            self.store = None
            if store is not None:
                try:
                    store.close()
                except Exception as exc:
                    self.problems.warnings.append(f"closing the store: {exc}")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for warning in self.problems.warnings:
            terminalreporter.write_line(f"runstore: warning: {warning}", yellow=True)
        if self.problems.stopped is not None:
            terminalreporter.write_line(f"runstore: warning: {self.problems.stopped}", yellow=True)
        elif self.capture.run_id is not None:
            terminalreporter.write_line(f"runstore: {self.capture.run_id} stored in {self.url}")

    # -- tests -------------------------------------------------------------------------

    def _test(self, nodeid: str) -> _Test:
        test = self.tests.get(nodeid)
        if test is None:
            test = self.tests[nodeid] = _Test(nodeid, encode_nodeid(nodeid))
        return test

    def _phase(
        self, test: _Test, report: pytest.TestReport | pytest.CollectReport, when: str
    ) -> None:
        assert self.run is not None
        run, instance_id = self.run, test.instance_id
        outcome = phase_outcome(report)
        duration = float(getattr(report, "duration", 0.0) or 0.0)
        test.duration += duration
        test.steps += 1
        test.location = getattr(report, "location", None)
        worker: object = getattr(report, "worker_id", None)  # set by xdist
        if isinstance(worker, str):
            test.worker = worker
        if when == "teardown":
            if outcome == "error" and test.outcome not in ("failed", "error"):
                test.outcome = "error"
        elif test.outcome is None or outcome != "passed":
            test.outcome = outcome
        if outcome in ("failed", "error"):
            text = report.longreprtext
            test.longreprs.append(text)
            run.put_artifact(
                f"{instance_id}/longrepr-{when}.txt",
                text.encode("utf-8", "replace"),
                kind="qa_report",
                media_type="text/plain; charset=utf-8",
            )
        elif outcome in ("skipped", "xfailed", "xpassed"):
            test.reason = getattr(report, "wasxfail", None) or _skip_reason(report) or test.reason
        run.append(
            "steps",
            {
                "instance_id": instance_id,
                "step_name": when,
                "step_index": test.steps,
                "outcome": outcome,
                "duration_ms": round(duration * 1000, 3),
                "started_at": _when(getattr(report, "start", None)),
            },
        )
        for title, content in report.sections:
            source, _, phase = title.removeprefix("Captured ").partition(" ")
            if phase == when and source in _SECTION_LEVEL:
                run.append(
                    "logs",
                    {
                        "ts": _when(getattr(report, "stop", None)) or utcnow(),
                        "level": _SECTION_LEVEL[source],
                        "message": content,
                        "instance_id": instance_id,
                        "phase": when,
                        "source": source,
                    },
                )
        for entry in getattr(report, REPORT_ATTRIBUTE, None) or ():
            self._entry(test, when, entry)

    def _entry(self, test: _Test, when: str, entry: dict[str, Any]) -> None:
        assert self.run is not None
        run, kind = self.run, entry.get("type")
        if kind == "log":
            record = {k: v for k, v in entry.items() if k != "type"}
            record.update(ts=_when(entry["ts"]), instance_id=test.instance_id, phase=when)
            record["source"] = "log"
            run.append("logs", record)
            return
        try:
            if kind == "artifact":
                run.put_artifact(
                    entry["name"],
                    base64.b64decode(entry["data"]),
                    kind=entry["kind"],
                    media_type=entry["media_type"],
                    metadata=entry["metadata"],
                )
            elif kind == "metric":
                run.append(
                    "metrics",
                    {
                        "name": entry["name"],
                        "value": entry["value"],
                        "step": entry["step"],
                        "ts": utcnow(),
                        "instance_id": test.instance_id,
                    },
                )
            elif kind == "assertion":
                run.append("assertions", {**entry["record"], "instance_id": test.instance_id})
        except runstore.RunstoreError as exc:  # the test's own data: the run goes on
            self.problems.warnings.append(f"{test.nodeid}: {exc.message}")

    def _close(self, test: _Test) -> None:
        assert self.run is not None
        del self.tests[test.nodeid]
        outcome = test.outcome or "error"
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        longrepr = "\n\n".join(test.longreprs) or None
        record: dict[str, Any] = {
            "instance_id": test.instance_id,
            "nodeid": test.nodeid,
            "status": OUTCOME_STATUS.get(outcome, outcome),
            "outcome": outcome,
            "duration_ms": round(test.duration * 1000, 3),
        }
        if test.location is not None:
            path, line, domain = test.location
            record["location"] = {"path": path, "line": line, "domain": domain}
        if longrepr is not None:
            record["longrepr"] = longrepr[:MAX_RECORD_LONGREPR]
            if len(longrepr) > MAX_RECORD_LONGREPR:
                record["longrepr_truncated"] = True
        if test.reason:
            record["reason"] = test.reason
        if test.worker:
            record["worker"] = test.worker
        self.run.append("instances", record)

    def _store_files(self) -> None:
        assert self.run is not None
        root = self.config.rootpath
        for pattern in self.config.getoption("runstore_artifacts"):
            for path in sorted(root.glob(pattern)):
                if not path.is_file():
                    continue
                name = f"files/{path.relative_to(root).as_posix()}"
                try:
                    self.run.put_artifact(name, path.read_bytes(), kind="raw")
                except (runstore.RunstoreError, OSError) as exc:
                    self.problems.warnings.append(f"--runstore-artifacts {pattern}: {exc}")

    def _stop(self, exc: BaseException, what: str) -> None:
        """Give up recording after a storage error; the run is left for ``runstore recover``."""
        message = exc.message if isinstance(exc, runstore.RunstoreError) else repr(exc)
        run_id = self.capture.run_id
        where = f" (run {run_id} is left unfinished)" if run_id and self.run is not None else ""
        self.problems.stopped = f"{what}: {message}; recording stopped{where}"
        self.run = None


def _run_status(exitstatus: int) -> tuple[RunStatus, str | None]:
    code = int(exitstatus)
    if code in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        return "succeeded", None
    if code == pytest.ExitCode.INTERRUPTED:
        return "cancelled", "pytest was interrupted"
    try:
        name = pytest.ExitCode(code).name
    except ValueError:
        name = "unknown"
    return "failed", f"pytest exit status {code} ({name})"
