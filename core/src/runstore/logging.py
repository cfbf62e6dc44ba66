"""stdlib :mod:`logging` into a run's ``logs`` stream.

One line installs it for the duration of a block::

    import logging, runstore.logging

    with runstore.logging.capture(run):            # the root logger, INFO and above
        logging.getLogger("harness").info("checkout done", extra={"order": "ord_1"})

or keep the handler: ``handler = runstore.logging.capture(run)`` ...
``handler.close()``. :class:`RunLogHandler` can also be added to any logger
or logging configuration like any other handler.

Each :class:`logging.LogRecord` becomes one line of ``logs.jsonl``
(:class:`runstore.streams.LogLine`): ``ts``, ``level`` (lower case),
``message`` (``%``-formatted), ``logger``, ``exc_text`` when an exception was
logged, ``stack`` when ``stack_info`` was asked for, every ``extra`` field,
and the current correlation ids (``instance_id``, ``step_id``, ``trace_id``,
see :mod:`runstore.context`). Values JSON cannot hold are stored as their
``repr``.

Behaviour, and what it guarantees:

* **Cost and blocking.** ``emit`` encodes the line and hands it to the
  stream's writer in the calling thread, like ``run.append``: a write of one
  line, no event-loop hop. It never waits for a commit: when the store's
  durability policy needs one (``durability="fsync"``, object stores), emit
  requests a group commit that runs in the background.
* **Acknowledgement.** Under the local backend's default policy a record is
  durable when ``emit`` returns. Under a policy that needs a commit, records
  are durable once :meth:`RunLogHandler.flush` returns (``flush`` is called by
  ``close()``, by ``capture``'s exit and by :func:`logging.shutdown`); until
  then the background commit may or may not have covered them. A record
  emitted while the stream is still being opened (see below) is queued and
  likewise acknowledged by ``flush``. The run's own ``finish`` also commits
  everything written.
* **Never recursing.** While the handler emits, records logged by anything it
  calls (runstore's ``runstore.*`` loggers, a backend, an observer) are not
  written again by any :class:`RunLogHandler`: a context-variable guard drops
  them for these handlers only; other handlers still get them.
* **Other runs.** A record logged inside a correlation scope of another run
  (``with other_run.instance(...)``) is not written to this run, so two runs
  in one process can each capture the root logger.
* **After the run finished** (or the store closed) records cannot be stored;
  they are counted in :attr:`RunLogHandler.dropped`.
* **Errors** writing a record go to :meth:`logging.Handler.handleError` (a
  message on stderr, never an exception in the logging call).

Sync :class:`runstore.Run`: the handler opens the ``logs`` stream when it is
created, so the first record is as cheap as the others.

Async :class:`runstore.aio.AsyncRun`: create the handler inside the event loop
that drives the run, ideally as ``async with runstore.logging.capture(run):``,
which opens the stream before the block starts. ``emit`` never awaits: it
writes through the writer's synchronous fast path from the loop's thread or
any other thread. A record emitted before the stream is open is queued and
written by a task on the run's loop, in order. ``await handler.aflush()``
makes everything emitted so far durable from inside the loop (``flush()``
from the loop's own thread only requests a commit, as it cannot wait there).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Self

import orjson

from runstore import context
from runstore.aio import AsyncRun
from runstore.engine.portal import Portal
from runstore.model.errors import InvalidInputError, RunstoreError
from runstore.model.names import validate_stream_name
from runstore.model.records import MAX_RECORD_BYTES
from runstore.spi.backends import StreamWriter
from runstore.store import Run

__all__ = ["RunLogHandler", "capture"]

_STANDARD_ATTRS: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
"""LogRecord attributes that are not ``extra`` fields."""

_OPTIONS: Final = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
_TRUNCATED_MESSAGE: Final = 64 << 10

_emitting: ContextVar[bool] = ContextVar("runstore_logging_emitting", default=False)
"""Set while a RunLogHandler emits: what it calls must not log into it again."""


def _json_fallback(value: Any) -> Any:
    """What orjson cannot encode is stored as its repr (sets and tuples as lists)."""
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)


def _safe_value(value: Any) -> Any:
    try:
        orjson.dumps(value, default=_json_fallback, option=_OPTIONS)
    except TypeError:
        return repr(value)
    return value


class RunLogHandler(logging.Handler):
    """A :class:`logging.Handler` writing each record to a run's ``logs`` stream.

    :param run: a :class:`runstore.Run` or :class:`runstore.aio.AsyncRun`.
    :param level: the handler's level (records below it are ignored).
    :param stream: the stream to write (default ``logs``).
    """

    def __init__(
        self, run: Run | AsyncRun, level: int | str = logging.NOTSET, *, stream: str = "logs"
    ) -> None:
        super().__init__(level)
        self.stream = validate_stream_name(stream)
        self.dropped = 0
        """Records that could not be stored because the run had finished or was released."""
        self._queue: list[bytes] | None = None
        self._queue_lock = threading.Lock()
        self._commit_requested = False
        self._uncommitted = False
        self._tasks: set[asyncio.Future[None] | Future[None]] = set()
        if isinstance(run, Run):
            self.run: Run | AsyncRun = run
            self._core = run.aio.core
            self._portal: Portal | None = self._core.portal
            self._loop: asyncio.AbstractEventLoop | None = None
            if not self._on_loop_thread() and not self._core.released:
                self._call(self._core.open_writer(self.stream))
        elif isinstance(run, AsyncRun):
            self.run = run
            self._core = run.core
            self._portal = None
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                raise InvalidInputError(
                    "create a RunLogHandler for an AsyncRun inside the event loop that drives "
                    "the run (e.g. 'async with runstore.logging.capture(run):')"
                ) from None
        else:
            raise InvalidInputError(
                f"RunLogHandler needs a runstore Run or AsyncRun, got {type(run).__name__}",
                details={"type": type(run).__name__},
            )

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<RunLogHandler {self._core.run_id!r} {self.stream} ({level})>"

    # -- building the line ----------------------------------------------------------

    def to_record(self, record: logging.LogRecord) -> dict[str, Any]:
        """The ``logs`` line for ``record`` (before correlation ids are added)."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            "logger": record.name,
        }
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = (self.formatter or _FORMATTER).formatException(record.exc_info)
            line["exc_text"] = record.exc_text
        elif record.exc_text:
            line["exc_text"] = record.exc_text
        if record.stack_info:
            line["stack"] = (self.formatter or _FORMATTER).formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in line and not key.startswith("_"):
                line[key] = value
        return line

    def _encode(self, line: dict[str, Any]) -> bytes:
        try:
            data = orjson.dumps(line, default=_json_fallback, option=_OPTIONS)
        except TypeError:  # e.g. an int beyond 64 bits: store what cannot be encoded as repr
            safe = {k: _safe_value(v) for k, v in line.items()}
            data = orjson.dumps(safe, default=_json_fallback, option=_OPTIONS)
        if len(data) <= MAX_RECORD_BYTES:
            return data
        # Too big for one record: keep the essentials, cut the message.
        small: dict[str, Any] = {
            k: line[k] for k in ("ts", "level", "logger", *context.CORRELATION_KEYS) if k in line
        }
        small["message"] = str(line["message"])[:_TRUNCATED_MESSAGE]
        small["truncated"] = True
        return orjson.dumps(small, default=_json_fallback, option=_OPTIONS)

    # -- emitting ------------------------------------------------------------------

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter and emit without the handler lock: the writer is thread-safe, and a
        lock held across a write could deadlock with runstore's own event-loop thread."""
        if _emitting.get():
            return False
        rv: Any = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # Python 3.12: a filter may replace it
            record = rv
        if rv:
            self.emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        if _emitting.get():
            return
        token = _emitting.set(True)
        try:
            ctx = context.active()
            run_id = self._core.run_id
            if ctx is not None and ctx.run_id is not None and ctx.run_id != run_id:
                return  # logged for another run
            line = self.to_record(record)
            if ctx is not None:
                line = context.correlate(run_id, line)
            self._write(self._encode(line), line)
        except Exception:
            self.handleError(record)
        finally:
            _emitting.reset(token)

    def _write(self, data: bytes, line: dict[str, Any]) -> None:
        writer = self._core.writers.get(self.stream)
        if writer is None or self._queue is not None:
            writer = self._writer_or_queue(data)
            if writer is None:
                return
        if not self._core.write(writer, self.stream, data, None):
            self._uncommitted = True
            self._request_commit(writer)

    def _call(self, coro: Coroutine[Any, Any, StreamWriter]) -> StreamWriter:
        assert self._portal is not None  # a sync Run's handler
        return self._portal.call(coro)

    def _writer_or_queue(self, data: bytes) -> StreamWriter | None:
        """The open writer, or ``None`` after queueing ``data`` (or dropping it)."""
        with self._queue_lock:
            if self._queue is not None:
                self._queue.append(data)
                return None
            writer = self._core.writers.get(self.stream)
            if writer is not None:
                return writer
            if self._core.released:
                self.dropped += 1
                return None
            if self._portal is not None and not self._on_loop_thread():
                pass  # sync Run from an ordinary thread: open it right here, below
            else:
                self._queue = [data]
                self._schedule(self._drain())
                return None
        return self._open_now()

    def _open_now(self) -> StreamWriter | None:
        """Open the stream from a thread that may block (sync Run only)."""
        if self._core.released:
            self.dropped += 1
            return None
        return self._call(self._core.open_writer(self.stream))

    async def _drain(self) -> None:
        """Open the stream on the run's loop and write the queued lines, in order."""
        try:
            writer = await self._core.open_writer(self.stream)
        except RunstoreError as exc:
            with self._queue_lock:
                lost, self._queue = self._queue or [], None
            self.dropped += len(lost)
            _report(
                f"{len(lost)} log records could not be stored in run {self._core.run_id!r}", exc
            )
            return
        with self._queue_lock:
            queued, self._queue = self._queue or [], None
            durable = True
            for data in queued:
                durable = self._core.write(writer, self.stream, data, None) and durable
        if not durable:
            self._uncommitted = True
            await self._commit(writer)

    # -- commits ------------------------------------------------------------------

    def _loop_now(self) -> asyncio.AbstractEventLoop | None:
        if self._portal is not None:
            return self._portal.running_loop()
        return self._loop

    def _on_loop_thread(self) -> bool:
        if self._portal is not None:
            return self._portal.in_loop_thread()
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _schedule(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` on the run's loop without waiting for it."""
        loop = self._loop_now()
        if loop is None or loop.is_closed():
            coro.close()
            return
        if self._on_loop_thread():
            task = loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
            self._tasks.add(future)
            future.add_done_callback(self._tasks.discard)

    def _request_commit(self, writer: StreamWriter) -> None:
        if self._commit_requested:
            return
        self._commit_requested = True
        self._schedule(self._commit(writer))

    async def _commit(self, writer: StreamWriter) -> None:
        self._commit_requested = False  # writes from here on ask for another commit
        self._uncommitted = False
        try:
            await writer.commit()
        except RunstoreError as exc:
            _report(f"log records of run {self._core.run_id!r} may not be durable", exc)

    async def aflush(self) -> None:
        """Make every record emitted so far durable (from inside the run's event loop)."""
        for pending in list(self._tasks):
            if isinstance(pending, asyncio.Future):
                await pending
            else:
                await asyncio.wrap_future(pending)
        writer = self._core.writers.get(self.stream)
        if writer is not None:
            await writer.commit()

    def flush(self) -> None:
        """Make every record emitted so far durable; returns when they are.

        From the run's own event-loop thread it cannot wait: it requests a
        commit and returns (use ``await handler.aflush()`` there).
        """
        loop = self._loop_now()
        if loop is None or loop.is_closed() or not loop.is_running():
            return
        if self._on_loop_thread():
            writer = self._core.writers.get(self.stream)
            if writer is not None and self._uncommitted:
                self._request_commit(writer)
            return
        try:
            asyncio.run_coroutine_threadsafe(self.aflush(), loop).result()
        except RunstoreError as exc:
            _report(f"log records of run {self._core.run_id!r} may not be durable", exc)

    def close(self) -> None:
        """Flush and detach from logging (the run and its stream stay open)."""
        try:
            self.flush()
        finally:
            super().close()

    # -- context manager: ``with capture(run):`` / ``async with capture(run):`` -------

    _logger: logging.Logger | None = None
    _restore_level: int | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    async def __aenter__(self) -> Self:
        if (
            self._portal is None
            and self._core.writers.get(self.stream) is None
            and not self._core.released
        ):
            await self._core.open_writer(self.stream)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._unhook()
        await self.aflush()
        logging.Handler.close(self)

    def attach(self, logger: logging.Logger, level: int) -> None:
        """Add the handler to ``logger``, lowering its level to ``level`` if it is higher."""
        self._logger = logger
        if logger.getEffectiveLevel() > level:
            self._restore_level = logger.level
            logger.setLevel(level)
        logger.addHandler(self)

    def detach(self) -> None:
        """Remove the handler from the logger ``capture`` added it to (restoring the
        logger's level), then flush and close it."""
        self._unhook()
        self.close()

    def _unhook(self) -> None:
        logger, self._logger = self._logger, None
        if logger is not None:
            logger.removeHandler(self)
            if self._restore_level is not None:
                logger.setLevel(self._restore_level)
                self._restore_level = None


_FORMATTER: Final = logging.Formatter()


def _report(what: str, exc: BaseException) -> None:
    """A problem the logging call cannot raise: one line on stderr, like logging's own."""
    try:
        sys.stderr.write(f"runstore.logging: {what}: {exc}\n")
    except Exception:  # noqa: S110 - stderr closed at shutdown: nowhere left to say it
        pass


def capture(
    run: Run | AsyncRun,
    logger: logging.Logger | str | None = None,
    level: int | str = logging.INFO,
    *,
    stream: str = "logs",
) -> RunLogHandler:
    """Send ``logger``'s records (default: the root logger) at ``level`` and above to ``run``.

    Returns the installed :class:`RunLogHandler`; use it as a context manager
    (``with`` for a sync run, ``async with`` for an async one) to remove it at
    the end of the block, or call ``handler.detach()``. If the logger's level
    would filter out records at ``level``, it is lowered to ``level`` while
    captured and restored afterwards (other handlers on that logger then see
    those records too; give them a level to keep them quiet).
    """
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise InvalidInputError(f"unknown logging level {level!r}", details={"level": level})
        level = resolved
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
    handler = RunLogHandler(run, level, stream=stream)
    handler.attach(target, level)
    return handler
