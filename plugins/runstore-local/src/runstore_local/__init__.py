"""runstore's local filesystem backend: bare paths and ``file://`` URLs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runstore_local.backend import LocalBackend

__all__ = ["LocalBackend", "close_idle_connections"]


def close_idle_connections() -> int:
    """Close the run-index connections that closed stores of this process keep open
    for the next store of the same folder (opening one costs ~2 ms, closing the last
    one a checkpoint); returns how many. Call it where every descriptor must be closed."""
    from runstore_local.index import close_idle_connections as close

    return close()


def __getattr__(name: str) -> object:
    # Python imports this package before the entry point runstore_local.plugin,
    # so an eager import here would load the backend and its SQLite index in
    # every process that merely discovers plugins.
    if name == "LocalBackend":
        from runstore_local.backend import LocalBackend

        return LocalBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
