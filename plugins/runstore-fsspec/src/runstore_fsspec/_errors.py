"""One table from storage-library exceptions to runstore's typed errors.

Every call into botocore, s3fs or an fsspec filesystem goes through
:func:`translating`, which re-raises what it catches as a
:class:`~runstore.model.errors.RunstoreError` (``raise ... from exc``, so the
original stays attached as ``__cause__``). A failed precondition (an
``If-None-Match``/``If-Match`` write that lost, or a create-only write that
found the key) becomes the internal :class:`PreconditionFailed`, which the
backend turns into ``already_exists`` or ``conflict`` depending on what it was
doing.

Retries happen below this layer: botocore's ``standard`` retry mode retries
connection errors, timeouts, 5xx and throttling with exponential backoff and
jitter (``retries`` option, default 3 attempts). Conditional writes are safe
to retry because the backend re-reads the key after a ``412`` and accepts it
when it holds exactly the bytes it sent (its own earlier attempt landed).
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from runstore.model.errors import (
    BackendUnavailableError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RunstoreError,
    StorageIOError,
)

__all__ = ["PreconditionFailed", "translate", "translating"]


class PreconditionFailed(Exception):
    """A conditional write did not apply: the key exists, or its ETag moved on."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


# S3 error codes (ClientError.response["Error"]["Code"]) -> runstore error class.
_S3_CODES: Final[dict[str, type[RunstoreError] | None]] = {
    "NoSuchKey": NotFoundError,
    "NotFound": NotFoundError,
    "404": NotFoundError,
    "NoSuchBucket": NotFoundError,
    "NoSuchUpload": NotFoundError,
    "AccessDenied": PermissionDeniedError,
    "403": PermissionDeniedError,
    "AllAccessDisabled": PermissionDeniedError,
    "InvalidAccessKeyId": PermissionDeniedError,
    "SignatureDoesNotMatch": PermissionDeniedError,
    "ExpiredToken": PermissionDeniedError,
    "InvalidToken": PermissionDeniedError,
    "AccountProblem": PermissionDeniedError,
    "InvalidBucketName": InvalidInputError,
    "KeyTooLongError": InvalidInputError,
    "PreconditionFailed": None,  # -> PreconditionFailed
    "412": None,
    "ConditionalRequestConflict": None,
    "SlowDown": BackendUnavailableError,
    "Throttling": BackendUnavailableError,
    "ThrottlingException": BackendUnavailableError,
    "RequestTimeout": BackendUnavailableError,
    "RequestTimeTooSkewed": BackendUnavailableError,
    "ServiceUnavailable": BackendUnavailableError,
    "InternalError": BackendUnavailableError,
    "503": BackendUnavailableError,
    "500": BackendUnavailableError,
    "502": BackendUnavailableError,
    "504": BackendUnavailableError,
}

# Builtin exception classes (s3fs and fsspec filesystems speak OSError) -> runstore.
# Checked in order, so subclasses come before their bases.
_OS_ERRORS: Final[tuple[tuple[type[BaseException], type[RunstoreError] | None], ...]] = (
    (FileExistsError, None),
    (FileNotFoundError, NotFoundError),
    (PermissionError, PermissionDeniedError),
    (IsADirectoryError, ConflictError),
    (NotADirectoryError, ConflictError),
    (TimeoutError, BackendUnavailableError),
    (asyncio.TimeoutError, BackendUnavailableError),
    (ConnectionError, BackendUnavailableError),
)

_CREDENTIAL_ERRORS: Final = frozenset(
    {
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "ProfileNotFound",
        "NoAuthTokenError",
        "UnauthorizedSSOTokenError",
        "SSOTokenLoadError",
    }
)
CREDENTIALS_HELP: Final = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary "
    "keys), or AWS_PROFILE naming a profile of ~/.aws/credentials or ~/.aws/config, or pass "
    "them in the store URL (?profile=NAME, or ?key=...&secret=...); ?anon=true reads a "
    "public bucket without credentials"
)
"""What a missing or unloadable credential error tells the user to check."""

_UNAVAILABLE_ERRNOS: Final = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETDOWN}
)


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exception classes of the optional S3 stack."""
    found: list[type[BaseException]] = []
    try:
        from botocore.exceptions import (
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            HTTPClientError,
            ReadTimeoutError,
        )

        found += [
            EndpointConnectionError,
            ConnectionClosedError,
            ConnectTimeoutError,
            ReadTimeoutError,
            HTTPClientError,
        ]
    except ImportError:  # pragma: no cover - s3 extra not installed
        pass
    try:
        import aiohttp

        found.append(aiohttp.ClientError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(found)


def _client_error(exc: BaseException) -> tuple[str, int] | None:
    """``(code, http_status)`` of a botocore ``ClientError``, else ``None``."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict) or "Error" not in response:
        return None
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def translate(exc: BaseException, *, op: str, key: str) -> RunstoreError | PreconditionFailed:
    """The runstore error for ``exc``, raised while doing ``op`` on ``key``."""
    if isinstance(exc, RunstoreError | PreconditionFailed):
        return exc
    details: dict[str, Any] = {"operation": op, "key": key, "error": repr(exc)}
    client = _client_error(exc)
    if client is not None:
        code, status = client
        details["s3_code"] = code
        if code in _S3_CODES:
            cls = _S3_CODES[code]
        elif str(status) in _S3_CODES:
            cls = _S3_CODES[str(status)]
        else:
            cls = BackendUnavailableError if status >= 500 else StorageIOError
        if cls is None or status == 412:
            return PreconditionFailed(key)
        if code == "NoSuchBucket":
            return NotFoundError(
                f"{op} {key}: the bucket does not exist; create it first "
                "(runstore does not create buckets)",
                details=details,
            )
        return cls(f"{op} {key}: {exc}", details=details)
    if type(exc).__name__ in _CREDENTIAL_ERRORS:  # botocore's, matched by name (extra optional)
        return PermissionDeniedError(
            f"{op} {key}: no usable S3 credentials ({type(exc).__name__}: {exc}): "
            f"{CREDENTIALS_HELP}",
            details=details,
        )
    for kind, target in _OS_ERRORS:
        if isinstance(exc, kind):
            if target is None:
                return PreconditionFailed(key)
            return target(f"{op} {key}: {exc}", details=details)
    if isinstance(exc, _network_errors()):
        return BackendUnavailableError(
            f"{op} {key}: the storage service is unreachable ({exc}); "
            "check the endpoint and that the service is up, then retry",
            details=details,
        )
    if isinstance(exc, OSError):
        if exc.errno in _UNAVAILABLE_ERRNOS:
            return BackendUnavailableError(f"{op} {key}: {exc}", details=details)
        return StorageIOError(f"{op} {key}: {exc}", details=details)
    return StorageIOError(f"{op} {key}: unexpected storage error {exc!r}", details=details)


@contextmanager
def translating(op: str, key: str) -> Iterator[None]:
    """Re-raise any storage exception inside the block as its runstore error."""
    try:
        yield
    except (RunstoreError, PreconditionFailed):
        raise
    except Exception as exc:
        raise translate(exc, op=op, key=key) from exc
