"""Typed streams: pydantic models for the records of a run's JSONL streams.

The standard streams have models here (:class:`InstanceRecord`,
:class:`StepRecord`, :class:`AssertionRecord`, :class:`LogLine`); each allows
extra fields, so a harness adds its own without declaring them. Any stream,
standard or your own, can be written and read through a model::

    class PhaseOutput(BaseModel):
        phase: str
        artifact: str

    outputs = run.stream("phase_outputs", PhaseOutput)
    outputs.append({"phase": "translate", "artifact": "out/fr.json"})   # validated
    for output in store.get_run(run_id).stream("phase_outputs", PhaseOutput):
        output.phase                                                     # parsed

``append`` validates a dict (or accepts an instance of the model) and stores
it as JSON by alias. Optional fields left at a ``None`` default are not
written: a missing key and ``null`` read back the same, and lines stay short.
A record that does not match raises :class:`~runstore.model.errors.InvalidInputError`
and nothing is written.

:func:`schemas` exports a JSON Schema (draft 2020-12) for each standard stream,
for ``artifacts.jsonl`` and for the ``manifest``, ``state`` and ``summary``
documents, so tools in other languages can read the files;
``runstore schema`` prints or writes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from runstore.model.errors import CorruptError, InvalidInputError
from runstore.model.names import validate_stream_name
from runstore.model.streams import (
    DOCUMENTS,
    JSON_SCHEMA_DIALECT,
    STANDARD_STREAMS,
    AssertionRecord,
    InstanceRecord,
    LogLine,
    StepRecord,
    StreamRecord,
    schema,
    schema_of,
    schemas,
)

if TYPE_CHECKING:
    from runstore.aio import AsyncRun, AsyncRunView
    from runstore.store import Run, RunView

__all__ = [
    "DOCUMENTS",
    "JSON_SCHEMA_DIALECT",
    "STANDARD_STREAMS",
    "AssertionRecord",
    "AsyncTypedStream",
    "AsyncTypedStreamReader",
    "InstanceRecord",
    "LogLine",
    "StepRecord",
    "StreamRecord",
    "TypedStream",
    "TypedStreamReader",
    "schema",
    "schema_of",
    "schemas",
]

M = TypeVar("M", bound=BaseModel)


# -- validating and encoding ----------------------------------------------------------


def _error_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ".".join(str(part) for part in err["loc"]), "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False)
    ]


class _Codec(Generic[M]):
    """Validates records against ``model`` and turns them into what is stored."""

    __slots__ = ("_none_defaults", "model", "stream")

    def __init__(self, stream: str, model: type[M]) -> None:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise InvalidInputError(
                f"a typed stream needs a pydantic model class, got {model!r}",
                details={"stream": stream, "model": repr(model)},
            )
        self.stream = stream
        self.model = model
        self._none_defaults = frozenset(
            name
            for name, info in model.model_fields.items()
            if not info.is_required() and info.default is None and info.default_factory is None
        )

    def validate(self, record: M | Mapping[str, Any]) -> M:
        if isinstance(record, self.model):
            return record
        data = record.model_dump() if isinstance(record, BaseModel) else record
        try:
            return self.model.model_validate(data)
        except ValidationError as exc:
            details = _error_details(exc)
            first = details[0] if details else {"loc": "", "msg": str(exc)}
            where = f" at {first['loc']!r}" if first["loc"] else ""
            raise InvalidInputError(
                f"record for stream {self.stream!r} does not match {self.model.__name__}"
                f"{where}: {first['msg']}; nothing was written",
                details={"stream": self.stream, "model": self.model.__name__, "errors": details},
            ) from None

    def encode(self, obj: M) -> dict[str, Any]:
        unset = self._none_defaults.difference(obj.model_fields_set)
        return obj.model_dump(mode="json", by_alias=True, exclude=set(unset) if unset else None)

    def parse(self, line: bytes, number: int, run_id: str) -> M:
        """One stored line parsed in JSON mode (as JSON, so strict models work)."""
        try:
            return self.model.model_validate_json(line)
        except ValidationError as exc:
            details = _error_details(exc)
            if any(error["type"] == "json_invalid" for error in details):
                raise CorruptError(
                    f"{self.stream}.jsonl line {number} of run {run_id!r} is not valid JSON; "
                    "run 'runstore verify' to see every damaged record",
                    details={"run_id": run_id, "stream": self.stream, "line": number},
                ) from None
            first = details[0] if details else {"loc": "", "msg": str(exc)}
            raise InvalidInputError(
                f"record {number} of stream {self.stream!r} in run {run_id!r} does not match "
                f"{self.model.__name__} ({first['loc']}: {first['msg']}); "
                "read it untyped with view.read() to see it",
                details={
                    "run_id": run_id,
                    "stream": self.stream,
                    "record": number,
                    "model": self.model.__name__,
                    "errors": details,
                },
            ) from None


# -- handles ----------------------------------------------------------------------------


class TypedStream(Generic[M]):
    """Write side of a typed stream of a :class:`runstore.Run`: ``run.stream(name, Model)``."""

    def __init__(self, run: Run, name: str, model: type[M]) -> None:
        self.name = validate_stream_name(name)
        self.model = model
        self._run = run
        self._codec = _Codec(name, model)

    def __repr__(self) -> str:
        return f"<TypedStream {self.name!r} {self.model.__name__} of {self._run.run_id!r}>"

    def validate(self, record: M | Mapping[str, Any]) -> M:
        """``record`` as a model instance, or :class:`~runstore.model.errors.InvalidInputError`."""
        return self._codec.validate(record)

    def append(self, record: M | Mapping[str, Any]) -> M:
        """Validate ``record`` (a dict or a model instance) and append it; durable on return.

        Returns the validated model instance.
        """
        obj = self._codec.validate(record)
        self._run.append(self.name, self._codec.encode(obj))
        return obj


class AsyncTypedStream(Generic[M]):
    """Write side of a typed stream of an :class:`~runstore.aio.AsyncRun`."""

    def __init__(self, run: AsyncRun, name: str, model: type[M]) -> None:
        self.name = validate_stream_name(name)
        self.model = model
        self._run = run
        self._codec = _Codec(name, model)

    def __repr__(self) -> str:
        return f"<AsyncTypedStream {self.name!r} {self.model.__name__} of {self._run.run_id!r}>"

    def validate(self, record: M | Mapping[str, Any]) -> M:
        """``record`` as a model instance, or :class:`~runstore.model.errors.InvalidInputError`."""
        return self._codec.validate(record)

    async def append(self, record: M | Mapping[str, Any]) -> M:
        """Validate ``record`` and append it; durable on return. Returns the model instance."""
        obj = self._codec.validate(record)
        await self._run.append(self.name, self._codec.encode(obj))
        return obj


class TypedStreamReader(Generic[M]):
    """Read side of a typed stream of a :class:`runstore.RunView`: iterate it for models."""

    def __init__(self, view: RunView, name: str, model: type[M]) -> None:
        self.name = validate_stream_name(name, allow_reserved=True)
        self.model = model
        self._view = view
        self._codec = _Codec(name, model)

    def __repr__(self) -> str:
        return f"<TypedStreamReader {self.name!r} {self.model.__name__} of {self._view.run_id!r}>"

    def __iter__(self) -> Iterator[M]:
        return self.read()

    def read(self, *, follow: bool = False, poll_interval: float = 0.5) -> Iterator[M]:
        """Records parsed into the model, in order; ``follow`` as in ``view.read``.

        A record that does not match raises :class:`~runstore.model.errors.InvalidInputError`
        naming its position.
        """
        parse, run_id = self._codec.parse, self._view.run_id
        lines = self._view.read_lines(self.name, follow=follow, poll_interval=poll_interval)
        for number, line in enumerate(lines, start=1):
            yield parse(line, number, run_id)


class AsyncTypedStreamReader(Generic[M]):
    """Read side of a typed stream of an :class:`~runstore.aio.AsyncRunView`."""

    def __init__(self, view: AsyncRunView, name: str, model: type[M]) -> None:
        self.name = validate_stream_name(name, allow_reserved=True)
        self.model = model
        self._view = view
        self._codec = _Codec(name, model)

    def __repr__(self) -> str:
        return (
            f"<AsyncTypedStreamReader {self.name!r} {self.model.__name__} of {self._view.run_id!r}>"
        )

    def __aiter__(self) -> AsyncIterator[M]:
        return self.read()

    async def read(self, *, follow: bool = False, poll_interval: float = 0.5) -> AsyncIterator[M]:
        """Records parsed into the model, in order; ``follow`` as in ``view.read``."""
        parse, run_id = self._codec.parse, self._view.run_id
        number = 0
        lines = self._view.read_lines(self.name, follow=follow, poll_interval=poll_interval)
        async for line in lines:
            number += 1
            yield parse(line, number, run_id)
