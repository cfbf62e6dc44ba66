"""Test node ids as runstore instance ids: a reversible, documented encoding.

An instance's artifacts are stored under ``<instance_id>/...``, so an instance
id must be a single artifact-name component: no ``/``, backslash, ``#``,
``%``-escape or control character, at most 255 bytes. A pytest node id
(``tests/test_shop.py::test_total[eur/usd]``) breaks several of these rules.

The encoding keeps ``A-Z a-z 0-9 . _ - : [ ] ( ) , = + @ !`` as they are and
writes every other character as ``~XX`` per byte of its UTF-8 form (upper-case
hex): ``/`` is ``~2F``, a space ``~20``, ``~`` itself ``~7E``, ``é`` ``~C3~A9``.
So ``tests/test_shop.py::test_total[eur/usd]`` is stored as
``tests~2Ftest_shop.py::test_total[eur~2Fusd]`` and decodes back exactly.
The result is plain ASCII, safe in file names, object keys and URLs.

An encoding longer than :data:`MAX_INSTANCE_ID_BYTES` is shortened to its
first part, ``~~`` and 16 hex digits of the node id's sha256; ``~~`` never
appears otherwise, so such an id cannot be mistaken for an encoded one and
:func:`decode_instance_id` refuses it. Every instance record also carries the
node id itself in its ``nodeid`` field, which is what to read in that case.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

__all__ = ["MAX_INSTANCE_ID_BYTES", "decode_instance_id", "encode_nodeid"]

MAX_INSTANCE_ID_BYTES: Final = 200
"""Longest instance id written; longer encodings are shortened with a digest."""

_SAFE: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-:[](),=+@!"
)
_ESCAPE: Final = re.compile(r"~([0-9A-F]{2})")
_ENCODED: Final = re.compile(r"(?:[A-Za-z0-9._\-:\[\](),=+@!]|~[0-9A-F]{2})+")
_DIGEST_CHARS: Final = 16
_KEEP: Final = MAX_INSTANCE_ID_BYTES - 2 - _DIGEST_CHARS


def _escape(char: str) -> str:
    return "".join(f"~{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


def encode_nodeid(nodeid: str) -> str:
    """The instance id of a pytest node id (see the module docs for the rules)."""
    parts = [char if char in _SAFE else _escape(char) for char in nodeid]
    if len(parts) > 1 and parts[1] == ":" and parts[0].isalpha():
        parts[1] = "~3A"  # 'c:...' would read as a drive letter
    if nodeid in (".", ".."):  # never a '.' or '..' path component
        parts = [_escape(char) for char in nodeid]
    encoded = "".join(parts)
    if encoded and len(encoded) <= MAX_INSTANCE_ID_BYTES:
        return encoded
    digest = hashlib.sha256(nodeid.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_CHARS]
    head, size = [], 0
    for part in parts:  # cut on a character boundary, never inside an escape
        if size + len(part) > _KEEP:
            break
        head.append(part)
        size += len(part)
    return f"{''.join(head)}~~{digest}"


def decode_instance_id(instance_id: str) -> str:
    """The pytest node id an instance id was encoded from.

    Raises :class:`runstore.InvalidInputError` for an id this encoding did not
    produce, or one shortened with a digest (read the record's ``nodeid``).
    """
    from runstore import InvalidInputError

    if "~~" in instance_id:
        raise InvalidInputError(
            f"instance id {instance_id!r} was shortened with a digest: "
            "read the node id from its record's 'nodeid' field",
            details={"instance_id": instance_id},
        )
    if not _ENCODED.fullmatch(instance_id):
        raise InvalidInputError(
            f"{instance_id!r} is not an encoded pytest node id: it holds characters "
            "outside A-Z a-z 0-9 . _ - : [ ] ( ) , = + @ ! and ~XX escapes",
            details={"instance_id": instance_id},
        )
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), instance_id)
    try:
        return raw.encode("latin-1").decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise InvalidInputError(
            f"instance id {instance_id!r} has escapes that are not UTF-8",
            details={"instance_id": instance_id},
        ) from None
