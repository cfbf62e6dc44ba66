"""The reliability suites' shared harness: scale, figures, payloads, store walkers.

Imported by the tests (``conftest.py`` puts this folder on ``sys.path``) and by
the subprocess scripts that run next to it (``crash_writer.py``,
``concurrency_worker.py``). It holds no test of its own. The S3 server is
runstore-fsspec's (``runstore_fsspec.testing.S3Server``, fixture ``s3``).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from runstore_fsspec.testing import DUMMY_CREDENTIALS, S3Server

HERE: Final = Path(__file__).resolve().parent

DEFAULT_TRIALS: Final = 12
"""Crash trials per backend in the quick subset (``make test``)."""

CRASH_STREAMS: Final = ("instances", "steps", "logs", "events")


# -- scale and figures ------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """How hard the suites push: the quick subset, or the long form (``--trials N``)."""

    trials: int
    long: bool

    @property
    def s3_trials(self) -> int:
        """Crash trials on S3 (each one starts an S3 client in a fresh process)."""
        return self.trials // 5 if self.long else 3

    @property
    def outages(self) -> int:
        """Times the S3 server is stopped and started again in the middle of a run."""
        return 3 if self.long else 1

    @property
    def local_writers(self) -> int:
        """Processes racing on one local store."""
        return 32 if self.long else 8

    @property
    def s3_writers(self) -> int:
        """Processes racing on one S3 bucket."""
        return 12 if self.long else 8

    @property
    def fuzz_examples(self) -> int:
        """Hypothesis examples per name-validator property."""
        return 20 * self.trials if self.long else 600


@dataclass
class Figures:
    """Counters the suites publish in docs/reliability.md (``--figures PATH`` writes them)."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, key: str, amount: int = 1) -> None:
        self.counts[key] += amount

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))

    def write(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2) + "\n")


# -- deterministic payloads -------------------------------------------------------------


def _digest(*parts: object) -> bytes:
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).digest()


def payload_size(*parts: object) -> int:
    """A size drawn from the parts: mostly small, sometimes tens of KiB, rarely ~1 MiB."""
    value = int.from_bytes(_digest("size", *parts), "big")
    bucket = value % 100
    if bucket < 90:
        return 16 + value % 400
    if bucket < 98:
        return 1024 + value % (64 << 10)
    return (256 << 10) + value % (768 << 10)


def record_for(run_id: str, stream: str, seq: int) -> dict[str, Any]:
    """The record a writer appends as number ``seq`` of ``stream``: checkable by anyone."""
    pad = (_digest("pad", run_id, stream, seq).hex() * 4096)[: payload_size(run_id, stream, seq)]
    record: dict[str, Any] = {"seq": seq, "stream": stream, "pad": pad, "text": "ünï\u2603"}
    if stream == "instances":
        record["instance_id"] = f"inst_{seq:04d}"
        record["status"] = "passed" if _digest("status", run_id, seq)[0] % 3 else "failed"
    return record


def artifact_name(seq: int) -> str:
    return f"inst_{seq:04d}/step_{seq % 7:03d}_output.bin"


def artifact_bytes(run_id: str, name: str) -> bytes:
    """The bytes a writer stores as artifact ``name`` of ``run_id``."""
    size = payload_size("artifact", run_id, name)
    block = hashlib.sha256(f"{run_id}/{name}".encode()).digest()
    return (block * (size // len(block) + 1))[:size]


# -- walking a store ----------------------------------------------------------------------


@dataclass
class Walk:
    """What parsing every file of a store found."""

    json_files: int = 0
    jsonl_lines: int = 0
    torn_tails: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def check_jsonl(name: str, data: bytes, walk: Walk) -> None:
    """Every complete line parses; only the bytes after the last newline may be torn."""
    *lines, tail = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            walk.problems.append(f"{name} line {number}: {exc}")
    walk.jsonl_lines += len(lines)
    if tail:
        walk.torn_tails[name] = len(tail)


def check_json(name: str, data: bytes, walk: Walk) -> None:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        walk.problems.append(f"{name}: {exc}")
    walk.json_files += 1


def walk_local(root: Path) -> Walk:
    """Parse every ``.json`` and ``.jsonl`` file below ``root`` (never following links)."""
    walk = Walk()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            relative = str(path.relative_to(root))
            if name.endswith(".json"):
                check_json(relative, path.read_bytes(), walk)
            elif name.endswith(".jsonl"):
                check_jsonl(relative, path.read_bytes(), walk)
    return walk


def temp_leftovers(root: Path) -> list[str]:
    """Files left in the store's temp directory."""
    tmp = root / ".runstore" / "tmp"
    return sorted(os.listdir(tmp)) if tmp.is_dir() else []


Entry = tuple[str, bytes]


def snapshot(top: Path, *, skip: Path | None = None) -> dict[str, Entry]:
    """Every entry below ``top`` (kind and content), links not followed; ``skip`` excluded."""
    found: dict[str, Entry] = {}
    for dirpath, dirs, files in os.walk(top):
        here = Path(dirpath)
        if skip is not None:
            dirs[:] = [d for d in dirs if here / d != skip]
        for name in [*dirs, *files]:
            path = here / name
            if skip is not None and path == skip:
                continue
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                found[str(path)] = ("link", os.readlink(path).encode())
            elif stat.S_ISDIR(info.st_mode):
                found[str(path)] = ("dir", b"")
            else:
                found[str(path)] = ("file", path.read_bytes())
    return found


def walk_s3(server: S3Server, prefix: str) -> Walk:
    """Parse every ``.json`` and ``.jsonl`` object under ``prefix``."""
    walk = Walk()
    for key, body in server.objects(prefix):
        if key.endswith(".json"):
            check_json(key, body, walk)
        elif key.endswith(".jsonl"):
            check_jsonl(key, body, walk)
    return walk


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a helper process: this one's, plus the S3 dummies."""
    env = {**os.environ, **DUMMY_CREDENTIALS, **extra}
    env.setdefault("PYTHONHASHSEED", "0")
    return env


PYTHON: Final = sys.executable
