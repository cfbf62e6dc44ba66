"""The run-index query language: grammar, errors, reference semantics, order and pages."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstore.model.errors import InvalidInputError
from runstore.model.query import (
    PLAIN_FIELDS,
    SUMMARY_FIELDS,
    TIME_FIELDS,
    And,
    Compare,
    CompareOp,
    Contains,
    Expr,
    Field,
    In,
    IsNull,
    Like,
    Not,
    Or,
    OrderKey,
    complete_order,
    parse_order_by,
    parse_where,
    render,
    render_order,
)
from runstore.model.run import RunRecord
from runstore.model.selection import PAGE_BLOCK, Page, matches, select, sort_values
from runstore.spi import RunQuery

T0 = datetime(2024, 1, 15, tzinfo=UTC)
STATUS, META_X, TAGS = Field("status"), Field("metadata", "x"), Field("tags")
CREATED, RUN_ID, LANG = Field("created_at"), Field("run_id"), Field("metadata", "lang")


def rec(run_id: str = "r1", minutes: int = 0, **fields: Any) -> RunRecord:
    stamp = T0 + timedelta(minutes=minutes)
    made = {"status": "succeeded", "created_at": stamp, "updated_at": stamp} | fields
    return RunRecord(run_id=run_id, **made)


def refused(text: str) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught:
        parse_where(text)
    return caught.value


def ids(records: Sequence[RunRecord]) -> list[str]:
    return [r.run_id for r in records]


# -- grammar ------------------------------------------------------------------

A, B, C = (Compare(STATUS, "=", v) for v in "abc")
SUT, M = Field("sut_name"), Field("metrics", "m")
P = pytest.param


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


PARSES = [
    *(P(f"status {op} 'a'", Compare(STATUS, op, "a"), id=op) for op in get_args(CompareOp)),
    P("status <> 'a'", Compare(STATUS, "!=", "a"), id="angle-brackets-are-not-equal"),
    P("status = 'a' OR status = 'b' AND status = 'c'", Or((A, And((B, C)))), id="and-first"),
    P("((status = 'a' OR status = 'b')) AND status = 'c'", And((Or((A, B)), C)), id="parens"),
    P("NOT NOT status = 'a' AND status = 'b'", And((Not(Not(A)), B)), id="not-is-unary"),
    P("not status = 'a' and status = 'b' Or status = 'c'", Or((And((Not(A), B)), C)), id="case"),
    P("metadata.x IN (1, 'a', TRUE)", In(META_X, (1, "a", True)), id="in"),
    P("metadata.x NOT IN (2.5)", In(META_X, (2.5,), negated=True), id="not-in"),
    P("sut_name LIKE 'a%'", Like(SUT, "a%"), id="like"),
    P("sut_name NOT LIKE 'a%'", Like(SUT, "a%", negated=True), id="not-like"),
    P("sut_name ILIKE 'a_'", Like(SUT, "a_", case_insensitive=True), id="ilike"),
    P("sut_name not ilike 'a'", Like(SUT, "a", True, True), id="not-ilike"),
    P("finished_at IS NULL", IsNull(Field("finished_at")), id="is-null"),
    P("finished_at IS NOT NULL", IsNull(Field("finished_at"), True), id="is-not-null"),
    P("tags CONTAINS 'nightly'", Contains(TAGS, "nightly"), id="contains"),
    *(P(f"{f} = 'v'", Compare(Field(f), "=", "v"), id=f) for f in ("run_id", "sut_name", "tags")),
    *(P(f"summary.{f} > 1", Compare(Field("summary", f), ">", 1), id=f) for f in SUMMARY_FIELDS),
    P("metrics.1st.loss-avg < 0.5", Compare(Field("metrics", "1st.loss-avg"), "<", 0.5), id="key"),
    P("metadata.`k`` = x` = 1", Compare(Field("metadata", "k` = x"), "=", 1), id="backtick-key"),
    P("status = 'single'", Compare(STATUS, "=", "single"), id="single-quotes"),
    P('status = "double"', Compare(STATUS, "=", "double"), id="double-quotes"),
    P(r"status = 'it\'s'", Compare(STATUS, "=", "it's"), id="backslash-quote"),
    P("status = 'it''s'", Compare(STATUS, "=", "it's"), id="doubled-quote"),
    P('status = "a ""b"""', Compare(STATUS, "=", 'a "b"'), id="doubled-double-quote"),
    P(r"status = 'a\\b'", Compare(STATUS, "=", "a\\b"), id="backslash-backslash"),
    P(r"status = '1\%'", Compare(STATUS, "=", "1\\%"), id="other-backslash-stays"),
    P("status = ''", Compare(STATUS, "=", ""), id="empty-string"),
    P("metrics.m = 42", Compare(M, "=", 42), id="int"),
    P("metrics.m = -7", Compare(M, "=", -7), id="negative-int"),
    P("metrics.m = 2.5", Compare(M, "=", 2.5), id="float"),
    P("metrics.m = -1.5E-2", Compare(M, "=", -0.015), id="exponent"),
    P("metrics.m = 1e3", Compare(M, "=", 1000.0), id="exponent-is-float"),
    P("metadata.x = true", Compare(META_X, "=", True), id="true"),
    P("metadata.x != FALSE", Compare(META_X, "!=", False), id="false"),
    P("created_at > '2024-01-15'", Compare(CREATED, ">", T0), id="date"),
    P("created_at > '2024-01-15T10:30'", Compare(CREATED, ">", at(10.5)), id="naive-is-utc"),
    P("created_at > '2024-01-15T12:00+02:00'", Compare(CREATED, ">", at(10)), id="offset"),
    P("created_at > '2024-01-15T00:00:00.5Z'", Compare(CREATED, ">", at(0.5 / 3600)), id="z"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "tree"), PARSES)
