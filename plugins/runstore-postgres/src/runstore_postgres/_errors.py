"""psycopg's errors as runstore's: one translation table, always ``raise ... from``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg

from runstore.model.errors import (
    BackendUnavailableError,
    InvalidInputError,
    PermissionDeniedError,
    RunstoreError,
    StorageIOError,
)

__all__ = ["translate", "translating"]


def translate(exc: BaseException, what: str, **details: Any) -> RunstoreError:
    """The runstore error for a psycopg (or pool) error met while doing ``what``."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        details = {**details, "sqlstate": sqlstate}
    if isinstance(exc, pg.InsufficientPrivilege | pg.InvalidAuthorizationSpecification):
        return PermissionDeniedError(
            f"{what}: PostgreSQL refused access: {reason}", details=details
        )
    if isinstance(exc, pg.InvalidPassword):
        return PermissionDeniedError(f"{what}: {reason}", details=details)
    if isinstance(exc, pg.ProgramLimitExceeded | pg.DataException):
        return InvalidInputError(f"{what}: PostgreSQL refused the value: {reason}", details=details)
    # Connection refused or lost, server shutting down, pool timeouts (PoolTimeout
    # and PoolClosed are OperationalErrors too).
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return BackendUnavailableError(
            f"{what}: PostgreSQL is unreachable: {reason}; nothing was acknowledged",
            details=details,
        )
    return StorageIOError(f"{what}: PostgreSQL error: {reason}", details=details)


@contextmanager
def translating(what: str, **details: Any) -> Iterator[None]:
    """Turn psycopg errors raised in the block into runstore errors."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc, what, **details) from exc
