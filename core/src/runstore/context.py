"""Correlation context: which run, instance and step the current code works for.

A :class:`Correlation` lives in a :mod:`contextvars` variable, so it follows
the code that set it: into nested calls, into asyncio tasks created inside
it (tasks copy the context when they are created), and through the sync
API's private event loop. Threads start with an empty context: pass
``contextvars.copy_context().run`` to a thread or executor to carry it along.

Set it with the run's scopes (sync ``with`` or ``async with``, on
:class:`runstore.Run` and :class:`runstore.aio.AsyncRun` alike)::

    with run.instance("inst_001"):
        with run.step("login"):
            run.append("steps", {"step_name": "login"})
            # stored as {"step_name": "login", "instance_id": "inst_001", "step_id": "login"}

or with :func:`bind` where no run object is at hand. While a scope is active,
every record appended to the run (``append``, ``log``, typed streams, the
:mod:`runstore.logging` handler) gets the ids it does not already have:
``instance_id``, ``step_id`` and ``trace_id``. The run id is not added (the
record is stored in that run); a scope opened for one run never adds ids to
records of another run. Outside any scope appends pay for one context-variable
lookup and nothing else.

``trace_id`` is the id given to the scope (or inherited from the enclosing
one); without one, and if the program uses OpenTelemetry (``opentelemetry.trace``
is imported), the current span's trace id, as 32 hex digits. runstore never
generates random ids, so two runs with the same seed stay identical.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar, Token
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Final

from pydantic import BaseModel

__all__ = [
    "CORRELATION_KEYS",
    "Correlation",
    "Scope",
    "bind",
    "correlate",
    "current",
    "current_fields",
]

CORRELATION_KEYS: Final = ("instance_id", "step_id", "trace_id")
"""The keys a scope adds to records, in this order."""


@dataclass(frozen=True, slots=True)
class Correlation:
    """The ids that tie what the current code does to a run."""

    run_id: str | None = None
    instance_id: str | None = None
    step_id: str | None = None
    trace_id: str | None = None

    def fields(self) -> dict[str, str]:
        """The ids records get: ``instance_id``, ``step_id``, ``trace_id`` that are known.

        ``trace_id`` falls back to the current OpenTelemetry trace id.
        """
        out: dict[str, str] = {}
        if self.instance_id is not None:
            out["instance_id"] = self.instance_id
        if self.step_id is not None:
            out["step_id"] = self.step_id
        trace_id = self.trace_id if self.trace_id is not None else otel_trace_id()
        if trace_id is not None:
            out["trace_id"] = trace_id
        return out


_current: ContextVar[Correlation | None] = ContextVar("runstore_correlation", default=None)

active = _current.get
"""``active()``: the current :class:`Correlation` or ``None`` (the hot-path check)."""


def current() -> Correlation | None:
    """The correlation of the current context, ``None`` outside every scope."""
    return _current.get()


def current_fields() -> dict[str, str]:
    """``run_id`` and the ids records get, for your own log formatters or spans.

    Empty outside every scope.
    """
    ctx = _current.get()
    if ctx is None:
        return {}
    fields = ctx.fields()
    return {"run_id": ctx.run_id, **fields} if ctx.run_id is not None else fields


def otel_trace_id() -> str | None:
    """The current OpenTelemetry trace id (32 hex digits), if the program uses OpenTelemetry.

    Looked up only when ``opentelemetry.trace`` is already imported: runstore
    does not depend on OpenTelemetry and never imports it.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    try:
        span_context = trace.get_current_span().get_span_context()
        if not span_context.is_valid:
            return None
        return format(span_context.trace_id, "032x")
    except Exception:  # a broken tracer must never break an append
        return None


class Scope:
    """A context manager that sets the correlation while its block runs.

    Works as ``with scope:`` and ``async with scope:`` and may be re-entered;
    entering returns the :class:`Correlation` now in effect.
    """

    __slots__ = ("_changes", "_tokens")

    def __init__(self, **changes: str | None) -> None:
        self._changes = changes
        self._tokens: list[Token[Correlation | None]] = []

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self._changes.items() if v is not None)
        return f"<runstore.context.Scope {given}>"

    def __enter__(self) -> Correlation:
        base = _current.get() or Correlation()
        changes = dict(self._changes)
        if changes.get("trace_id") is None:
            changes.pop("trace_id", None)  # inherit the enclosing trace id
        if changes.get("run_id") is None:
            changes.pop("run_id", None)
        elif changes["run_id"] != base.run_id:
            # Another run: its instance and step do not carry over.
            base = Correlation(trace_id=base.trace_id)
        correlation = replace(base, **changes)
        self._tokens.append(_current.set(correlation))
        return correlation

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _current.reset(self._tokens.pop())

    async def __aenter__(self) -> Correlation:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def bind(
    *,
    run_id: str | None = None,
    instance_id: str | None = None,
    step_id: str | None = None,
    trace_id: str | None = None,
) -> Scope:
    """A scope that sets the given ids and keeps the others from the enclosing scope.

    ``run.instance(id)`` and ``run.step(id)`` are the usual way in; ``bind``
    serves code that has no run object, e.g. a worker that only knows its
    trace id: ``with runstore.context.bind(trace_id=request_id): ...``.
    """
    given = {"run_id": run_id, "instance_id": instance_id, "step_id": step_id, "trace_id": trace_id}
    return Scope(**{k: v for k, v in given.items() if v is not None})


def instance_scope(run_id: str, instance_id: str, trace_id: str | None = None) -> Scope:
    """The scope of ``run.instance(instance_id)``: a new instance has no step yet."""
    return Scope(run_id=run_id, instance_id=instance_id, step_id=None, trace_id=trace_id)


def step_scope(run_id: str, step_id: str, trace_id: str | None = None) -> Scope:
    """The scope of ``run.step(step_id)``: keeps the enclosing instance."""
    return Scope(run_id=run_id, step_id=step_id, trace_id=trace_id)


def correlate(run_id: str, record: Any) -> Any:
    """``record`` with the current ids it lacks (a new dict; ``record`` is not changed).

    Keys a dict already has, and fields a pydantic model was given, are never
    touched. A scope of another run adds nothing. Anything that is not a dict
    or model is returned as is (``append`` then reports it).
    """
    ctx = _current.get()
    if ctx is None or (ctx.run_id is not None and ctx.run_id != run_id):
        return record
    ids = ctx.fields()
    if not ids:
        return record
    if isinstance(record, dict):
        missing = {k: v for k, v in ids.items() if k not in record}
        return {**record, **missing} if missing else record
    if isinstance(record, BaseModel):
        data = record.model_dump(mode="json")
        given = record.model_fields_set
        for key, value in ids.items():
            if key not in data or (data[key] is None and key not in given):
                data[key] = value
        return data
    return record