def test_a_filter_parses_to_its_tree(text: str, tree: Expr) -> None:
    assert parse_where(text) == tree and render(parse_where(text)) == render(tree)


def test_render_is_canonical_text() -> None:
    text = "not (status='a' or metadata.`a b`<>1) and tags contains \"it's\" "
    text += "OR created_at<'2024-01-15'"
    assert render(parse_where(text)) == (
        "NOT (status = 'a' OR metadata.`a b` != 1) AND tags CONTAINS 'it\\'s' "
        "OR created_at < '2024-01-15T00:00:00+00:00'"
    )


# -- errors -------------------------------------------------------------------

FIELDS = (
    "run_id, status, sut_name, created_at, updated_at, finished_at, tags, "
    "metadata.<key>, summary.<field> or metrics.<name>"
)
OPS = "=, !=, <>, <, <=, >, >=, IN, NOT IN"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("status = ", "10: expected a value after '=', found end of input"),
        ("", f"1: expected {FIELDS}, found end of input"),
        ("colour = 1", f"1: expected {FIELDS}, found 'colour'"),
        ("status = 'a' AND", f"17: expected {FIELDS}, found end of input"),
        ("summary.bad = 1", "1: expected summary.instance_count, summary.pass_count, "
         "summary.fail_count, summary.error_count, summary.skip_count, summary.pass_rate or "
         "summary.duration_ms, found 'summary.bad'"),
        ("metadata. = 1", "10: expected a key after 'metadata.', found ' '"),
        ("metadata.`k = 1", "16: expected a closing ` after the key at position 10, "
         "found end of input"),
        ("status = 'a", "12: expected a closing ' after the string at position 10, "
         "found end of input"),
        ("status @ 1", f"8: expected {OPS}, LIKE, NOT LIKE, ILIKE, NOT ILIKE, IS NULL or "
         "IS NOT NULL after 'status', found '@'"),
        ("created_at LIKE 'x'", f"12: expected {OPS}, IS NULL or IS NOT NULL after "
         "'created_at', found 'LIKE'"),
        ("metadata.x CONTAINS 'a'", f"12: expected {OPS}, LIKE, NOT LIKE, ILIKE, NOT ILIKE, "
         "IS NULL or IS NOT NULL after 'metadata.x', found 'CONTAINS'"),
        ("tags CONTAINS 1", "15: expected a string after 'CONTAINS', found '1'"),
        ("created_at = 5", "14: expected an ISO 8601 date or datetime string, found '5'"),
        ("created_at < 'soon'", "14: expected an ISO 8601 date or datetime string, "
         "found the string 'soon'"),
        ("status IN ()", "12: expected a value after '(', found ')'"),
        ("status IN 'a'", "11: expected '(' after 'IN', found the string 'a'"),
        ("status IN ('a' 'b')", "16: expected ',' or ')', found the string 'b'"),
        ("status IS", "10: expected NULL or NOT NULL after 'IS', found end of input"),
        ("status IS NOT 1", "15: expected NULL after 'IS NOT', found '1'"),
        ("status NOT = 1", "12: expected IN, LIKE or ILIKE after 'NOT', found '='"),
        ("created_at NOT LIKE 'x'", "16: expected IN after 'NOT', found 'LIKE'"),
        ("status LIKE 1", "13: expected a string after 'LIKE', found '1'"),
        ("status LIKE 'a\\\\'", "13: expected a pattern that does not end in a lone "
         "backslash, found the string 'a\\\\'"),
        ("metadata.x = NULL", "14: expected a value after '=', found 'NULL'"),
        ("metrics.m = 99999999999999999999", "13: expected an integer in the signed 64-bit "
         "range, found '99999999999999999999'"),
        ("metrics.m > 1e999", "13: expected a finite number, found '1e999'"),
        ("(status = 'a'", "14: expected AND, OR or ')', found end of input"),
        ("status = 'a')", "13: expected AND, OR or end of input, found ')'"),
        ("status = 'a' sut_name = 'b'", "14: expected AND, OR or end of input, "
         "found 'sut_name'"),
    ],
)  # fmt: skip
def test_a_malformed_filter_names_position_expectation_and_what_was_found(
    text: str, message: str
) -> None:
    assert refused(text).message == f"invalid filter at position {message}"


