"""Hostile input: names, planted symlinks, oversized and over-deep records, no pickle.

* Over a thousand names generated from every class the name rules refuse,
  plus the path-traversal payloads MLflow's tests and CVE reports use and
  Unicode lookalikes, go through ``put_artifact``, ``create_run`` and
  ``append``: each one is a typed ``InvalidInputError`` or an exact round trip
  inside the store, and not one byte lands outside it (a byte-for-byte
  snapshot of the directories around the store, and a search for the marker
  every payload aims to create).
* Hypothesis fuzzes the validators: an accepted name is returned unchanged,
  resolves inside any root, and is a fixed point of percent-decoding.
* A symlink planted at every path the local backend touches (run directory,
  snapshots, streams, artifact directories and files, bookkeeping directory,
  temp directory and temp files, the index database) is never followed.
* Records over ``MAX_RECORD_BYTES`` or nested too deep are clear errors.
* No module of runstore or its plugins imports pickle, marshal or shelve.
"""

from __future__ import annotations

import ast
import itertools
import os
import posixpath
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from harness import Figures, Scale, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runstore
import runstore_local.fs
from runstore.model.errors import InvalidInputError, RunstoreError
from runstore.model.names import (
    MAX_ARTIFACT_NAME_BYTES,
    validate_artifact_name,
    validate_run_id,
    validate_stream_name,
)
from runstore.model.records import MAX_RECORD_BYTES, encode_record
from runstore.ops.maintenance import verify_run

MARK = "PWNED-runstore-7f3a"
"""Every payload aims to create a file of this name: finding one outside the store is a leak."""

REPO = Path(__file__).resolve().parents[2]

# -- the names ---------------------------------------------------------------------------

MLFLOW_PAYLOADS = [
    # validate_path_is_safe tests and the reports behind CVE-2023-1177, CVE-2023-2780,
    # CVE-2023-6909, CVE-2024-1483 ('#' instead of '?'), CVE-2024-1560 and friends
    "/path",
    "../path",
    "../../path",
    "./../path",
    "path/../to/file",
    "path/../../to/file",
    "/etc/passwd",
    "/etc/passwd%00.jpg",
    "/etc/passwd%00.html",
    "/etc/passwd%00.txt",
    "/etc/passwd%00.php",
    "/etc/passwd%00.asp",
    "/file://etc/passwd",
    "file:///etc/passwd",
    "file://a#/..//tmp",
    "file://a%23/..//tmp/",
    "#/../../path",
    "..#/../path",
    "%2E%2E%2Fpath",
    "%2e%2e%2f%2e%2e%2fpath",
    "%2E%2E/%2E%2E/path",
    "..%2Fpath",
    "..%2F..%2Fpath",
    "%252E%252E%252Fpath",
    "%252e%252e%252f%252e%252e%252fpath",
    "..%252Fpath",
    "%25252e%25252e%25252fpath",
    "..%c0%afpath",
    "..%c1%9cpath",
    "..\\path",
    "..\\..\\path",
    "\\..\\path",
    "..%5cpath",
    "..%255cpath",
    "C:\\path",
    "C:/path",
    "c:path",
    "\\\\server\\share\\path",
    "//proc/self/root",
    "//proc/self/root/etc/passwd",
    "/proc/self/root/etc/passwd",
    "/proc/self/cwd/path",
    "....//....//path",
    "..././..././path",
    "s3://bucket/../path",
    "http://host/../path",
]

REFUSED_TEMPLATES = {
    "parent traversal": [
        "{up}{target}",
        "a/{up}{target}",
        "a/b/{up}{up}{target}",
        "./{up}{target}",
        "a/./{up}{target}",
    ],
    "absolute": ["/{target}", "//{target}", "///tmp/{target}", "/tmp/{up}{target}"],
}
TARGETS = (MARK, "etc/" + MARK, "proc/self/root/tmp/" + MARK)


