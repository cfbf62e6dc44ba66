"""Checking the caller's data before anything is written: metadata, tags, state, metrics.

Each check returns a clean copy of what it accepts (the caller may keep and
change its own objects afterwards) or raises
:class:`~runstore.model.errors.InvalidInputError`, and nothing is written.
JSON has no NaN or infinity: a non-finite number anywhere is refused, never
stored as ``null``.

Limits on metadata (documented in "Your own data"):

=========================  ==========
keys per run               64
key                        1-128 characters of ``A-Z a-z 0-9 _ . -``, starting
                           with a letter, digit or ``_``
a string value             4096 characters
a list value               256 scalars
the whole metadata (JSON)  64 KiB
=========================  ==========
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

import orjson
from pydantic import BaseModel

from runstore.model.errors import InvalidInputError
from runstore.model.run import Metadata, MetadataValue, Scalar, utcnow

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_METADATA_KEYS",
    "check_finite",
    "json_object",
    "metric_record",
    "string_list",
    "validate_metadata",
    "validate_metric",
    "validate_tags",
]

MAX_METADATA_KEYS: Final = 64
MAX_METADATA_BYTES: Final = 64 << 10
MAX_STRING: Final = 4096
MAX_LIST: Final = 256
MAX_STATE_BYTES: Final = 8 << 20
_KEY: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_TAG: Final = re.compile(r"[^\x00-\x1f\x7f]{1,128}")


def check_finite(value: Any, where: str) -> None:
    """Refuse NaN and infinities anywhere inside ``value`` (JSON cannot hold them)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(
                f"{where} is {value!r}: JSON has no NaN or infinity; nothing was written",
                details={"where": where, "value": repr(value)},
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_finite(item, f"{where}[{index}]")


def _scalar(value: Any, where: str) -> Scalar:
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise InvalidInputError(
                f"{where} is {len(value)} characters, over the limit of {MAX_STRING}",
                details={"where": where},
            )
        return value
    if isinstance(value, float):
        check_finite(value, where)
        return value
    raise InvalidInputError(
        f"{where} must be a JSON scalar (str, int, float, bool, None) or a list of them, "
        f"not {type(value).__name__}",
        details={"where": where, "type": type(value).__name__},
    )


def _value(value: Any, where: str) -> MetadataValue:
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST:
            raise InvalidInputError(
                f"{where} has {len(value)} items, over the limit of {MAX_LIST}",
                details={"where": where},
            )
        return [_scalar(item, f"{where}[{i}]") for i, item in enumerate(value)]
    return _scalar(value, where)


def validate_metadata(
    metadata: Mapping[str, Any] | None, *, base: Metadata | None = None
) -> Metadata:
    """``base`` updated with ``metadata``, checked against the rules and limits above."""
    if metadata is None:
        return dict(base or {})
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(
            f"metadata must be a mapping of keys to values, not {type(metadata).__name__}",
            details={"type": type(metadata).__name__},
        )
    merged: Metadata = dict(base or {})
    for key, value in metadata.items():
        if not isinstance(key, str) or _KEY.fullmatch(key) is None:
            raise InvalidInputError(
                f"invalid metadata key {key!r}: use 1-128 characters of A-Z a-z 0-9 _ . -, "
                "starting with a letter, digit or '_'",
                details={"key": repr(key)},
            )
        merged[key] = _value(value, f"metadata.{key}")
    if len(merged) > MAX_METADATA_KEYS:
        raise InvalidInputError(
            f"metadata has {len(merged)} keys, over the limit of {MAX_METADATA_KEYS}",
            details={"keys": len(merged), "limit": MAX_METADATA_KEYS},
        )
    size = len(orjson.dumps(merged))
    if size > MAX_METADATA_BYTES:
        raise InvalidInputError(
            f"metadata is {size} bytes as JSON, over the limit of {MAX_METADATA_BYTES}",
            details={"size": size, "limit": MAX_METADATA_BYTES},
        )
    return merged


def validate_tags(tags: Iterable[str], where: str = "tags") -> list[str]:
    """Tags as a list: strings of 1-128 printable characters; a lone string is refused."""
    if isinstance(tags, str | bytes) or not isinstance(tags, Iterable):
        raise InvalidInputError(
            f"{where} must be a list of strings such as ['nightly'], not {tags!r}",
            details={"field": where, "value": repr(tags)},
        )
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or _TAG.fullmatch(tag) is None:
            raise InvalidInputError(
                f"invalid tag {tag!r} in {where}: use 1-128 printable characters",
                details={"field": where, "tag": repr(tag)},
            )
        if tag not in out:
            out.append(tag)
    return out


def json_object(data: Mapping[str, Any] | BaseModel, where: str) -> dict[str, Any]:
    """A JSON object from a dict or a pydantic model (JSON mode), as it will be stored."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json", by_alias=True)
    if not isinstance(data, Mapping):
        raise InvalidInputError(
            f"{where} must be a JSON object (a dict or a pydantic model), "
            f"not {type(data).__name__}",
            details={"where": where, "type": type(data).__name__},
        )
    check_finite(dict(data), where)
    try:
        encoded = orjson.dumps(dict(data))
    except TypeError as exc:
        raise InvalidInputError(
            f"{where} is not JSON: {exc}; use str keys and JSON values",
            details={"where": where, "error": str(exc)},
        ) from None
    if len(encoded) > MAX_STATE_BYTES:
        raise InvalidInputError(
            f"{where} is {len(encoded)} bytes as JSON, over the limit of {MAX_STATE_BYTES}; "
            "store large data as an artifact",
            details={"size": len(encoded), "limit": MAX_STATE_BYTES},
        )
    loaded: dict[str, Any] = orjson.loads(encoded)  # a private copy, datetimes as strings
    return loaded


def validate_metric(name: object, value: object, where: str = "metric") -> tuple[str, float]:
    """A metric's name (like a metadata key) and its value as a finite float."""
    if not isinstance(name, str) or _KEY.fullmatch(name) is None:
        raise InvalidInputError(
            f"invalid {where} name {name!r}: use 1-128 characters of A-Z a-z 0-9 _ . -",
            details={"name": repr(name)},
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(
            f"{where} {name!r} must be a number, not {type(value).__name__}",
            details={"name": name, "type": type(value).__name__},
        )
    number = float(value)
    check_finite(number, f"{where} {name!r}")
    return name, number


def metric_record(name: object, value: object, step: object = None) -> dict[str, Any]:
    """The ``metrics`` stream line of ``run.log_metric``: name, finite value, int step, time."""
    name, number = validate_metric(name, value)
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise InvalidInputError(
            f"metric step must be an int, not {type(step).__name__}",
            details={"name": name, "step": repr(step)},
        )
    return {"name": name, "value": number, "step": step, "ts": utcnow()}


def string_list(field: str, value: Collection[str] | None) -> list[str] | None:
    """A list of strings from a collection; a lone string is refused, not split into letters."""
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidInputError(
            f"{field} must be a list of strings such as ['checkout'], not {value!r}",
            details={"field": field, "value": repr(value)},
        )
    return list(value)
