"""stdlib logging into a run: ``runstore.logging.capture(run)`` and ``RunLogHandler``."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

import runstore
import runstore.logging
from runstore.model.errors import InvalidInputError
from runstore.model.run import ArtifactRef, RunState
from runstore.spi.backends import BackendSpec, Durability, StreamWriter, Target
from runstore.spi.memory import MemoryBackend

_names = itertools.count()


def _url() -> str:
    return f"memory://logging-{os.getpid()}-{next(_names)}"


@pytest.fixture
def store() -> Iterator[runstore.Store]:
    with runstore.open(_url(), heartbeat_interval=0) as store:
        yield store


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A fresh logger at DEBUG that does not propagate to the root logger (pytest's)."""
    log = logging.getLogger(f"harness.test{next(_names)}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)


def _logs(store: runstore.Store, run_id: str) -> list[dict[str, Any]]:
    return list(store.get_run(run_id).read("logs"))


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# -- what a line holds -----------------------------------------------------------------


def test_a_record_becomes_a_line_with_level_logger_message_and_extra_fields(
    store: runstore.Store, logger: logging.Logger
) -> None:
    run = store.create_run(run_id="run_line")
    with runstore.logging.capture(run, logger):
        logger.info("paid %d cents for %s", 1299, "ord_1", extra={"order": "ord_1", "qty": 2})
    run.finish()
    [line] = _logs(store, "run_line")
    assert datetime.fromisoformat(line.pop("ts")).tzinfo is not None
    assert line == {
        "level": "info",
        "message": "paid 1299 cents for ord_1",
        "logger": logger.name,
        "order": "ord_1",
        "qty": 2,
    }


def test_an_exception_is_stored_as_its_formatted_traceback(
    store: runstore.Store, logger: logging.Logger
) -> None:
    run = store.create_run(run_id="run_exc")
    with runstore.logging.capture(run, logger):
        try:
            raise ValueError("card declined")
        except ValueError:
            logger.exception("payment failed")
        logger.warning("where am I", stack_info=True)
    run.finish()
    failed, warned = _logs(store, "run_exc")
    assert (failed["level"], failed["message"]) == ("error", "payment failed")
    assert failed["exc_text"].startswith("Traceback (most recent call last)")
    assert failed["exc_text"].endswith("ValueError: card declined")
    assert "exc_text" not in warned
    assert warned["stack"].startswith("Stack (most recent call last)")


def test_values_json_cannot_hold_are_stored_as_their_repr(
    store: runstore.Store, logger: logging.Logger
) -> None:
    class Order:
        def __repr__(self) -> str:
            return "<Order ord_1>"

    run = store.create_run(run_id="run_repr")
    with runstore.logging.capture(run, logger):
        logger.info("odd", extra={"order": Order(), "huge": 1 << 70, "tags": ("a", "b")})
    run.finish()
    [line] = _logs(store, "run_repr")
    assert (line["order"], line["huge"], line["tags"]) == (
        "<Order ord_1>",
        repr(1 << 70),
        ["a", "b"],
    )


def test_lines_parse_as_the_typed_log_line_model(
    store: runstore.Store, logger: logging.Logger
) -> None:
    from runstore.streams import LogLine

    run = store.create_run(run_id="run_typed")
    with runstore.logging.capture(run, logger):
        logger.error("bad", extra={"order": "ord_1"})
    run.finish()
    [line] = store.get_run("run_typed").stream("logs", LogLine)
    assert (line.level, line.message, line.logger) == ("error", "bad", logger.name)
    assert line.model_extra == {"order": "ord_1"}


# -- correlation ids -------------------------------------------------------------------


def test_lines_carry_the_current_correlation_ids(
    store: runstore.Store, logger: logging.Logger
) -> None:
    run = store.create_run(run_id="run_ids")
    with runstore.logging.capture(run, logger), run.instance("inst_001"):
        with run.step("login"):
            logger.info("in step")
        logger.info("explicit", extra={"instance_id": "inst_override"})
    run.finish()
    in_step, explicit = _logs(store, "run_ids")
    assert (in_step["instance_id"], in_step["step_id"]) == ("inst_001", "login")
    assert explicit["instance_id"] == "inst_override"
    assert "step_id" not in explicit


def test_two_runs_capturing_one_logger_each_get_their_own_records(
    store: runstore.Store, logger: logging.Logger
) -> None:
    first = store.create_run(run_id="run_one")
    second = store.create_run(run_id="run_two")
    with runstore.logging.capture(first, logger), runstore.logging.capture(second, logger):
        with first.instance("a"):
            logger.info("for the first")
        with second.instance("b"):
            logger.info("for the second")
        logger.info("for both")
    first.finish()
    second.finish()
    assert [r["message"] for r in _logs(store, "run_one")] == ["for the first", "for both"]
    assert [r["message"] for r in _logs(store, "run_two")] == ["for the second", "for both"]


# -- installing and removing -------------------------------------------------------------


def test_capture_uses_the_root_logger_and_restores_its_level(store: runstore.Store) -> None:
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.WARNING)
    try:
        run = store.create_run(run_id="run_root")
        with runstore.logging.capture(run) as handler:
            assert handler in root.handlers
            assert root.level == logging.INFO
            logging.getLogger("anywhere.below").info("seen")
            logging.getLogger("anywhere.below").debug("below the level")
        assert handler not in root.handlers
        assert root.level == logging.WARNING
        logging.getLogger("anywhere.below").warning("after the block")
        run.finish()
        assert [r["message"] for r in _logs(store, "run_root")] == ["seen"]
    finally:
        root.setLevel(before)


