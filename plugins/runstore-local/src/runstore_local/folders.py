"""When to trust the run index: the store directory's signature.

Users copy run folders into a store and delete them by hand. Every such
change touches the store directory itself (a name added or removed), so its
modification time changes. The index records the directory's
:class:`Signature` when its rows last matched the run folders; a listing
first takes the signature again (one ``fstat``, a few microseconds) and
reconciles the index with the folders only when it differs.

One subtlety (git's "racy" index entries): a file system stamps times with a
coarse clock (a few milliseconds; whole seconds on some), so a change made
in the same tick as the one a signature saw leaves the signature as it was.
A signature is only recorded once it has :func:`settled`: its time is older
than the clock's tick, so any later change carries a later time. Until then
each listing reconciles again (after a burst of changes, one or two do).
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from typing import Final

__all__ = ["COARSE_TICK_NS", "Signature", "run_folder", "settled"]

COARSE_TICK_NS: Final = 20_000_000
"""A bound on the tick of the clock file systems stamp times with (Linux: 1-10 ms)."""
_WHOLE_SECONDS_NS: Final = 2_000_000_000
"""The bound for file systems that keep whole seconds (ext3, FAT: 2 s)."""


@dataclass(frozen=True)
class Signature:
    """What changes when a name is added to or removed from a directory."""

    device: int
    inode: int
    mtime_ns: int
    links: int

    @classmethod
    def of(cls, dir_fd: int) -> Signature:
        info = os.fstat(dir_fd)
        return cls(info.st_dev, info.st_ino, info.st_mtime_ns, info.st_nlink)

    def __str__(self) -> str:
        return f"{self.device}:{self.inode}:{self.mtime_ns}:{self.links}"


def settled(signature: Signature, taken_at_ns: int) -> bool:
    """Whether a change after the moment ``taken_at_ns`` (``time.time_ns()`` read just
    before ``signature`` was taken) is sure to change the signature's time."""
    return _settled(signature.mtime_ns, taken_at_ns)


def _settled(mtime_ns: int, taken_at_ns: int) -> bool:
    tick = _WHOLE_SECONDS_NS if mtime_ns % 1_000_000_000 == 0 else COARSE_TICK_NS
    return taken_at_ns - tick > mtime_ns


def run_folder(root_fd: int, name: str, taken_at_ns: int) -> tuple[str, bool]:
    """The signature of a run folder the index lacks, and whether it has :func:`settled`.

    Such a folder is being copied in, or is damaged. Its signature covers what
    makes it indexable: the folder, its ``manifest.json`` and ``state.json``
    (their inode, time and size: a copy still writing them changes it). A
    symbolic link is taken as it is, never followed.
    """
    parts: list[str] = []
    done = True
    for path in (name, f"{name}/manifest.json", f"{name}/state.json"):
        try:
            info = os.stat(path, dir_fd=root_fd, follow_symlinks=False)
        except OSError:  # missing, or below a link or a file
            parts.append("-")
            continue
        parts.append(f"{info.st_ino}:{info.st_mtime_ns}:{info.st_size}")
        done = done and _settled(info.st_mtime_ns, taken_at_ns)
        if path == name and not stat.S_ISDIR(info.st_mode):  # a link (or a file)
            break
    return " ".join(parts), done


def now_ns() -> int:
    """The wall clock file systems stamp times with, in nanoseconds."""
    return time.time_ns()