def _encodings(text: str) -> Iterator[str]:
    """``text`` with ``.``, ``/`` and ``\\`` percent-encoded once, twice, three times."""
    table = {".": "%2e", "/": "%2f", "\\": "%5c"}
    for rounds in (1, 2, 3):
        for upper in (False, True):
            for which in ("./", ".", "/"):
                out = text
                for char in which:
                    code = table[char].upper() if upper else table[char]
                    out = out.replace(char, code[0] + "25" * (rounds - 1) + code[1:])
                yield out


def refused_names() -> Iterator[tuple[str, object]]:
    """``(class, name)`` for names the rules refuse: each must be InvalidInputError."""
    for depth in range(1, 9):
        up = "../" * depth
        for cls, templates in REFUSED_TEMPLATES.items():
            for template, target in itertools.product(templates, TARGETS):
                yield cls, template.format(up=up, target=target)
        yield "backslash", ("..\\" * depth) + MARK
        yield "backslash", "a\\" * depth + MARK
        yield "backslash", "\\" * depth + MARK
        for base in (up + MARK, "a/" + up + MARK, "/" * depth + MARK):
            for encoded in _encodings(base):
                yield "percent-escape", encoded
        yield "fragment", "a#/" + up + MARK
        yield "fragment", "#" + up + MARK
        yield "fragment", "file://a#/" + up + MARK
    for prefix in ("", "a/", "a/b/"):
        yield "backslash", prefix + "x\\" + MARK
        yield "fragment", prefix + "x#" + MARK
        yield "percent-escape", prefix + "%41" + MARK
        for component in ("", ".", ".."):
            yield "empty, . or .. component", f"{prefix}{component}/{MARK}"
            yield "empty, . or .. component", f"{prefix}{MARK}/{component}"
    for code in [*range(0x20), *range(0x7F, 0xA0)]:
        char = chr(code)
        yield "control character", f"{char}{MARK}"
        yield "control character", f"a{char}b/{MARK}"
        yield "control character", f"{MARK}{char}"
        yield "control character", f"..{char}/{MARK}"
        yield "control character", f"a/{char}/{MARK}"
    for letter in "ACZacz":
        for rest in (":", ":/", ":\\", ":x/", ":" + MARK):
            yield "drive letter", f"{letter}{rest}{MARK}"
    for surrogate in ("\ud800", "\udbff", "\udc00", "\udfff"):
        yield "lone surrogate", f"a{surrogate}/{MARK}"
    yield "too long", "c" * 256
    yield "too long", "é" * 128
    yield "too long", "/".join(["d"] * 33)
    yield "too long", "/".join(["e" * 200] * 6)
    yield "too long", "f" * (MAX_ARTIFACT_NAME_BYTES + 1)
    yield "empty", ""
    for value in (None, b"bytes", 42, 4.2, Path("a"), ["a"], {"a": 1}):
        yield "not a string", value


LOOKALIKES = [
    # accepted on purpose: they are not separators, dots or escapes to any POSIX
    # file system, so they must round-trip exactly, never be normalised
    "\uff0e\uff0e/" + MARK,  # fullwidth full stops
    "\uff0e\uff0e\uff0f" + MARK,  # fullwidth solidus
    "\u2024\u2024/" + MARK,  # one dot leaders
    "\u2025/" + MARK,  # two dot leader
    ".\u200b./" + MARK,  # zero-width space between the dots
    "\u200b../" + MARK,
    "..\u200d/" + MARK,  # zero-width joiner
    "\ufeff../" + MARK,  # byte order mark
    "\u2215" + MARK,  # division slash
    "\u2044" + MARK,  # fraction slash
    "\uff3c" + MARK,  # fullwidth reverse solidus
    "\u2216" + MARK,  # set minus
    "\uff05\uff12\uff45" + MARK,  # fullwidth %2e
    "e\u0301-" + MARK,  # NFD é
    "\u00e9-" + MARK,  # NFC é: a different name, a different file
    "\u212b-" + MARK,  # angstrom sign (NFC: Å)
    "\u00c5-" + MARK,
    "CON",
    "NUL",
    "AUX",
    "PRN",
    "COM1",
    "LPT9",
    "con.txt",
    "NUL.json",
    "CONIN$",
    "a/CON/b",
    "...",
    "....",
    "..a",
    "a..",
    "a..b",
    ".hidden",
    "-rf",
    "~",
    "~root",
    "$HOME",
    "$(id)",
    "`id`",
    "a;b",
    "a b",
    " lead",
    "trail ",
    "*",
    "?",
    "[abc]",
    "'",
    '"',
    "<>|",
    "😀",
    "%",
    "%zz",
    "%2",
    "100%",
    "http:",
    "1:x",
    "/".join(["g"] * 32),
    "h" * 255,
    "/".join(["i" * 200] * 5),
]


