"""The metadata of a recorded session: where, with what, and how it was invoked."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import pytest

__all__ = ["git_metadata", "parse_meta_options", "session_metadata"]

_MAX_STRING: Final = 4096
_MAX_LIST: Final = 256
_GIT_TIMEOUT: Final = 10.0


def _git(rootdir: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(rootdir), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_metadata(rootdir: Path) -> dict[str, Any]:
    """``git_commit``, ``git_branch`` and ``git_dirty`` of ``rootdir``; ``{}`` outside a repo."""
    commit = _git(rootdir, "rev-parse", "HEAD")
    if not commit:
        return {}
    found: dict[str, Any] = {"git_commit": commit}
    branch = _git(rootdir, "rev-parse", "--abbrev-ref", "HEAD")
    if branch and branch != "HEAD":  # 'HEAD': a detached checkout has no branch
        found["git_branch"] = branch
    status = _git(rootdir, "status", "--porcelain", "--untracked-files=no")
    if status is not None:
        found["git_dirty"] = bool(status)
    return found


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_STRING else text[: _MAX_STRING - 3] + "..."


def parse_meta_options(options: Sequence[str]) -> dict[str, str]:
    """``["key=value", ...]`` from ``--runstore-meta`` as a dict; raises ``pytest.UsageError``."""
    parsed: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise pytest.UsageError(f"--runstore-meta takes KEY=VALUE, got {option!r}")
        parsed[key] = value
    return parsed


def session_metadata(config: pytest.Config) -> dict[str, Any]:
    """The run's metadata: git state, Python, platform, pytest, invocation, ``-k``/``-m``."""
    from pytest_runstore import __version__

    metadata: dict[str, Any] = git_metadata(config.rootpath)
    metadata.update(
        python=platform.python_version(),
        python_implementation=platform.python_implementation(),
        platform=platform.platform(),
        pytest=pytest.__version__,
        pytest_runstore=__version__,
        args=[_clip(arg) for arg in config.invocation_params.args[:_MAX_LIST]],
        rootdir=_clip(str(config.rootpath)),
    )
    keyword = config.getoption("keyword", None)
    if keyword:
        metadata["keyword"] = _clip(keyword)
    markexpr = config.getoption("markexpr", None)
    if markexpr:
        metadata["markexpr"] = _clip(markexpr)
    workers = config.getoption("numprocesses", None)
    if workers is not None:
        metadata["xdist_workers"] = workers if isinstance(workers, int) else str(workers)
    return metadata
