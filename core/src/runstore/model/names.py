"""Validation of run ids, stream names and artifact names.

Names are rejected, never normalised: a name either round-trips exactly or
raises :class:`~runstore.model.errors.InvalidInputError` before anything is written.
"""

from __future__ import annotations

import re
from typing import Final

from runstore.model.errors import InvalidInputError

__all__ = [
    "MAX_ARTIFACT_COMPONENTS",
    "MAX_ARTIFACT_NAME_BYTES",
    "MAX_COMPONENT_BYTES",
    "RESERVED_STREAMS",
    "validate_artifact_name",
    "validate_run_id",
    "validate_stream_name",
]

_RUN_ID: Final = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,127}")
_STREAM: Final = re.compile(r"[a-z0-9][a-z0-9_\-]{0,63}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 controls
_PERCENT_ESCAPE: Final = re.compile(r"%[0-9A-Fa-f]{2}")
_DRIVE: Final = re.compile(r"[A-Za-z]:")

MAX_ARTIFACT_COMPONENTS: Final = 32
MAX_COMPONENT_BYTES: Final = 255
MAX_ARTIFACT_NAME_BYTES: Final = 1024

RESERVED_STREAMS: Final = frozenset({"artifacts"})
"""Streams runstore writes itself; ``append`` to them is refused."""


def validate_run_id(run_id: object) -> str:
    """Return ``run_id`` if it is a valid run id, else raise ``invalid_input``.

    Valid: 1-128 characters of ``a-z 0-9 _ - .``, starting with a letter or
    digit, without ``..``.
    """
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise InvalidInputError(
            f"invalid run id {run_id!r}: use 1-128 characters of a-z, 0-9, '_', '-', '.', "
            "starting with a letter or digit, without '..'",
            details={"run_id": repr(run_id)},
        )
    return run_id


def validate_stream_name(stream: object, *, allow_reserved: bool = False) -> str:
    """Return ``stream`` if it is a valid stream name, else raise ``invalid_input``.

    Valid: 1-64 characters of ``a-z 0-9 _ -``, starting with a letter or digit.
    The stream is stored as ``<stream>.jsonl``.
    """
    if not isinstance(stream, str) or not _STREAM.fullmatch(stream):
        raise InvalidInputError(
            f"invalid stream name {stream!r}: use 1-64 characters of a-z, 0-9, '_', '-', "
            "starting with a letter or digit",
            details={"stream": repr(stream)},
        )
    if stream in RESERVED_STREAMS and not allow_reserved:
        raise InvalidInputError(
            f"stream {stream!r} is written by runstore itself; choose another name",
            details={"stream": stream},
        )
    return stream


def _refuse(name: object, why: str) -> InvalidInputError:
    return InvalidInputError(
        f"invalid artifact name {name!r}: {why}; "
        "use a relative POSIX path such as 'inst_001/step_001_request.json'",
        details={"name": repr(name), "reason": why},
    )


def validate_artifact_name(name: object) -> str:
    """Return ``name`` if it is a valid artifact name, else raise ``invalid_input``.

    Valid: a relative POSIX path of at most 32 components, 255 bytes a
    component and 1024 bytes in all, with no empty, ``.`` or ``..``
    component, no backslash, drive letter, NUL or control character, ``#``
    or ``%``-escape.
    """
    if not isinstance(name, str):
        raise _refuse(name, "not a string")
    if not name:
        raise _refuse(name, "empty")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(name, "not valid UTF-8 (lone surrogate)") from None
    if len(encoded) > MAX_ARTIFACT_NAME_BYTES:
        raise _refuse(name, f"longer than {MAX_ARTIFACT_NAME_BYTES} bytes")
    if _CONTROL.search(name):
        raise _refuse(name, "contains NUL or a control character")
    if "\\" in name:
        raise _refuse(name, "contains a backslash")
    if "#" in name:
        raise _refuse(name, "contains '#'")
    if _PERCENT_ESCAPE.search(name):
        raise _refuse(name, "contains a %-escape")
    if name.startswith("/"):
        raise _refuse(name, "is absolute")
    if _DRIVE.match(name):
        raise _refuse(name, "starts with a drive letter")
    parts = name.split("/")
    if len(parts) > MAX_ARTIFACT_COMPONENTS:
        raise _refuse(name, f"has more than {MAX_ARTIFACT_COMPONENTS} components")
    for part in parts:
        if part in ("", ".", ".."):
            raise _refuse(name, f"has an empty, '.' or '..' component ({part!r})")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise _refuse(name, f"has a component longer than {MAX_COMPONENT_BYTES} bytes")
    return name