def all_names() -> list[tuple[str, object]]:
    """Every generated name once (the first class that produced it)."""
    names: dict[str, tuple[str, object]] = {}
    for cls, name in [
        *refused_names(),
        *(("mlflow payload", n) for n in MLFLOW_PAYLOADS),
        *(("lookalike", n) for n in LOOKALIKES),
    ]:
        names.setdefault(repr(name), (cls, name))
    return list(names.values())


# -- looking for escapes -------------------------------------------------------------------


def escapes(store_root: Path) -> list[str]:
    """Files the payloads aim at that exist outside the store.

    Every payload ends in one of :data:`TARGETS` (or MLflow's ``path``), reached
    from the artifact directory through ``..``, from ``/`` or from ``/tmp``: so
    each directory above the store, ``/`` and ``/tmp`` are where it would land.
    """
    places = [*store_root.parents, Path("/tmp")]
    found = [
        str(place / target)
        for place in places
        for target in (*TARGETS, "path", "to/file", MARK)
        if os.path.lexists(place / target)
    ]
    found += [f"/tmp/{n}" for n in os.listdir("/tmp") if MARK in n]
    return found


def system_files() -> dict[str, bytes]:
    """Files the classic payloads aim at (compared, never written by the test)."""
    return {p: Path(p).read_bytes() for p in ("/etc/passwd", "/etc/hosts") if Path(p).exists()}


@pytest.fixture
def deep_root(tmp_path: Path) -> Path:
    """A store four levels below the test's directory, with a file at every level above."""
    root = tmp_path / "one" / "two" / "three" / "runs"
    for level in root.parents[:4]:
        level.mkdir(parents=True, exist_ok=True)
        (level / "sentinel.txt").write_bytes(b"must not change")
    return root


