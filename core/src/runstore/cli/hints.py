"""Hints that work where the user is: install commands and store paths.

* :func:`install_hint`: how to install a package extra, in the form that fits
  how runstore itself was installed (from an index, or editable from a
  checkout: then the ``-e`` form with the real path).
* :func:`require_store`: a read command's check that a local store exists,
  before opening it would create it; a near path or the store of a run
  directory is suggested.
* :func:`explain`: an error rewritten for a person: an install hint added to
  a missing backend (the fsspec backend itself names what to set for S3 credentials).

No click, no rich: plain functions of paths and errors.
"""

from __future__ import annotations

import difflib
import functools
import os
import shlex
from importlib import metadata
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

import orjson

from runstore.model.errors import (
    BackendNotFoundError,
    InvalidInputError,
    NotFoundError,
    RunstoreError,
)
from runstore.registry.config import parse_target
from runstore.spi.layout import BOOKKEEPING_DIR, MANIFEST

__all__ = ["checkout_root", "explain", "install_hint", "require_store"]


# -- install hints ------------------------------------------------------------------

_PACKAGE_DIRS: Final = {
    "runstore": "core",
    "runstore-local": "plugins/runstore-local",
    "runstore-fsspec": "plugins/runstore-fsspec",
}
"""Where each distribution lives in a source checkout of runstore."""


@functools.cache
def checkout_root() -> Path | None:
    """The source checkout runstore runs from (editable install or ``src`` on the path), or None.

    Read from the installed distribution's ``direct_url.json`` (PEP 610): a
    ``file://`` URL is a local directory (``pip install -e core``). Without
    one, a ``runstore`` package imported from ``core/src`` next to a
    ``core/pyproject.toml`` is a checkout too.
    """
    try:
        raw = metadata.distribution("runstore").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        raw = None
    if raw:
        try:
            url = str(orjson.loads(raw).get("url", ""))
        except (orjson.JSONDecodeError, AttributeError):
            url = ""
        parts = urlsplit(url)
        if parts.scheme == "file":
            core = Path(unquote(parts.path))
            if (core / "pyproject.toml").is_file():
                return core.parent
        return None
    import runstore

    core = Path(runstore.__file__).resolve().parents[2]  # core/src/runstore/__init__.py
    return core.parent if (core / "pyproject.toml").is_file() else None


def install_hint(requirement: str) -> str:
    """How to install ``requirement`` (``runstore[view]``, ``runstore-fsspec[s3]``).

    Always the published form; when runstore runs from a checkout that holds
    the package, also the editable form with the real path.
    """
    published = f"pip install {shlex.quote(requirement)}"
    name, bracket, extra = requirement.partition("[")
    root = checkout_root()
    folder = _PACKAGE_DIRS.get(name)
    if root is None or folder is None or not (root / folder / "pyproject.toml").is_file():
        return published
    local = shlex.quote(f"{root / folder}{bracket}{extra}")
    return f"{published} (from PyPI), or from this checkout: pip install -e {local}"


# -- stores that must exist ---------------------------------------------------------

_FILE_BACKENDS: Final = ("local", "fsspec")
"""Backends that keep a ``file`` store in a folder of the store's path."""


def require_store(url: str, *, may_create: bool = False) -> None:
    """Raise unless ``url`` names an existing store, when that can be told without opening it.

    Only a local store can be told: it is a directory holding runstore's
    bookkeeping folder or run folders. A path that does not exist, a file,
    a run directory or a folder holding no store is ``not_found`` (a file:
    ``invalid_input``), with the path the user probably meant. Other
    backends are left to report their own errors. ``may_create`` (``demo``)
    accepts a new folder, never a run directory or a file.
    """
    forced, target = parse_target(url)
    if target.scheme != "file" or forced not in (None, *_FILE_BACKENDS):
        return  # not a local folder, or a backend that reports its own errors
    path = Path(target.path)
    if (path / MANIFEST).is_file():
        store = path.parent
        raise NotFoundError(
            f"{url} is a run directory (run {path.name}), not a store: "
            f"its store is {_shown(url, store)}, so use --store {_shown(url, store)} "
            f"and the run id {path.name}",
            details={"url": url, "store": str(store), "run_id": path.name},
        )
    if path.is_dir():
        if may_create or _is_store(path):
            return
        inside = sorted(p.name for p in _subdirs(path) if _is_store(p))
        hint = f"; did you mean {_alternatives(url, [path / n for n in inside])}?" if inside else ""
        raise NotFoundError(
            f"no store at {url}: the folder holds no runs (nor runstore's {BOOKKEEPING_DIR}/)"
            f"{hint}; runstore demo --store PATH or your program's first run creates one",
            details={"url": url, "path": str(path), "suggestions": inside},
        )
    if path.exists():
        raise InvalidInputError(
            f"--store {url} is a file, not a store folder",
            details={"url": url, "path": str(path)},
        )
    if may_create:
        return
    near = _near(path)
    hint = f"; did you mean {_alternatives(url, near)}?" if near else ""
    missing = "no such directory" if path.parent.is_dir() else f"{path.parent} does not exist"
    raise NotFoundError(
        f"no store at {url} ({missing}){hint}; "
        "runstore demo --store PATH or your program's first run creates one",
        details={"url": url, "path": str(path), "suggestions": [str(p) for p in near]},
    )


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []


def _is_store(path: Path) -> bool:
    if (path / BOOKKEEPING_DIR).is_dir():
        return True
    return any((child / MANIFEST).is_file() for child in _subdirs(path))


def _near(path: Path) -> list[Path]:
    """Existing folders next to ``path`` whose names are close to its name, stores first."""
    siblings = {p.name: p for p in _subdirs(path.parent)}
    close = difflib.get_close_matches(path.name, list(siblings), n=3, cutoff=0.6)
    return sorted((siblings[name] for name in close), key=lambda p: not _is_store(p))


def _shown(url: str, path: Path) -> str:
    """``path`` written the way the user wrote ``url``: relative stays relative."""
    if "://" in url or os.path.isabs(os.path.expanduser(url)):
        return str(path)
    return os.path.relpath(path)


def _alternatives(url: str, paths: list[Path]) -> str:
    return " or ".join(_shown(url, p) for p in paths)


# -- errors explained ---------------------------------------------------------------


def explain(exc: RunstoreError) -> RunstoreError:
    """``exc`` as the error a person should see: a missing backend package gets the
    install command that fits this installation (:func:`install_hint`); any other
    error unchanged. (Missing S3 credentials are explained where botocore is known:
    the fsspec backend raises ``permission_denied`` naming what to set.)"""
    package = exc.details.get("package")
    if isinstance(exc, BackendNotFoundError) and isinstance(package, str) and package:
        hint = install_hint(package)
        if hint not in exc.message:
            missing = BackendNotFoundError(
                f"{exc.message} ({hint})", details={**exc.details, "install": hint}
            )
            missing.__cause__ = exc.__cause__
            return missing
    return exc
