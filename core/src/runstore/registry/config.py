"""Config strings: which backend serves a store, and with which options.

=====================================================  ==============================
string                                                 backend
=====================================================  ==============================
``runs``, ``./runs``, ``/abs/runs``, ``file:///abs``   ``local`` (runstore-local)
``s3://bucket/prefix``, ``gs://...``, any fsspec URL   ``fsspec`` (runstore-fsspec)
``memory://name``                                      ``memory`` (built in)
``fsspec+file:///data/runs``                           force the named backend
=====================================================  ==============================

Query parameters become backend options (``s3://b/p?endpoint_url=...``);
keyword options given in code win over them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from runstore.model.errors import BackendNotFoundError, InvalidInputError
from runstore.spi.backends import BackendSpec, Target

__all__ = [
    "DEFAULT_STORE",
    "PROVIDERS",
    "STORE_ENV",
    "default_store_url",
    "parse_target",
    "select_backend",
]

STORE_ENV: Final = "RUNSTORE_URL"
DEFAULT_STORE: Final = "./runs"

_SCHEME: Final = re.compile(r"([a-z][a-z0-9.\-]*)(?:\+([a-z][a-z0-9.\-]*))?://", re.IGNORECASE)

PROVIDERS: Final[Mapping[str, str]] = {
    "file": "runstore-local",
    "s3": "runstore-fsspec[s3]",
    "s3a": "runstore-fsspec[s3]",
    "gs": "runstore-fsspec[gcs]",
    "gcs": "runstore-fsspec[gcs]",
    "az": "runstore-fsspec[azure]",
    "abfs": "runstore-fsspec[azure]",
    "abfss": "runstore-fsspec[azure]",
}
"""The package (with its extra) that serves a URL scheme: what "not installed" messages name."""


_URL_SCHEMES: Final = frozenset({*PROVIDERS, "memory"})
"""Schemes whose "scheme:path" (without "//") is a mistyped URL, not a folder name."""


def default_store_url() -> str:
    """``$RUNSTORE_URL`` if set, else ``./runs``."""
    return os.environ.get(STORE_ENV) or DEFAULT_STORE


def _coerce(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def parse_target(url: str, options: dict[str, Any] | None = None) -> tuple[str | None, Target]:
    """Split a config string into ``(forced backend name or None, Target)``."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInputError(
            f"invalid store {url!r}: give a path ('./runs') or a URL ('s3://bucket/prefix')",
            details={"url": repr(url)},
        )
    merged: dict[str, Any] = {}
    match = _SCHEME.match(url)
    if match is None:
        scheme, colon, _ = url.partition(":")
        if colon and scheme.lower() in _URL_SCHEMES:
            # "file:/data/x" or "s3:bucket": a URL missing its "//", not a folder named "file:"
            raise InvalidInputError(
                f"invalid store URL {url!r}: a URL needs '//' after its scheme "
                "(file:///abs/path, s3://bucket/prefix); a path needs no scheme",
                details={"url": url},
            )
        # A bare path: the local filesystem. Query strings are not parsed here,
        # '?' is a legal file name character.
        path = os.path.abspath(os.path.expanduser(url))
        merged.update(options or {})
        return None, Target(url=path, scheme="file", path=path, options=merged)
    first, second = match.group(1).lower(), match.group(2)
    forced, scheme = (first, second.lower()) if second else (None, first)
    rest = url[match.end() :]
    parts = urlsplit(f"{scheme}://{rest}")
    merged.update((k, _coerce(v)) for k, v in parse_qsl(parts.query, keep_blank_values=True))
    merged.update(options or {})
    base = f"{scheme}://{parts.netloc}{parts.path}"
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidInputError(
                f"invalid file URL {url!r}: use file:///absolute/path",
                details={"url": url},
            )
        # file URLs percent-encode (Path.as_uri() turns ' ' into %20): decode.
        path = os.path.abspath(unquote(parts.path) or "/")
    else:
        path = f"{parts.netloc}{parts.path}"
    return forced, Target(url=base, scheme=scheme, path=path, options=merged)


def select_backend(
    forced: str | None, target: Target, backends: dict[str, BackendSpec]
) -> BackendSpec:
    """Pick the backend for ``target``: forced by name, by claimed scheme, or a fallback."""
    installed = (
        ", ".join(f"{s.name} ({', '.join(s.schemes) or 'any'})" for s in backends.values())
        or "none"
    )
    if forced is not None:
        spec = backends.get(forced)
        if spec is None:
            raise BackendNotFoundError(
                f"no backend named {forced!r} is installed (installed: {installed}); "
                f"install the package that provides it, e.g. runstore-{forced}",
                details={"backend": forced, "installed": sorted(backends)},
            )
        return spec
    for spec in backends.values():
        if target.scheme in spec.schemes:
            return spec
    for spec in backends.values():
        if spec.fallback and (spec.accepts is None or spec.accepts(target.scheme)):
            return spec
    provider = PROVIDERS.get(target.scheme)
    hint = f"install {provider}" if provider else "install a runstore plugin that provides it"
    raise BackendNotFoundError(
        f"no installed backend handles {target.scheme}:// (installed: {installed}); {hint}",
        details={"scheme": target.scheme, "installed": sorted(backends), "package": provider},
    )
