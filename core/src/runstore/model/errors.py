"""The exceptions runstore raises.

Every error derives from :class:`RunstoreError` and carries a stable ``code``,
a human ``message`` (what happened and what to do) and structured ``details``.
Each storage error also subclasses the builtin a Python user would reach for
(``except LookupError`` catches a missing run), so runstore fits into code
that knows nothing about it.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AlreadyExistsError",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "ConflictError",
    "CorruptError",
    "InvalidInputError",
    "NotFoundError",
    "PermissionDeniedError",
    "PluginError",
    "RunstoreError",
    "StorageIOError",
    "UnsupportedError",
]


class RunstoreError(Exception):
    """Root of every error runstore raises.

    :ivar code: stable machine-readable code (``not_found``, ``conflict``, ...).
    :ivar message: what happened and what to do about it.
    :ivar details: structured context (run id, artifact name, backend, ...).
    """

    code: ClassVar[str] = "error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.details))

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON-ready data (what ``--json`` CLI output prints)."""
        return {"code": self.code, "message": self.message, "details": self.details}


def _rebuild(cls: type[RunstoreError], message: str, details: dict[str, Any]) -> RunstoreError:
    return cls(message, details=details)


class InvalidInputError(RunstoreError, ValueError):
    """A name, record, option or config string was refused; nothing was written."""

    code = "invalid_input"


class NotFoundError(RunstoreError, LookupError):
    """The run, stream or artifact does not exist."""

    code = "not_found"


class AlreadyExistsError(RunstoreError, FileExistsError):
    """A create-only write found the target already present (e.g. a run id)."""

    code = "already_exists"


class ConflictError(RunstoreError):
    """A write lost a race or contradicts what is stored.

    Raised for a stale state revision (compare-and-swap) and for an artifact
    re-written with different bytes.
    """

    code = "conflict"


class BackendNotFoundError(RunstoreError, LookupError):
    """No installed backend claims the config string's scheme."""

    code = "backend_not_found"


class BackendUnavailableError(RunstoreError, ConnectionError):
    """The backend could not be reached (timeout, connection refused, 5xx)."""

    code = "backend_unavailable"


class CorruptError(RunstoreError, ValueError):
    """Stored data does not parse or does not match its recorded hash."""

    code = "corrupt"


class PermissionDeniedError(RunstoreError, PermissionError):
    """The backend refused access."""

    code = "permission_denied"


class UnsupportedError(RunstoreError, NotImplementedError):
    """The backend lacks a capability the operation needs."""

    code = "unsupported"


class StorageIOError(RunstoreError, OSError):
    """The operating system failed an I/O call (ENOSPC, EIO, ...); nothing was acknowledged."""

    code = "io_error"


class PluginError(RunstoreError):
    """A plugin is broken: unknown hook implementation, bad registration, import failure."""

    code = "plugin_error"