def test_capture_by_logger_name_and_level_name(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_named")
    named = logging.getLogger("harness.named")
    named.propagate = False
    try:
        with runstore.logging.capture(run, "harness.named", "warning"):
            named.info("too low")
            named.warning("kept")
    finally:
        named.propagate = True
    run.finish()
    assert [r["message"] for r in _logs(store, "run_named")] == ["kept"]


def test_capture_refuses_an_unknown_level(store: runstore.Store) -> None:
    run = store.create_run(run_id="run_badlevel")
    with pytest.raises(InvalidInputError):
        runstore.logging.capture(run, level="loud")
    run.finish()


def test_a_handler_kept_without_with_is_detached_explicitly(
    store: runstore.Store, logger: logging.Logger
) -> None:
    run = store.create_run(run_id="run_kept")
    handler = runstore.logging.capture(run, logger)
    logger.info("one")
    handler.detach()
    logger.info("two")
    run.finish()
    assert [r["message"] for r in _logs(store, "run_kept")] == ["one"]


def test_handler_can_go_into_any_logging_configuration(
    store: runstore.Store, logger: logging.Logger
) -> None:
    run = store.create_run(run_id="run_config")
    handler = runstore.logging.RunLogHandler(run, logging.WARNING, stream="harness_logs")
    logger.addHandler(handler)
    logger.info("ignored")
    logger.error("stored")
    logger.removeHandler(handler)
    handler.close()
    run.finish()
    assert [r["message"] for r in store.get_run("run_config").read("harness_logs")] == ["stored"]
    assert run.summary is not None
    assert run.summary.stream_counts["harness_logs"] == 1


def test_a_handler_needs_a_run() -> None:
    with pytest.raises(InvalidInputError):
        runstore.logging.RunLogHandler("run_001")  # type: ignore[arg-type]


def test_records_after_the_run_finished_are_dropped_and_counted(
    store: runstore.Store, logger: logging.Logger
) -> None:
    run = store.create_run(run_id="run_late")
    with runstore.logging.capture(run, logger) as handler:
        logger.info("in time")
        run.finish()
        logger.info("too late")
        logger.info("also too late")
    assert handler.dropped == 2
    assert [r["message"] for r in _logs(store, "run_late")] == ["in time"]


# -- acknowledged means stored --------------------------------------------------------


def test_each_record_is_readable_as_soon_as_the_logging_call_returns(
    store: runstore.Store, logger: logging.Logger
) -> None:
    run = store.create_run(run_id="run_ack")
    with runstore.logging.capture(run, logger):
        for n in range(20):
            logger.info("record %d", n)
            assert _logs(store, "run_ack")[-1]["message"] == f"record {n}"
    run.finish()


def test_records_from_many_threads_are_all_stored_and_counted(
    store: runstore.Store, logger: logging.Logger
) -> None:
    run = store.create_run(run_id="run_threads")

    def work(thread: int) -> None:
        for n in range(200):
            logger.info("t%d n%d", thread, n)

    with runstore.logging.capture(run, logger):
        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    summary = run.finish()
    messages = [r["message"] for r in _logs(store, "run_threads")]
    assert sorted(messages) == sorted(f"t{t} n{n}" for t in range(8) for n in range(200))
    assert summary.stream_counts["logs"] == 1600


class _Gate:
    """A backend whose stream writes become visible only when committed, and whose
    commits wait until the test opens the gate: emit must not wait for them."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.commits = 0

    @runstore.hookimpl
    def runstore_register_backends(self, register: Callable[[BackendSpec], None]) -> None:
        gate = self

        class GatedWriter(StreamWriter):
            durability: Durability = "batch"

            def __init__(self, inner: StreamWriter) -> None:
                self.inner = inner
                self.pending: list[bytes] = []
                self.lock = threading.Lock()

            def write(self, data: bytes) -> bool:
                with self.lock:
                    self.pending.append(data)
                return False

            async def commit(self) -> None:
                while not gate.open.is_set():
                    await asyncio.sleep(0.005)
                with self.lock:
                    pending, self.pending = self.pending, []
                for data in pending:
                    self.inner.write(data)
                gate.commits += 1

            async def close(self) -> None:
                await self.commit()
                await self.inner.close()

        class GatedBackend(MemoryBackend):
            async def open_writer(
                self, run_id: str, stream: str, *, durability: Durability | None = None
            ) -> StreamWriter:
                return GatedWriter(await super().open_writer(run_id, stream))

        def factory(target: Target) -> GatedBackend:
            return GatedBackend(f"gated-{target.path}")

        register(BackendSpec(name="gated", factory=factory, schemes=("gated",)))


def test_emit_never_waits_for_a_commit_and_flush_makes_records_durable(
    logger: logging.Logger,
) -> None:
    gate = _Gate()
    with runstore.open(f"gated://{next(_names)}", plugins=[gate], heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_gated")
        handler = runstore.logging.capture(run, logger)
        for n in range(50):
            logger.info("record %d", n)  # would hang here if emit waited for the commit
        assert _logs(store, "run_gated") == []  # handed over, not yet committed
        gate.open.set()
        handler.flush()
        assert [r["message"] for r in _logs(store, "run_gated")] == [
            f"record {n}" for n in range(50)
        ]
        assert 1 <= gate.commits <= 51  # group commits, requested in the background
        handler.detach()
        run.finish()


# -- never recursing -------------------------------------------------------------------


def test_logging_done_while_a_record_is_written_is_not_written_again(
    store: runstore.Store, logger: logging.Logger
) -> None:
    inner = logging.getLogger("runstore.test_inner")
    collect = Collect()
    inner.addHandler(collect)

    class Noisy:
        def __repr__(self) -> str:
            inner.warning("repr called")  # logs while the handler encodes the record
            return "<Noisy>"

    run = store.create_run(run_id="run_recursive")
    root = logging.getLogger()
    try:
        with runstore.logging.capture(run, logger), runstore.logging.capture(run, root):
            logger.info("outer", extra={"noisy": Noisy()})
    finally:
        inner.removeHandler(collect)
    run.finish()
    lines = _logs(store, "run_recursive")
    assert [(r["message"], r["noisy"]) for r in lines] == [("outer", "<Noisy>")]
    assert [r.getMessage() for r in collect.records] == ["repr called"]  # others still get it


class LoggingObserver:
    """An observer that logs from runstore's event-loop thread, like many plugins do."""

    def __init__(self) -> None:
        self.log = logging.getLogger("observer.phase_outputs")

    @runstore.hookimpl
    def runstore_artifact_stored(self, ref: ArtifactRef) -> None:
        self.log.info("stored %s", ref.name, extra={"sha256": ref.sha256})

    @runstore.hookimpl
    def runstore_state_changed(self, state: RunState) -> None:
        self.log.info("state %s", state.status)


def test_records_logged_by_observers_on_runstores_loop_are_stored(
    logger: logging.Logger,
) -> None:
    observer = LoggingObserver()
    observer.log.propagate = False
    with runstore.open(_url(), plugins=[observer], heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_observed")
        with runstore.logging.capture(run, observer.log):
            run.put_artifact("inst_001/out.json", b"{}", kind="phase_output")
            run.set_phase("translate", status="done")
        run.finish()
        messages = [r["message"] for r in _logs(store, "run_observed")]
    # Both were logged on runstore's event-loop thread, inside put_artifact and set_phase.
    assert messages == ["stored inst_001/out.json", "state running"]


def test_a_failing_observer_surfaces_in_the_runs_logs(logger: logging.Logger) -> None:
    class Broken:
        @runstore.hookimpl
        def runstore_artifact_stored(self, ref: ArtifactRef) -> None:
            raise RuntimeError("orchestrator unreachable")

    plugins_log = logging.getLogger("runstore.plugins")
    with runstore.open(_url(), plugins=[Broken()], heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_broken_observer")
        with runstore.logging.capture(run, plugins_log, logging.ERROR):
            ref = run.put_artifact("out.json", b"{}")
        run.finish()
        [line] = _logs(store, "run_broken_observer")
        assert store.get_run("run_broken_observer").read_artifact("out.json") == b"{}"
    assert ref.size == 2
    assert (line["logger"], line["level"]) == ("runstore.plugins", "error")
    assert "RuntimeError: orchestrator unreachable" in line["exc_text"]


# -- AsyncRun --------------------------------------------------------------------------


def _async(scenario: Callable[[runstore.aio.AsyncStore], Any]) -> None:
    async def main() -> None:
        async with runstore.aio.open(_url(), heartbeat_interval=0) as store:
            await scenario(store)

    asyncio.run(main())


def test_async_with_capture_on_an_async_run(logger: logging.Logger) -> None:
    async def scenario(store: runstore.aio.AsyncStore) -> None:
        run = await store.create_run(run_id="run_async")
        async with run, runstore.logging.capture(run, logger), run.instance("inst_001"):
            logger.info("from the loop")
            await asyncio.to_thread(logger.info, "from a worker thread")
        view = await store.get_run("run_async")
        lines = [r async for r in view.read("logs")]
        assert [r["message"] for r in lines] == ["from the loop", "from a worker thread"]
        assert lines[0]["instance_id"] == "inst_001"
        assert lines[1]["instance_id"] == "inst_001"  # to_thread copies the context
        assert run.summary is not None
        assert run.summary.stream_counts["logs"] == 2

    _async(scenario)


def test_async_records_before_the_stream_is_open_are_queued_in_order(
    logger: logging.Logger,
) -> None:
    async def scenario(store: runstore.aio.AsyncStore) -> None:
        run = await store.create_run(run_id="run_queue")
        handler = runstore.logging.RunLogHandler(run)  # plain constructor: stream not open
        logger.addHandler(handler)
        for n in range(5):
            logger.info("queued %d", n)  # on the loop's thread: never awaits
        await handler.aflush()
        logger.info("direct")
        await handler.aflush()
        logger.removeHandler(handler)
        handler.close()
        await run.finish()
        view = await store.get_run("run_queue")
        messages = [r["message"] async for r in view.read("logs")]
        assert messages == [*(f"queued {n}" for n in range(5)), "direct"]
        assert run.summary is not None
        assert run.summary.stream_counts["logs"] == 6

    _async(scenario)


def test_an_async_handler_must_be_created_inside_the_loop() -> None:
    async def make() -> runstore.aio.AsyncRun:
        store = runstore.aio.open(_url(), heartbeat_interval=0)
        return await store.create_run(run_id="run_outside")

    run = asyncio.run(make())
    with pytest.raises(InvalidInputError, match="inside the event loop"):
        runstore.logging.RunLogHandler(run)