def test_a_thousand_hostile_names_are_typed_rejections_or_in_root_round_trips(
    deep_root: Path, tmp_path: Path, figures: Figures
) -> None:
    names = all_names()
    assert len(names) >= 1000
    before = snapshot(tmp_path, skip=deep_root)
    system = system_files()
    assert escapes(deep_root) == []
    outcomes: dict[str, int] = {"rejected": 0, "round trip": 0}
    with runstore.open(str(deep_root), heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_hostile")
        artifacts = deep_root / "run_hostile" / "artifacts"
        for cls, name in names:
            payload = f"{cls}: {name!r}".encode("utf-8", "surrogatepass")
            try:
                validate_artifact_name(name)
            except InvalidInputError:
                accepted = False
            else:
                accepted = True
            if cls == "lookalike":
                assert accepted, f"{name!r} is not a separator, dot or escape: it must be stored"
            elif cls != "mlflow payload":
                assert not accepted, f"{cls} {name!r} must be refused"
            if not accepted:
                with pytest.raises(InvalidInputError) as info:
                    run.put_artifact(name, payload)  # type: ignore[arg-type]
                assert info.value.code == "invalid_input"
                outcomes["rejected"] += 1
                continue
            assert isinstance(name, str)
            ref = run.put_artifact(name, payload)
            assert ref.name == name and ref.size == len(payload)
            stored = artifacts / name
            assert Path(os.path.realpath(stored)).is_relative_to(artifacts), name
            assert stored.read_bytes() == payload
            assert store.get_run("run_hostile").read_artifact(name, verify=True) == payload
            outcomes["round trip"] += 1
        listed = sorted(ref.name for ref in store.get_run("run_hostile").artifacts())
        assert listed == sorted(
            str(n) for c, n in names if c == "lookalike" or (c == "mlflow payload" and _accepted(n))
        )
        # NFC and NFD spellings are different names: two files, never merged
        assert (artifacts / ("e\u0301-" + MARK)).read_bytes() != (
            artifacts / ("\u00e9-" + MARK)
        ).read_bytes()
        for _cls, name in names:  # the same names as run ids and stream names
            for attempt in (
                lambda n=name: store.create_run(run_id=n),
                lambda n=name: store.get_run(n),
                lambda n=name: run.append(n, {"x": 1}),
            ):
                failure: Exception | None = None
                try:
                    attempt()
                except Exception as exc:
                    failure = exc
                assert failure is None or isinstance(
                    failure, InvalidInputError | runstore.NotFoundError
                ), failure
        run.finish()
    assert snapshot(tmp_path, skip=deep_root) == before, "bytes changed outside the store"
    assert escapes(deep_root) == []
    assert system_files() == system
    for cls in {c for c, _ in names}:
        figures.add(f"hostile.names.{cls}", sum(1 for c, _ in names if c == cls))
    figures.add("hostile.names_tried", len(names) * 4)
    figures.add("hostile.typed_rejections", outcomes["rejected"])
    figures.add("hostile.in_root_round_trips", outcomes["round trip"])
    figures.add("hostile.bytes_written_outside", 0)


def _accepted(name: object) -> bool:
    try:
        validate_artifact_name(name)
    except InvalidInputError:
        return False
    return True


# -- fuzzing the validators -----------------------------------------------------------------

DANGEROUS = [
    "/",
    ".",
    "..",
    "\\",
    "%",
    "%2e",
    "%2f",
    "#",
    ":",
    "\x00",
    "\n",
    "\x85",
    "a",
    "é",
    "e\u0301",
    "\u200b",
    "\uff0e",
    "\uff0f",
    "\u2215",
    "C:",
    "~",
    " ",
    "\ud800",
]


def hostile_text() -> st.SearchStrategy[str]:
    pieces = st.lists(
        st.one_of(st.sampled_from(DANGEROUS), st.text(st.characters(exclude_categories=()))),
        max_size=12,
    )
    return st.one_of(pieces.map("".join), st.text(st.characters(exclude_categories=())))


def check_artifact_name(name: str) -> bool:
    """The properties of an accepted artifact name; ``False`` when it is refused."""
    try:
        returned = validate_artifact_name(name)
    except InvalidInputError:
        return False
    assert returned is name  # never normalised
    parts = name.split("/")
    assert not name.startswith("/") and "\\" not in name and "#" not in name
    assert all(part not in ("", ".", "..") for part in parts)
    assert posixpath.normpath(name) == name
    assert unquote(name) == name  # no layer of percent-decoding changes it
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", name)
    assert len(name.encode()) <= MAX_ARTIFACT_NAME_BYTES and len(parts) <= 32
    for root in ("/srv/runs/r/artifacts", "runs/r/artifacts"):
        joined = posixpath.normpath(posixpath.join(root, name))
        assert joined.startswith(root + "/"), joined
    return True


def test_fuzzed_names_are_refused_or_safe_by_construction(scale: Scale, figures: Figures) -> None:
    seen = {"artifact": 0, "run id": 0, "stream": 0}

    @settings(max_examples=scale.fuzz_examples, deadline=None, database=None)
    @given(hostile_text())
    def names(name: str) -> None:
        seen["artifact"] += check_artifact_name(name)
        try:
            assert validate_run_id(name) is name
        except InvalidInputError:
            pass
        else:
            seen["run id"] += 1
            assert re.fullmatch(r"[a-z0-9][a-z0-9_.\-]{0,127}", name) and ".." not in name
        try:
            assert validate_stream_name(name) is name
        except InvalidInputError:
            pass
        else:
            seen["stream"] += 1
            assert re.fullmatch(r"[a-z0-9][a-z0-9_\-]{0,63}", name)

    names()
    figures.add("hostile.fuzzed_names", scale.fuzz_examples)


def test_fuzzed_names_that_are_accepted_round_trip_inside_the_store(
    deep_root: Path, tmp_path: Path, scale: Scale, figures: Figures
) -> None:
    before = snapshot(tmp_path, skip=deep_root)
    stored = 0
    with runstore.open(str(deep_root), heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_fuzz")
        artifacts = deep_root / "run_fuzz" / "artifacts"
        taken: set[str] = set()

        @settings(
            max_examples=scale.fuzz_examples // 3,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.filter_too_much],
        )
        @given(hostile_text())
        def round_trip(name: str) -> None:
            nonlocal stored
            accepted = check_artifact_name(name)
            if not accepted:
                with pytest.raises(InvalidInputError):
                    run.put_artifact(name, b"x")
                return
            # a name that is a directory of an earlier one (or the reverse) is a conflict
            clash = any(t.startswith(name + "/") or name.startswith(t + "/") for t in taken)
            data = name.encode()
            try:
                run.put_artifact(name, data)
            except runstore.ConflictError:
                assert clash or name in taken
                return
            taken.add(name)
            assert Path(os.path.realpath(artifacts / name)).is_relative_to(artifacts)
            assert store.get_run("run_fuzz").read_artifact(name) == data
            stored += 1

        round_trip()
        run.finish()
    assert snapshot(tmp_path, skip=deep_root) == before
    figures.add("hostile.fuzzed_names_stored", stored)


# -- planted symlinks ------------------------------------------------------------------------

RUN = "run_x"


def _lifecycle(root: Path, *, resume: bool) -> list[str]:
    """Everything a writer and a reader do; the typed errors met on the way."""
    errors: list[str] = []

    def attempt(action: Callable[[], object]) -> object:
        try:
            return action()
        except RunstoreError as exc:
            errors.append(f"{exc.code}: {exc.message}")
            return None

    store = attempt(lambda: runstore.open(str(root), heartbeat_interval=0))
    if not isinstance(store, runstore.Store):
        return errors
    with store:
        run = attempt(lambda: store.resume_run(RUN) if resume else store.create_run(run_id=RUN))
        if isinstance(run, runstore.Run):
            attempt(lambda: run.append("steps", {"n": 1}))
            attempt(lambda: run.put_artifact("inst/a.bin", b"payload a"))
            attempt(lambda: run.put_artifact("inst/deep/b.bin", b"payload b"))
            attempt(lambda: run.set_phase("work", completed=1))
            attempt(run.finish)
        view = attempt(lambda: store.get_run(RUN))
        if isinstance(view, runstore.RunView):
            attempt(lambda: list(view.read("steps")))
            attempt(lambda: [view.read_artifact(r.name) for r in view.artifacts()])
            attempt(lambda: store.portal.call(verify_run(store.aio, RUN)))
        attempt(store.list_runs)
    return errors


def _prepare_run(root: Path) -> None:
    with runstore.open(str(root), heartbeat_interval=0) as store:
        run = store.create_run(run_id=RUN)
        run.append("steps", {"n": 0})
        run.append("instances", {"n": 0})
        run.put_artifact("inst/first.bin", b"first")


def _plant_temp_names(root: Path, outside: Path) -> None:
    """Symlinks at the next temp file names the backend will pick (any thread)."""
    counter = runstore_local.fs._counter
    upcoming = int(re.fullmatch(r"count\((\d+)\)", repr(counter)).group(1))  # type: ignore[union-attr]
    tmp = root / ".runstore" / "tmp"
    threads = {t.ident for t in threading.enumerate()} | {threading.get_ident()}
    stems = ("manifest.json", "state.json", "summary.json", "artifact")
    for ident, stem, n in itertools.product(threads, stems, range(upcoming, upcoming + 80)):
        (tmp / f"{stem}.{os.getpid()}.{ident}.{n}.tmp").symlink_to(outside / "secret.txt")


def _swap(path: Path, target: Path) -> None:
    """Replace ``path`` (file or directory) by a symlink to ``target``."""
    if path.is_dir() and not path.is_symlink():
        for child in sorted(path.rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() else child.unlink()
        path.rmdir()
    elif path.exists():
        path.unlink()
    path.symlink_to(target, target_is_directory=target.is_dir())


def _plant_wal(root: Path, outside: Path) -> None:
    for suffix in ("-wal", "-shm", "-journal"):
        _swap(root / ".runstore" / f"index.sqlite3{suffix}", outside / f"db{suffix}")


PLANTS: dict[str, tuple[bool, Callable[[Path, Path], None]]] = {
    # where: (run exists before, plant(root, outside))
    "run directory": (False, lambda r, o: (r / RUN).symlink_to(o, target_is_directory=True)),
    "manifest.json": (True, lambda r, o: _swap(r / RUN / "manifest.json", o / "secret.txt")),
    "state.json": (True, lambda r, o: _swap(r / RUN / "state.json", o / "secret.txt")),
    "summary.json": (True, lambda r, o: (r / RUN / "summary.json").symlink_to(o / "secret.txt")),
    "steps.jsonl": (True, lambda r, o: _swap(r / RUN / "steps.jsonl", o / "secret.txt")),
    "new stream file": (True, lambda r, o: (r / RUN / "logs.jsonl").symlink_to(o / "secret.txt")),
    "artifacts.jsonl": (True, lambda r, o: _swap(r / RUN / "artifacts.jsonl", o / "secret.txt")),
    "artifacts directory": (True, lambda r, o: _swap(r / RUN / "artifacts", o)),
    "artifact subdirectory": (True, lambda r, o: _swap(r / RUN / "artifacts" / "inst", o)),
    "artifact file": (True, lambda r, o: (r / RUN / "artifacts/inst/a.bin").symlink_to(o / "x")),
    "bookkeeping directory": (False, lambda r, o: _swap(r / ".runstore", o)),
    "temp directory": (False, lambda r, o: _swap(r / ".runstore" / "tmp", o)),
    "temp files": (True, _plant_temp_names),
    "index database": (False, lambda r, o: _swap(r / ".runstore" / "index.sqlite3", o / "db")),
    "index journal": (False, _plant_wal),
}


@pytest.mark.parametrize("where", sorted(PLANTS))
def test_a_planted_symlink_is_never_followed(
    root: Path, tmp_path: Path, where: str, figures: Figures
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("secret.txt", "x", "db", "db-wal", "db-shm", "db-journal"):
        (outside / name).write_bytes(b"not yours: " + name.encode())
    exists, plant = PLANTS[where]
    runstore.open(str(root)).close()
    if exists:
        _prepare_run(root)
    before = snapshot(outside)
    plant(root, outside)
    errors = _lifecycle(root, resume=exists)
    assert snapshot(outside) == before, f"a symlink at the {where} was followed: {errors}"
    figures.add("hostile.symlink_plants", 1)
    figures.add("hostile.symlink_typed_errors", len(errors))


# -- records ---------------------------------------------------------------------------------


def _nested(depth: int) -> dict[str, Any]:
    record: dict[str, Any] = {"leaf": True}
    for _ in range(depth):
        record = {"d": record}
    return record


def test_records_over_the_size_limit_are_refused_and_write_nothing(root: Path) -> None:
    overhead = len(encode_record({"p": ""}))
    at_limit = {"p": "x" * (MAX_RECORD_BYTES - overhead)}
    over = {"p": "x" * (MAX_RECORD_BYTES - overhead + 1)}
    assert len(encode_record(at_limit)) == MAX_RECORD_BYTES
    with runstore.open(str(root), heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_big")
        run.append("steps", {"n": 0})
        size = (root / "run_big" / "steps.jsonl").stat().st_size
        with pytest.raises(InvalidInputError) as info:
            run.append("steps", over)
        assert info.value.details == {"size": MAX_RECORD_BYTES + 1, "limit": MAX_RECORD_BYTES}
        assert "put_artifact" in info.value.message  # says what to do instead
        assert (root / "run_big" / "steps.jsonl").stat().st_size == size
        run.append("steps", at_limit)
        run.append("steps", {"n": 2})
        assert [len(r) for r in store.get_run("run_big").read("steps")] == [1, 1, 1]


@pytest.mark.parametrize("depth", [300, 10_000, 200_000])
def test_records_nested_too_deep_are_refused_without_recursion_errors(
    root: Path, depth: int
) -> None:
    deep = _nested(depth)
    with runstore.open(str(root), heartbeat_interval=0) as store:
        run = store.create_run(run_id="run_deep")
        with pytest.raises(InvalidInputError) as info:
            run.append("steps", deep)
        assert info.value.code == "invalid_input"
        circular: dict[str, Any] = {}
        circular["self"] = circular
        with pytest.raises(InvalidInputError):
            run.append("steps", circular)
        with pytest.raises(InvalidInputError):
            run.append("steps", {1: "non-string key"})
        run.append("steps", _nested(200))  # deep, but within the limit
        run.finish()
        assert len(list(store.get_run("run_deep").read("steps"))) == 1


def test_a_stored_line_nested_too_deep_is_corruption_not_a_crash(root: Path) -> None:
    with runstore.open(str(root), heartbeat_interval=0) as store:
        store.create_run(run_id="run_bomb")
        line = b"[" * 100_000 + b"]" * 100_000 + b"\n"
        (root / "run_bomb" / "steps.jsonl").write_bytes(b'{"n": 0}\n' + line)
        with pytest.raises(runstore.CorruptError) as info:
            list(store.get_run("run_bomb").read("steps"))
        assert info.value.details["line"] == 2


# -- no pickle -------------------------------------------------------------------------------

UNSAFE_MODULES = frozenset(
    {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}
)


def unsafe_uses(source: str, filename: str) -> list[str]:
    """Imports of pickle-like modules, dynamic imports of them, and unsafe yaml loads."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            args = [a.value for a in node.args if isinstance(a, ast.Constant)]
            if called in ("__import__", "import_module"):
                names = [str(a) for a in args]
            unsafe_yaml = (
                called in ("load", "unsafe_load", "load_all")
                and isinstance(func, ast.Attribute)
                and getattr(func.value, "id", "") == "yaml"
                and not any(
                    k.arg == "Loader" and "Safe" in ast.unparse(k.value) for k in node.keywords
                )
            )
            if unsafe_yaml:
                found.append(f"{filename}:{node.lineno}: yaml.{called}")
        found += [
            f"{filename}:{getattr(node, 'lineno', 0)}: {name}"
            for name in names
            if name.split(".")[0] in UNSAFE_MODULES
        ]
    return found


def test_the_scanner_finds_pickle_when_it_is_there() -> None:
    planted = (
        "import pickle\nfrom marshal import loads\nimport shelve as s\n"
        "m = __import__('cloudpickle')\nimport importlib\nimportlib.import_module('dill')\n"
        "import yaml\nyaml.load(data)\nyaml.safe_load(data)\n"
    )
    assert len(unsafe_uses(planted, "planted.py")) == 6


def test_no_module_of_runstore_or_its_plugins_uses_pickle(figures: Figures) -> None:
    sources = sorted(
        path
        for top in (REPO / "core" / "src", *(REPO / "plugins").glob("*/src"))
        for path in top.rglob("*.py")
    )
    assert len(sources) > 20
    found = [use for path in sources for use in unsafe_uses(path.read_text(), str(path))]
    assert found == []
    figures.add("hostile.source_files_scanned_for_pickle", len(sources))