def test_error_details_carry_position_expected_and_found() -> None:
    details = {"position": 14, "expected": ["a value"], "found": "end of input"}
    assert refused("status IN (1,").details == details


def test_a_filter_over_4096_characters_is_refused() -> None:
    text = " OR ".join(["status = 'x'"] * 400)
    assert refused(text).details["position"] == 4097
    assert "expected at most 4096 characters" in refused(text).message


def test_nesting_deeper_than_32_is_refused() -> None:
    assert parse_where("(" * 32 + "status = 'a'" + ")" * 32) == Compare(STATUS, "=", "a")
    error = refused("NOT " * 16 + "(" * 17 + "status = 'a'" + ")" * 17)
    assert error.message == (
        "invalid filter at position 81: expected at most 32 nested parentheses and NOTs, found '('"
    )


def test_a_tree_built_by_hand_is_checked() -> None:
    with pytest.raises(InvalidInputError, match="expected an ISO 8601"):
        Compare(Field("created_at"), "=", "2024-01-15")
    with pytest.raises(InvalidInputError, match="expected the field tags"):
        Contains(STATUS, "x")
    with pytest.raises(InvalidInputError, match=r"expected summary\.instance_count"):
        Field("summary", "nope")


# -- semantics ----------------------------------------------------------------

NAIVE = {"created_at": datetime(2024, 1, 15)}
LANGS = {"metadata": {"x": ["de", "fr", None]}}
ABSENT = ["metadata.x = 1", "metadata.x != 1", "metadata.x < 1", "metadata.x IN (1)"]
ABSENT += ["metadata.x NOT IN (1)", "metadata.x LIKE '%'", "metadata.x NOT ILIKE 'a'"]
ABSENT += ["metadata.x IS NOT NULL", "sut_name != 'a'", "summary.pass_rate != 0.5"]

