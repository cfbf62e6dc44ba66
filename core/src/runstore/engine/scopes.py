"""``run.instance(id)``: a correlation scope that also records an instance that raised.

When the block raises, and no record of the instance was appended inside it,
an ``error`` instance record (the exception's type, message and traceback)
is appended before the exception goes on: a harness that crashes mid-instance
still leaves the instance in ``instances.jsonl``, counted in the summary's
``error_count``.
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from runstore.context import Correlation, Scope
from runstore.model.errors import RunstoreError

if TYPE_CHECKING:
    from runstore.engine.core import RunCore

__all__ = ["InstanceScope"]

Append = Callable[[dict[str, Any]], None]
AppendAsync = Callable[[dict[str, Any]], Awaitable[None]]


class InstanceScope(Scope):
    """The scope of ``run.instance(id)``: a new instance has no step yet."""

    __slots__ = ("_append", "_append_async", "_core", "_instance_id")

    def __init__(
        self,
        core: RunCore,
        instance_id: str,
        trace_id: str | None,
        *,
        append: Append | None = None,
        append_async: AppendAsync | None = None,
    ) -> None:
        super().__init__(
            run_id=core.run_id, instance_id=instance_id, step_id=None, trace_id=trace_id
        )
        self._core = core
        self._instance_id = instance_id
        self._append = append
        self._append_async = append_async

    def __enter__(self) -> Correlation:
        self._core.open_instance(self._instance_id)
        return super().__enter__()

    def _error_record(
        self, exc_type: type[BaseException] | None, exc: BaseException | None
    ) -> dict[str, Any] | None:
        seen = self._core.close_instance(self._instance_id)
        if exc_type is None or exc is None or seen or not issubclass(exc_type, Exception):
            return None  # no error, recorded by the block, or an interrupt (not the instance's)
        return {
            "instance_id": self._instance_id,
            "status": "error",
            "error_type": exc_type.__name__,
            "error": str(exc),
            "traceback": "".join(traceback.format_exception(exc)),
        }

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        record = self._error_record(exc_type, exc)
        super().__exit__(exc_type, exc, tb)
        if record is not None and exc is not None and self._append is not None:
            try:
                self._append(record)
            except RunstoreError as failure:  # never hide the instance's own exception
                exc.add_note(f"runstore could not record the error instance: {failure}")

    async def __aenter__(self) -> Correlation:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._append_async is None:
            self.__exit__(exc_type, exc, tb)
            return
        record = self._error_record(exc_type, exc)
        Scope.__exit__(self, exc_type, exc, tb)
        if record is not None and exc is not None:
            try:
                await self._append_async(record)
            except RunstoreError as failure:
                exc.add_note(f"runstore could not record the error instance: {failure}")
