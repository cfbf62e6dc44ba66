"""What a child process may not use of its parent's runstore objects.

After ``os.fork()`` the child has copies of the parent's stores and runs, but
not the threads behind them (the sync API's event loop) nor a safe share of
their open files and locks. Using them would hang or write through the
parent's descriptors, so each guarded object is told it was forked and refuses
its next use with :class:`~runstore.model.errors.UnsupportedError`; the child
opens its own store (``runstore.open(url)``), which works as in any process.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

from runstore.model.errors import UnsupportedError

__all__ = ["forked_error", "guard"]


class Forkable(Protocol):
    def forked(self) -> None:
        """Called in the child right after ``fork()``: forget threads, loops and files."""


_GUARDED: weakref.WeakSet[Forkable] = weakref.WeakSet()


def guard(obj: Forkable) -> None:
    """Tell ``obj`` when the process forks (in the child)."""
    _GUARDED.add(obj)


def forked_error(what: str) -> UnsupportedError:
    return UnsupportedError(
        f"this {what} was opened before os.fork(); open the store again in the child "
        "process (runstore.open(url)) and use that",
        details={"pid": os.getpid()},
    )


def _after_fork_in_child() -> None:
    for obj in list(_GUARDED):
        obj.forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