HOLDS = [
    *(P(where, {}, False, id=f"absent-fails {where}") for where in ABSENT),
    *(P(w, {"metadata": {"x": None}}, False, id=f"null-fails {w}") for w in ABSENT),
    P("metadata.x IS NULL", {}, True, id="is-null-missing-key"),
    P("metadata.x IS NULL", {"metadata": {"x": None}}, True, id="is-null-null"),
    P("metrics.m IS NULL", {"metrics": {"m": float("nan")}}, True, id="is-null-nan"),
    P("metadata.x IS NULL", {"metadata": {"x": []}}, False, id="empty-list-is-present"),
    P("NOT (metadata.x = 1)", {}, True, id="not-of-absent-is-true"),
    P("NOT metadata.x != 1", {}, True, id="not-of-absent-negation-is-true"),
    P("metadata.x = 1.0", {"metadata": {"x": 1}}, True, id="int-equals-float"),
    P("summary.pass_rate > 0", {"pass_rate": 0.5}, True, id="summary-field"),
    P("summary.instance_count = 3", {"instance_count": 3}, True, id="instance-count"),
    P("metrics.loss <= 2", {"metrics": {"loss": 2.0}}, True, id="metric"),
    P("metadata.x = 1", {"metadata": {"x": True}}, False, id="bool-is-no-number"),
    P("metadata.x = TRUE", {"metadata": {"x": 1}}, False, id="number-is-no-bool"),
    P("metadata.x = TRUE", {"metadata": {"x": True}}, True, id="bool-equals"),
    P("metadata.x != TRUE", {"metadata": {"x": False}}, True, id="bool-differs"),
    P("metadata.x > FALSE", {"metadata": {"x": True}}, False, id="bool-has-no-order"),
    P("metadata.x = '1'", {"metadata": {"x": 1}}, False, id="mismatch-is-false"),
    P("metadata.x < 'z'", {"metadata": {"x": 1}}, False, id="mismatch-order-false"),
    P("metadata.x != '1'", {"metadata": {"x": 1}}, True, id="mismatch-negation-true"),
    P("metadata.x NOT LIKE '%'", {"metadata": {"x": 1}}, True, id="not-like-number"),
    P("sut_name < 'a'", {"sut_name": "Z"}, True, id="code-point-order"),
    P("sut_name > 'z'", {"sut_name": "é"}, True, id="code-point-order-non-ascii"),
    P("created_at = '2024-01-15T01:00+01:00'", {}, True, id="time-by-instant"),
    P("created_at >= '2024-01-15'", NAIVE, True, id="naive-record-time-is-utc"),
    P("metadata.x = 'fr'", LANGS, True, id="list-any-equals"),
    P("metadata.x IN ('en', 'de')", LANGS, True, id="list-any-in"),
    P("metadata.x LIKE 'f%'", LANGS, True, id="list-any-like"),
    P("metadata.x > 'e'", LANGS, True, id="list-any-greater"),
    P("metadata.x != 'fr'", LANGS, False, id="list-not-equal-needs-no-match"),
    P("metadata.x != 'en'", LANGS, True, id="list-not-equal"),
    P("metadata.x NOT IN ('de')", LANGS, False, id="list-not-in-needs-no-match"),
    P("metadata.x NOT LIKE 'e%'", LANGS, True, id="list-not-like"),
    P("metadata.x != 'en'", {"metadata": {"x": []}}, True, id="empty-list-not-equal"),
    P("tags CONTAINS 'b'", {"tags": ["a", "b"]}, True, id="contains-member"),
    P("tags CONTAINS 'c'", {"tags": ["a"]}, False, id="contains-non-member"),
    P("tags = 'a'", {"tags": ["a"]}, True, id="tags-are-a-list"),
    P("tags IS NULL", {}, False, id="tags-are-never-null"),
    P("sut_name LIKE 'shop%'", {"sut_name": "shop-eu"}, True, id="like-percent"),
    P("sut_name LIKE 'shop_'", {"sut_name": "shops"}, True, id="like-underscore"),
    P("sut_name LIKE 'shop_'", {"sut_name": "shop"}, False, id="like-one-character"),
    P("sut_name LIKE 'shop'", {"sut_name": "shop-eu"}, False, id="like-whole-value"),
    P("sut_name LIKE '%-eu'", {"sut_name": "a-EU"}, False, id="like-case-sensitive"),
    P(r"sut_name LIKE '1\%'", {"sut_name": "1%"}, True, id="like-escaped-percent"),
    P(r"sut_name LIKE '1\%'", {"sut_name": "10"}, False, id="like-escape-literal"),
    P(r"sut_name LIKE 'a\_b'", {"sut_name": "axb"}, False, id="like-escaped-under"),
    P("sut_name LIKE 'a.c'", {"sut_name": "abc"}, False, id="like-no-regex"),
    P("sut_name LIKE '%'", {"sut_name": "two\nlines"}, True, id="like-newline"),
    P("sut_name ILIKE 'SHOP-%'", {"sut_name": "Shop-eu"}, True, id="ilike"),
    P("sut_name ILIKE 'straße'", {"sut_name": "STRAẞE"}, True, id="ilike-unicode"),
]  # fmt: skip


