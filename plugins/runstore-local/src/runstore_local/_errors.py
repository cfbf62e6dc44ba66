"""One table from OS and SQLite errors to runstore's typed errors.

Call sites wrap file-system and index calls in :func:`translating`, which
re-raises what it catches as a :class:`~runstore.model.errors.RunstoreError`
(``raise ... from exc``, so the original stays attached as ``__cause__``); the
append hot path calls :func:`translate` directly. A call site that gives one
error a meaning of its own (a missing snapshot is ``None``, a missing stream
is empty) catches it inside the block, before the table sees it.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from runstore.model import errors

__all__ = ["translate", "translating"]

_DENIED: Final = "permission denied ({strerror}); check the store directory's permissions"
_COLLIDE: Final = "a file and a directory of the same name collide"

# errno -> (runstore error class, the message after "<what>: ").
_BY_ERRNO: Final[dict[int, tuple[type[errors.RunstoreError], str]]] = {
    errno.ENOENT: (errors.NotFoundError, "not found"),
    errno.EACCES: (errors.PermissionDeniedError, _DENIED),
    errno.EPERM: (errors.PermissionDeniedError, _DENIED),
    errno.EROFS: (errors.PermissionDeniedError, _DENIED),
    errno.EEXIST: (errors.AlreadyExistsError, "already exists"),
    errno.ELOOP: (
        errors.InvalidInputError,
        "a symbolic link is in the way; runstore never follows links inside a store",
    ),
    errno.ENOTDIR: (errors.ConflictError, _COLLIDE),
    errno.EISDIR: (errors.ConflictError, _COLLIDE),
}
# Any other errno (ENOSPC, EIO, ...): the call failed before anything was acknowledged.
_OTHER_ERRNO: Final[tuple[type[errors.RunstoreError], str]] = (
    errors.StorageIOError,
    "{reason}; nothing was acknowledged, retry once the file system is healthy",
)


def translate(exc: OSError | sqlite3.Error, what: str, **details: object) -> errors.RunstoreError:
    """The typed runstore error for ``exc``, raised while doing ``what``."""
    if isinstance(exc, sqlite3.Error):
        # SQLite errors carry no errno, and the index is derived data: all are plain I/O.
        return errors.StorageIOError(f"{what}: {exc}", details=details)
    info = {**details, "errno": errno.errorcode.get(exc.errno or 0, str(exc.errno))}
    cls, text = _BY_ERRNO.get(exc.errno or 0, _OTHER_ERRNO)
    reason = text.format(strerror=exc.strerror, reason=exc.strerror or exc)
    return cls(f"{what}: {reason}", details=info)


@contextmanager
def translating(what: str, **details: object) -> Iterator[None]:
    """Re-raise an OS or SQLite error inside the block as its runstore error."""
    try:
        yield
    except errors.RunstoreError:
        raise  # already typed (some are OSErrors too: PermissionDeniedError, ...)
    except (OSError, sqlite3.Error) as exc:
        raise translate(exc, what, **details) from exc
