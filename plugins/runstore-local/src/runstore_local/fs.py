"""Safe file-system primitives: no symlink is ever followed below the store root.

Every path below the root is reached by walking directory file descriptors
with ``O_NOFOLLOW``, so a symlink planted at a run, artifact or temp path is
refused instead of followed out of the store.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
CREATE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_counter = itertools.count()
_counter_lock = threading.Lock()


def temp_name(stem: str) -> str:
    """A temp file name unique to this process and call (never inside a run's tree)."""
    with _counter_lock:
        n = next(_counter)
    return f"{stem}.{os.getpid()}.{threading.get_ident()}.{n}.tmp"


@contextmanager
def opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def open_dir(parent_fd: int, parts: list[str], *, create: bool = False, sync: bool = False) -> int:
    """Walk ``parts`` below ``parent_fd`` without following links; return the final dir fd.

    ``create`` makes the missing folders; with ``sync`` each new one's parent is
    fsynced, so its name survives a power cut (``durability="fsync"``).
    """
    fd = os.dup(parent_fd)
    try:
        for part in parts:
            try:
                child = _open_child(fd, part)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile by another process
                else:
                    if sync:
                        fsync_dir(fd)
                child = _open_child(fd, part)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child(dir_fd: int, name: str) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except NotADirectoryError:
        _refuse_link(dir_fd, name)
        raise


def _refuse_link(dir_fd: int, name: str) -> None:
    """Raise ELOOP if ``name`` is a symlink (``O_DIRECTORY|O_NOFOLLOW`` says ENOTDIR)."""
    if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
        raise OSError(errno.ELOOP, "symbolic link refused", name)


def refuse_link(dir_fd: int, name: str) -> None:
    """Raise ELOOP if ``name`` in ``dir_fd`` is a symlink; a missing ``name`` is fine."""
    try:
        _refuse_link(dir_fd, name)
    except FileNotFoundError:
        pass


def open_run_dir(root_fd: int, run_id: str) -> int:
    return _open_child(root_fd, run_id)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written (regular files may write short)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(dir_fd: int) -> None:
    os.fsync(dir_fd)


def atomic_write(dir_fd: int, name: str, data: bytes, tmp_fd: int, *, sync: bool = True) -> None:
    """Replace ``name`` in ``dir_fd`` with ``data``: temp + rename, with ``sync`` an
    fsync of the file before and of the directory after (a power cut keeps it).

    A reader sees the old or the new file, never a partial one.
    """
    tmp = temp_name(name)
    fd = os.open(tmp, CREATE_FLAGS, 0o644, dir_fd=tmp_fd)
    try:
        with opened(fd):
            write_all(fd, data)
            if sync:
                os.fsync(fd)
        os.replace(tmp, name, src_dir_fd=tmp_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=tmp_fd)
        except OSError:
            pass
        raise
    if sync:
        fsync_dir(dir_fd)


def read_file(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    with opened(fd):
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