@pytest.mark.parametrize(("where", "fields", "expected"), HOLDS)
def test_a_filter_holds_by_the_reference_rules(where: str, fields: Any, expected: bool) -> None:
    assert matches(parse_where(where), rec(**fields)) is expected


# -- order --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, "created_at DESC, run_id DESC"),
        ("-created_at", "created_at DESC, run_id DESC"),
        ("created_at desc", "created_at DESC, run_id DESC"),
        ("metadata.lang", "metadata.lang ASC, run_id ASC"),
        ("summary.pass_rate, -created_at", "summary.pass_rate ASC, created_at DESC, run_id ASC"),
        (["-status", "metadata.`a,b` DESC"], "status DESC, metadata.`a,b` DESC, run_id DESC"),
        ("run_id, created_at", "run_id ASC, created_at ASC"),
    ],
)  # fmt: skip
def test_order_by_forms_and_the_run_id_tie_breaker(spec: Any, expected: str) -> None:
    assert render_order(parse_order_by(spec)) == expected
    assert parse_order_by(expected) == parse_order_by(spec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tags", "invalid sort order at position 1: expected run_id, status, sut_name, "
         "created_at, updated_at, finished_at, metadata.<key>, summary.<field> or "
         "metrics.<name>, found 'tags'"),
        ("status UP", "invalid sort order at position 8: expected ASC, DESC, ',' or end of "
         "input, found 'UP'"),
        ("-status DESC", "invalid sort order at position 9: expected ',' or end of input, "
         "found 'DESC'"),
        (["status", "size"], "invalid sort order item 2 at position 1: expected run_id, "
         "status, sut_name, created_at, updated_at, finished_at, metadata.<key>, "
         "summary.<field> or metrics.<name>, found 'size'"),
        ([], "an empty sort order: give at least one key, or None for newest first"),
    ],
)  # fmt: skip
def test_a_bad_sort_order_is_refused(spec: Any, message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_order_by(spec)
    assert caught.value.message == message


def test_default_order_is_newest_first_with_run_id_breaking_ties() -> None:
    records = [rec("a", 1), rec("c", 2), rec("b", 2)]
    assert ids(select(records)) == ["c", "b", "a"]


def test_absent_values_sort_last_in_both_directions() -> None:
    records = [rec("a"), rec("b", metadata={"lang": "de"}), rec("c", metadata={"lang": ["x"]})]
    records.append(rec("d", metadata={"lang": "fr"}))
    assert ids(select(records, order=parse_order_by("metadata.lang"))) == ["b", "d", "a", "c"]
    assert ids(select(records, order=parse_order_by("-metadata.lang"))) == ["d", "b", "c", "a"]


def test_mixed_types_sort_numbers_then_strings_then_bools() -> None:
    values = [True, "b", 2.5, 1, "a", False]
    records = [rec(f"r{i}", metadata={"lang": v}) for i, v in enumerate(values)]
    ascending = [r.metadata["lang"] for r in select(records, order=(OrderKey(LANG),))]
    assert ascending == [1, 2.5, "a", "b", False, True]
    reverse = (OrderKey(LANG, descending=True),)
    assert select(records, order=reverse)[0].metadata["lang"] is True


# -- pages --------------------------------------------------------------------


def test_a_page_is_a_list_with_the_token_of_the_next() -> None:
    page = select([rec("a", 1), rec("b", 2), rec("c", 3)], limit=2)
    assert isinstance(page, Page) and page == [rec("c", 3), rec("b", 2)]
    rest = select([rec("a", 1), rec("b", 2), rec("c", 3)], limit=2, page_token=page.next_page_token)
    assert ids(rest) == ["a"] and rest.next_page_token is None


def test_keyset_pages_neither_repeat_nor_skip_when_runs_are_added() -> None:
    records = [rec(f"r{i}", i) for i in range(5)]
    first = select(records, limit=2)
    records += [rec("new", 10), rec("r1b", 1)]  # one before the cursor, one after
    second = select(records, limit=2, page_token=first.next_page_token)
    assert ids(first) == ["r4", "r3"] and ids(second) == ["r2", "r1b"]


def test_a_token_from_another_filter_or_order_is_refused() -> None:
    token = select([rec("a"), rec("b")], limit=1).next_page_token
    with pytest.raises(InvalidInputError, match="belongs to another filter or sort order"):
        select([rec("a")], where=parse_where("status = 'x'"), limit=1, page_token=token)
    with pytest.raises(InvalidInputError, match="belongs to another filter or sort order"):
        select([rec("a")], order=parse_order_by("run_id"), page_token=token)


@pytest.mark.parametrize("token", ["", "not a token", "e30", "eyJ2IjoxfQ", "éé"])
def test_a_token_that_was_never_issued_is_refused(token: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid page token"):
        select([rec()], page_token=token)


# -- RunQuery -----------------------------------------------------------------


def test_run_query_keeps_the_classic_filters_and_offset() -> None:
    records = [rec("a", 1, sut_name="shop"), rec("b", 2), rec("c", 3, sut_name="shop")]
    query = RunQuery(sut_name="shop", created_after=T0, limit=1, offset=1)
    assert query.apply(records) == [records[0]] and query.apply([]) == []
    assert query.where is None and query.classic


def test_run_query_parses_where_and_order_by_on_construction() -> None:
    query = RunQuery(where="metadata.lang = 'de'", order_by="-summary.pass_rate")
    assert query.where == Compare(LANG, "=", "de") and not query.classic
    assert query.order_by == (OrderKey(Field("summary", "pass_rate"), True), OrderKey(RUN_ID, True))
    with pytest.raises(InvalidInputError, match="at position 16"):
        RunQuery(where="metadata.lang =")
    assert RunQuery(where="  ").where is None  # blank is no filter, as in MLflow


def test_run_query_matches_the_classic_filters_and_where() -> None:
    query = RunQuery(status="succeeded", where=Compare(LANG, "=", "de"))
    assert query.matches(rec(metadata={"lang": "de"}))
    assert not query.matches(rec(metadata={"lang": "fr"}))
    assert not query.matches(rec(metadata={"lang": "de"}).model_copy(update={"status": "failed"}))


def test_run_query_pages_with_tokens_bound_to_its_filters() -> None:
    records = [rec(f"r{i}", i, sut_name="shop" if i % 2 else None) for i in range(6)]
    first = RunQuery(sut_name="shop", limit=2).apply(records)
    rest = RunQuery(sut_name="shop", limit=2, page_token=first.next_page_token).apply(records)
    assert ids(first) == ["r5", "r3"] and ids(rest) == ["r1"]
    with pytest.raises(InvalidInputError, match="another filter"):
        RunQuery(limit=2, page_token=first.next_page_token).apply(records)
    with pytest.raises(InvalidInputError, match="not both"):
        RunQuery(offset=1, page_token=first.next_page_token)


# -- properties ---------------------------------------------------------------

texts = st.text(max_size=6)
numbers = st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
scalars = texts | numbers | st.booleans()
moments = st.datetimes(timezones=st.just(UTC))
keyed = st.builds(Field, st.sampled_from(["metadata", "metrics"]), texts.filter(bool))
summaries = st.sampled_from([Field("summary", name) for name in SUMMARY_FIELDS])
times = st.sampled_from([Field(name) for name in sorted(TIME_FIELDS)])
others = (
    st.sampled_from([Field(f) for f in PLAIN_FIELDS if f not in TIME_FIELDS]) | keyed | summaries
)
patterns = texts.map(lambda t: t + "x" if t.endswith("\\") else t)


def predicates(
    fields: st.SearchStrategy[Field],
    literal: st.SearchStrategy[Any],
    *more: st.SearchStrategy[Expr],
) -> st.SearchStrategy[Expr]:
    values = st.lists(literal, min_size=1, max_size=3).map(tuple)
    return st.one_of(
        st.builds(Compare, fields, st.sampled_from(get_args(CompareOp)), literal),
        st.builds(In, fields, values, st.booleans()),
        st.builds(IsNull, fields, st.booleans()),
        *more,
    )


leaves = predicates(times, moments) | predicates(
    others,
    scalars,
    st.builds(Like, others, patterns, st.booleans(), st.booleans()),
    st.builds(Contains, st.just(TAGS), texts),
)


def _combine(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    several = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.builds(And, several) | st.builds(Or, several) | st.builds(Not, children)


filters = st.recursive(leaves, _combine, max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(filters)
def test_a_rendered_tree_parses_back_to_the_same_tree(expr: Expr) -> None:
    text = render(expr)
    assert parse_where(text) == expr and render(parse_where(text)) == text


LEXEMES = ["status", "metadata.k", "summary.pass_rate", "tags", "created_at", "AND", "or", "NOT"]
LEXEMES += ["IN", "LIKE", "IS", "NULL", "CONTAINS", "TRUE", "(", ")", ",", "=", "<>", "'a'", '"']
LEXEMES += ["'", "`", "1", "-2.5e3", "'2024-01-15'", " ", "\\", "%", ".", "-", "DESC"]
lexemes = st.sampled_from(LEXEMES)
noise = st.lists(lexemes | st.text(max_size=3), max_size=12).map(" ".join) | st.text()


@settings(max_examples=300, deadline=None)
@given(noise)
def test_any_text_parses_or_raises_invalid_input_only(text: str) -> None:
    for parse in (parse_where, parse_order_by):
        try:
            parse(text)
        except InvalidInputError:
            pass


labels = st.integers(0, 3) | st.sampled_from(["a", "b"]) | st.booleans()


@st.composite
def records(draw: st.DrawFn) -> list[RunRecord]:
    made = []
    for number in range(draw(st.integers(0, 12))):
        lang = draw(st.none() | labels | st.lists(st.none() | labels, max_size=2))
        made.append(rec(f"r{number:02}", draw(st.integers(0, 3)), metadata={"lang": lang}))
    return made


wheres = st.none() | st.recursive(predicates(st.just(LANG), labels), _combine, max_leaves=3)
keys = st.builds(OrderKey, st.sampled_from([CREATED, LANG, RUN_ID]), st.booleans())
orders = st.lists(keys, min_size=1, max_size=2).map(complete_order)


def _type_rank(value: object) -> tuple[bool, bool, object]:
    """Numbers, then strings, then bools: the documented order of types, restated."""
    return isinstance(value, bool), isinstance(value, str), value


def _in_order(a: RunRecord, b: RunRecord, order: tuple[OrderKey, ...]) -> bool:
    for key, x, y in zip(order, sort_values(a, order), sort_values(b, order), strict=True):
        if x is None or y is None:
            if (x is None) != (y is None):
                return y is None  # absent last, either direction
        elif _type_rank(x) != _type_rank(y):
            return (_type_rank(x) < _type_rank(y)) != key.descending
    return True


@settings(max_examples=150, deadline=None)
@given(records(), wheres, orders, st.integers(1, 4), records())
def test_paging_yields_the_filtered_sorted_list_once_even_as_runs_are_added(
    initial: list[RunRecord],
    where: Expr | None,
    order: tuple[OrderKey, ...],
    limit: int,
    added: list[RunRecord],
) -> None:
    everything = select(initial, where, order)
    hits = [r for r in initial if where is None or matches(where, r)]
    assert sorted(ids(everything)) == sorted(ids(hits))
    store, pages = list(initial), [select(initial, where, order, limit)]
    while (token := pages[-1].next_page_token) is not None:
        store += [r.model_copy(update={"run_id": f"new_{r.run_id}"}) for r in added[:1]]
        added = added[1:]
        pages.append(select(store, where, order, limit, token))
    seen = [r for page in pages for r in page]
    assert all(len(page) <= limit for page in pages)
    assert len(ids(seen)) == len(set(ids(seen)))
    assert all(_in_order(a, b, order) for a, b in itertools.pairwise(seen))
    assert all(where is None or matches(where, r) for r in seen)
    assert [r for r in seen if not r.run_id.startswith("new_")] == everything
    if len(store) == len(initial):
        assert seen == everything


# -- Page: a sequence, parsed block by block when built from JSON ---------------


def test_a_page_from_json_parses_only_the_blocks_read() -> None:
    records = [rec(f"r{n:05}", n) for n in range(2 * PAGE_BLOCK + 5)]
    parsed: list[int] = []

    def decode(rows: Sequence[bytes]) -> list[RunRecord]:
        parsed.append(len(rows))
        return [RunRecord.model_validate_json(row) for row in rows]

    page = Page.from_json([r.model_dump_json().encode() for r in records], decode, "next")
    assert len(page) == len(records) and page.next_page_token == "next" and parsed == []
    assert page[-1] == records[-1] and parsed == [5]  # the last block only
    assert page[PAGE_BLOCK + 1] == records[PAGE_BLOCK + 1] and parsed == [5, PAGE_BLOCK]
    assert page[-1] == records[-1] and len(parsed) == 2  # parsed once
    assert page == records and parsed == [5, PAGE_BLOCK, PAGE_BLOCK]
    assert list(page) == records and page[3:6] == records[3:6] and page[::-1] == records[::-1]


def test_a_page_is_a_read_only_sequence_equal_to_its_records() -> None:
    a, b = rec("a", 1), rec("b", 2)
    page = Page([a, b])
    assert page == [a, b] and [a, b] == page and page == Page([a, b]) and page == (a, b)
    assert page != [b, a] and page != [a] and page != "ab" and Page() == []
    assert page.index(b) == 1 and b in page and list(reversed(page)) == [b, a]
    assert not Page() and bool(page) and repr(Page()) == "Page([], next_page_token=None)"
    with pytest.raises(IndexError):
        page[2]
    with pytest.raises(IndexError):
        page[-3]
    with pytest.raises(TypeError):
        hash(page)
