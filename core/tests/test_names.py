"""Run ids, stream names and artifact names: refused, never normalised."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from runstore.model.errors import InvalidInputError
from runstore.model.names import (
    MAX_ARTIFACT_COMPONENTS,
    MAX_ARTIFACT_NAME_BYTES,
    MAX_COMPONENT_BYTES,
    validate_artifact_name,
    validate_run_id,
    validate_stream_name,
)

# -- run ids ------------------------------------------------------------------


@pytest.mark.parametrize(
    "run_id",
    [
        "a",
        "7",
        "a" * 128,
        "run_20240115_001",
        "run-1.2.3",
        "0.a_b-c",
        "a.",
        "a.b.c",
    ],
    ids=[
        "one-char",
        "one-digit",
        "128-chars",
        "generated",
        "dots-dashes",
        "mixed",
        "dot-end",
        "dots",
    ],
)
def test_valid_run_id_is_returned_unchanged(run_id: str) -> None:
    assert validate_run_id(run_id) == run_id


@pytest.mark.parametrize(
    "run_id",
    [
        "",
        "a" * 129,
        "_run",
        ".run",
        "-run",
        "a..b",
        "..",
        "Run",
        "rUn",
        "ünïcode",
        "\uff52\uff55\uff4e",  # fullwidth "run"
        "run id",
        "run/1",
        "run\\1",
        "run\n",
        "run\x00",
        "run:1",
        "run%2e",
    ],
    ids=[
        "empty",
        "129-chars",
        "leading-underscore",
        "leading-dot",
        "leading-dash",
        "double-dot",
        "dotdot",
        "uppercase-first",
        "uppercase-inside",
        "unicode",
        "fullwidth",
        "space",
        "slash",
        "backslash",
        "trailing-newline",
        "nul",
        "colon",
        "percent",
    ],
)
def test_invalid_run_id_raises_invalid_input(run_id: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_run_id(run_id)
    assert info.value.code == "invalid_input"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("run_id", [None, 1, b"run_1"], ids=["none", "int", "bytes"])
def test_run_id_that_is_not_a_string_raises_invalid_input(run_id: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_run_id(run_id)
    assert info.value.code == "invalid_input"


def test_invalid_run_id_message_says_what_is_allowed() -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_run_id("Bad")
    assert "'Bad'" in info.value.message
    assert "1-128 characters" in info.value.message
    assert info.value.details == {"run_id": "'Bad'"}


# -- stream names ---------------------------------------------------------------


@pytest.mark.parametrize("stream", ["steps", "s", "a" * 64, "phase-1_outputs", "0day"])
def test_valid_stream_name_is_returned_unchanged(stream: str) -> None:
    assert validate_stream_name(stream) == stream


@pytest.mark.parametrize(
    "stream",
    ["", "a" * 65, "Steps", "_steps", "-steps", "steps.v2", "a/b", "../x", "stép", "steps\n"],
    ids=[
        "empty",
        "65-chars",
        "uppercase",
        "leading-underscore",
        "leading-dash",
        "dot",
        "slash",
        "traversal",
        "unicode",
        "newline",
    ],
)
def test_invalid_stream_name_raises_invalid_input(stream: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_stream_name(stream)
    assert info.value.code == "invalid_input"


def test_reserved_stream_is_refused_to_users() -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_stream_name("artifacts")
    assert info.value.code == "invalid_input"
    assert "written by runstore itself" in info.value.message


def test_reserved_stream_is_allowed_internally() -> None:
    assert validate_stream_name("artifacts", allow_reserved=True) == "artifacts"


# -- artifact names ---------------------------------------------------------------


def _components(*sizes: int) -> str:
    return "/".join("x" * size for size in sizes)


REFUSED_ARTIFACT_NAMES = {
    "empty": "",
    "dot": ".",
    "dotdot": "..",
    "dot-component": "a/./b",
    "dotdot-component": "a/../b",
    "dotdot-escape": "../escape",
    "deep-escape": "a/../../escape",
    "trailing-dotdot": "a/..",
    "empty-component": "a//b",
    "trailing-slash": "a/b/",
    "absolute": "/etc/passwd",
    "absolute-double": "//server/share",
    "backslash": "a\\b",
    "backslash-traversal": "..\\..\\escape",
    "drive-letter": "C:evil",
    "drive-letter-lower": "c:/windows/x",
    "drive-letter-alone": "Z:",
    "nul": "nul\x00byte",
    "newline": "line\nbreak",
    "carriage-return": "a\rb",
    "tab": "a\tb",
    "escape-char": "a\x1b[31mred",
    "delete-char": "a\x7f",
    "c1-control-nel": "a\x85b",
    "c1-control-csi": "a\x9b31m",
    "hash": "frag#ment",
    "hash-alone": "#",
    "percent-dot": "%2e%2e/escape",
    "percent-upper": "%2E%2E/escape",
    "percent-slash": "a%2fb",
    "percent-double-encoded": "%252e%252e/escape",
    "percent-letter": "%41",
    "lone-surrogate": "a\ud800b",
    "33-components": "a/" * MAX_ARTIFACT_COMPONENTS + "a",
    "component-256-bytes": "x" * (MAX_COMPONENT_BYTES + 1),
    "component-256-bytes-multibyte": "é" * 128,  # 128 characters, 256 bytes
    "component-258-bytes-3-byte-chars": "€" * 86,
    "name-1025-bytes": _components(255, 255, 255, 254, 2),
    "name-1025-bytes-multibyte": _components(255, 255, 255, 254) + "/é",  # 1024 chars
}


@pytest.mark.parametrize("name", REFUSED_ARTIFACT_NAMES.values(), ids=REFUSED_ARTIFACT_NAMES.keys())
def test_hostile_artifact_name_raises_invalid_input(name: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_artifact_name(name)
    assert info.value.code == "invalid_input"
    assert info.value.details["name"] == repr(name)
    assert info.value.details["reason"]


@pytest.mark.parametrize("name", [None, b"a.txt", 3], ids=["none", "bytes", "int"])
def test_artifact_name_that_is_not_a_string_raises_invalid_input(name: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_artifact_name(name)
    assert info.value.code == "invalid_input"


def test_refused_artifact_name_message_says_why_and_what_to_use() -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_artifact_name("../escape")
    assert "'..'" in info.value.message
    assert "relative POSIX path" in info.value.message


ACCEPTED_ARTIFACT_NAMES = {
    "simple": "report.json",
    "nested": "inst_001/step_001_request.json",
    "hidden-file": ".hidden",
    "three-dots": "...",
    "dots-inside": "a..b/c.d",
    "space": "my report.pdf",
    "lone-percent": "100%",
    "percent-not-hex": "a%zz",
    "colon-later": "a/C:x",
    "32-components": "a/" * (MAX_ARTIFACT_COMPONENTS - 1) + "a",
    "component-255-bytes": "x" * MAX_COMPONENT_BYTES,
    "component-254-bytes-multibyte": "é" * 127,
    "component-255-bytes-3-byte-chars": "€" * 85,
    "name-1024-bytes": _components(255, 255, 255, 254, 1),
    "fullwidth-dots-and-slash": "\uff0e\uff0e\uff0fescape",  # fullwidth "../escape"
    "division-slash": "..\u2215escape",
    "nfd-accent": "cafe\u0301.txt",
    "nfc-accent": "caf\u00e9.txt",
    "zero-width-dotdot": "\u200b../x",
    "zero-width-joiner": "a\u200db",
    "bidi-override": "txt.\u202eexe",
    "emoji": "🧪/result.json",
}


@pytest.mark.parametrize(
    "name", ACCEPTED_ARTIFACT_NAMES.values(), ids=ACCEPTED_ARTIFACT_NAMES.keys()
)
def test_accepted_artifact_name_round_trips_unchanged(name: str) -> None:
    assert validate_artifact_name(name) is name


def test_nfc_and_nfd_spellings_stay_distinct_names() -> None:
    nfd, nfc = "cafe\u0301.txt", "caf\u00e9.txt"
    assert (validate_artifact_name(nfd), validate_artifact_name(nfc)) == (nfd, nfc)
    assert nfd != nfc


def test_limits_are_the_documented_ones() -> None:
    assert (MAX_ARTIFACT_COMPONENTS, MAX_COMPONENT_BYTES, MAX_ARTIFACT_NAME_BYTES) == (
        32,
        255,
        1024,
    )


_PATHISH = st.lists(
    st.text(alphabet="./\\%#:aC2eE5é\x00\n\u200b\uff0e", max_size=6), max_size=5
).map("/".join)


@given(st.one_of(st.text(), _PATHISH))
@example("../x")
@example("a/../../x")
@example("%2e%2e/x")
@example("..")
def test_any_name_is_refused_or_stays_inside_the_root(name: str) -> None:
    try:
        accepted = validate_artifact_name(name)
    except InvalidInputError:
        return
    assert accepted is name
    assert posixpath.normpath(posixpath.join("root", name)).startswith("root/")


@given(st.one_of(st.text(), st.text(alphabet="az09_-./\\A\u0131", max_size=130)))
@example("a" * 128)
@example("a..")
def test_any_run_id_is_refused_or_is_one_safe_path_component(run_id: str) -> None:
    try:
        accepted = validate_run_id(run_id)
    except InvalidInputError:
        return
    assert accepted is run_id
    assert 1 <= len(run_id) <= 128
    assert posixpath.dirname(posixpath.normpath(posixpath.join("root", run_id))) == "root"
    assert run_id.isascii()
    assert run_id == run_id.lower()
