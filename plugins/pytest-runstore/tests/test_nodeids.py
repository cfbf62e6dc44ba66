"""The node id encoding: reversible, and always a valid instance id and artifact component."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pytest_runstore.nodeids import MAX_INSTANCE_ID_BYTES, decode_instance_id, encode_nodeid

from runstore import InvalidInputError
from runstore.model.names import validate_artifact_name

HOSTILE = [
    "tests/test_shop.py::test_total[eur/usd]",
    "tests/test_shop.py::TestCart::test_add[a]b[c]",
    "t.py::test[café-日本語]",
    "t.py::test[with space]",
    "t.py::test[~7E]",
    "t.py::test[#frag]",
    "t.py::test[%41]",
    "t.py::test[back\\slash]",
    "t.py::test[\x00\x1f\x7f\x85]",
    "c:/tests/t.py::test",
    "..",
    ".",
    "a::b",
    "t.py::test[\udcff]",  # a lone surrogate, as surrogateescape'd paths produce
]


@pytest.mark.parametrize("nodeid", HOSTILE)
def test_encoding_round_trips_and_is_one_valid_artifact_component(nodeid: str) -> None:
    instance_id = encode_nodeid(nodeid)
    assert decode_instance_id(instance_id) == nodeid
    assert validate_artifact_name(f"{instance_id}/longrepr-call.txt")
    assert "/" not in instance_id and instance_id.isascii()


def test_safe_characters_stay_readable() -> None:
    nodeid = "tests/test_x.py::TestA::test_b[1-2,x=y](z)"
    assert encode_nodeid(nodeid) == "tests~2Ftest_x.py::TestA::test_b[1-2,x=y](z)"


@given(st.text(min_size=1, max_size=60))
def test_any_text_round_trips(nodeid: str) -> None:
    instance_id = encode_nodeid(nodeid)
    if "~~" not in instance_id:
        assert decode_instance_id(instance_id) == nodeid
    assert validate_artifact_name(instance_id) == instance_id


def test_long_ids_are_shortened_with_a_digest_that_decoding_refuses() -> None:
    nodeid = "t.py::test[" + "é" * 200 + "]"
    instance_id = encode_nodeid(nodeid)
    assert len(instance_id) <= MAX_INSTANCE_ID_BYTES
    assert "~~" in instance_id
    assert encode_nodeid(nodeid + "x") != instance_id  # the digest tells them apart
    with pytest.raises(InvalidInputError, match="nodeid"):
        decode_instance_id(instance_id)


@pytest.mark.parametrize("bad", ["a/b", "a b", "~zz", "~2", "caf\u00e9", "~FF"])
def test_decoding_what_the_encoding_never_produced_is_a_typed_error(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        decode_instance_id(bad)
