"""The local index answers ``where``, ``order_by`` and page tokens in SQL exactly
as the reference semantics (:mod:`runstore.model.selection`) do."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runstore
from runstore.model import query as q
from runstore.model.errors import InvalidInputError, StorageIOError
from runstore.model.run import RunRecord, RunStatus
from runstore.model.selection import Page, encode_page_token
from runstore.spi.backends import RunQuery
from runstore_local import index as index_module
from runstore_local import index_sql
from runstore_local.index import Plan, RunIndex

BASE = datetime(2024, 1, 15, 12, tzinfo=UTC)
CET = timezone(timedelta(hours=1))
STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
STRINGS = ["", "a", "A", "b", "ab", "a_b", "axb", "shop", "Shop-EU", "1", "100%", "ß", "SS"]
STRINGS += ["straße", "STRAẞE", "é", "two\nlines", "z"]
TAGS = ["a", "b", "A", "x%"]
KEYS = ["k", "x", "odd key"]
METRICS = ["loss", "acc"]
PATTERNS = ["%", "a%", "A%", "_", "a_b", "100\\%", "%\\_%", "s%", "SHOP%", "straße", "ss"]
PATTERNS += ["two%", "%e%", "a\\b", "__", "%%", "\\a\\_b"]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[RunIndex]:
    made = RunIndex(str(tmp_path / "index.sqlite3"))
    yield made
    made.close()


def record(run_id: str, minutes: float = 0, **fields: Any) -> RunRecord:
    moment = BASE + timedelta(minutes=minutes)
    fields.setdefault("status", "succeeded")
    return RunRecord(run_id=run_id, created_at=moment, updated_at=moment, **fields)


def ids(records: Sequence[RunRecord | bytes]) -> list[str]:
    """The run ids of ``records`` (or of the JSON documents the index fetched)."""
    return [
        RunRecord.model_validate_json(r).run_id if isinstance(r, bytes) else r.run_id
        for r in records
    ]


def pages(index: RunIndex, records: list[RunRecord], **options: Any) -> list[list[str]]:
    """Every page of a query from the index, each checked against the reference's page."""
    seen, token = [], None
    while True:
        query = RunQuery(**options, page_token=token)
        ours, reference = index.query(query), query.apply(records)
        assert isinstance(ours, Page)
        assert ids(ours) == ids(reference), (options, token)
        assert ours.next_page_token == reference.next_page_token
        seen.append(ids(ours))
        token = ours.next_page_token
        if token is None:
            return seen
        options.pop("offset", None)


# -- the property ---------------------------------------------------------------

moments = st.builds(
    lambda minutes, zone: (BASE + timedelta(minutes=minutes)).astimezone(zone),
    st.integers(0, 3),
    st.sampled_from([UTC, CET]),
)
any_moments = moments | moments.map(lambda t: t.astimezone(UTC).replace(tzinfo=None))
scalars = (
    st.integers(-2, 3)
    | st.sampled_from([0.5, 1.0, -0.0, 2.5, 2**62, -(2**63), 2**63 - 1, 1e300])
    | st.booleans()
    | st.sampled_from(STRINGS)
)
labels = st.none() | scalars | st.lists(st.none() | scalars, max_size=3)
counts = st.none() | st.integers(0, 3)


@st.composite
def run_records(draw: st.DrawFn) -> list[RunRecord]:
    made = []
    for number in range(draw(st.integers(0, 9) | st.integers(3, 9))):
        made.append(
            RunRecord(
                run_id=f"r{number}",
                status=draw(st.sampled_from(STATUSES)),
                created_at=draw(moments),
                updated_at=draw(any_moments),
                finished_at=draw(st.none() | any_moments),
                sut_name=draw(st.none() | st.sampled_from(STRINGS)),
                tags=draw(st.lists(st.sampled_from(TAGS), max_size=3)),
                metadata=draw(st.dictionaries(st.sampled_from(KEYS), labels, max_size=3)),
                metrics=draw(
                    st.dictionaries(
                        st.sampled_from(METRICS), st.sampled_from([0.0, 0.5, -1.5, 3.0])
                    )
                ),
                instance_count=draw(counts),
                pass_count=draw(counts),
                fail_count=draw(counts),
                error_count=draw(counts),
                skip_count=draw(counts),
                pass_rate=draw(st.none() | st.sampled_from([0.0, 0.5, 0.9, 1.0])),
                duration_ms=draw(st.none() | st.integers(0, 3) | st.just(2**63 - 1)),
            )
        )
    return made


keyed = [q.Field("metadata", key) for key in [*KEYS, "missing"]]
keyed += [q.Field("metrics", name) for name in [*METRICS, "missing"]]
summaries = [q.Field("summary", name) for name in q.SUMMARY_FIELDS]
times = st.sampled_from([q.Field(name) for name in sorted(q.TIME_FIELDS)])
others = st.sampled_from(
    [q.Field(f) for f in q.PLAIN_FIELDS if f not in q.TIME_FIELDS] + keyed + summaries
)
operators = st.sampled_from(get_args(q.CompareOp))


def listed(values: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(values, min_size=1, max_size=3).map(tuple)


leaves: st.SearchStrategy[q.Expr] = st.one_of(
    st.builds(q.Compare, times, operators, moments),
    st.builds(q.In, times, listed(moments), st.booleans()),
    st.builds(q.Compare, others, operators, scalars.filter(lambda v: v != 1e300)),
    st.builds(q.In, others, listed(scalars), st.booleans()),
    st.builds(q.Like, others, st.sampled_from(PATTERNS), st.booleans(), st.booleans()),
    st.builds(q.IsNull, times | others, st.booleans()),
    st.builds(q.Contains, st.just(q.Field("tags")), st.sampled_from(TAGS)),
)


def _nested(children: st.SearchStrategy[q.Expr]) -> st.SearchStrategy[q.Expr]:
    two_or_three = listed(children).filter(lambda items: len(items) > 1)
    return (
        st.builds(q.And, two_or_three) | st.builds(q.Or, two_or_three) | st.builds(q.Not, children)
    )


filters = st.none() | st.recursive(leaves, _nested, max_leaves=6)
sortable = [q.Field(f) for f in q.PLAIN_FIELDS if f != "tags"] + summaries + keyed
orders = st.lists(st.builds(q.OrderKey, st.sampled_from(sortable), st.booleans()), max_size=3)
classics = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sets(st.sampled_from(STATUSES), min_size=1, max_size=3),
        "sut_name": st.sampled_from(STRINGS),
        "tags": st.sets(st.sampled_from(TAGS), max_size=2),
        "created_after": moments,
        "created_before": moments,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=run_records(),
    where=filters,
    order=orders,
    limit=st.sampled_from([None, 0, 1, 1, 2, 2, 3]),
    offset=st.integers(0, 2),
    classic=st.just({}) | st.just({}) | classics,
)
def test_every_page_is_the_reference_page(
    records: list[RunRecord],
    where: q.Expr | None,
    order: list[q.OrderKey],
    limit: int | None,
    offset: int,
    classic: dict[str, Any],
) -> None:
    index = RunIndex(":memory:")
    try:
        index.upsert_many(records)
        options = dict(classic, where=where, order_by=q.render_order(order) or None, limit=limit)
        query = RunQuery(**options)
        decisive = query.order_by[: [k.field.kind for k in query.order_by].index("run_id") + 1]
        pushed = all(key.field.kind not in ("metadata", "metrics") for key in decisive)
        assert index.plans(query)[-1].paged is pushed  # SQL sorts whenever it can
        pages(index, records, **options, offset=offset)
        # Both forms of the SQL, whichever query() happened to need:
        query = RunQuery(**options, offset=offset)
        reference = ids(query.apply(records))
        hits = sorted(r.run_id for r in records if query.matches(r))
        for correlated in (False, True):
            plan = index._plan(query, pushdown=True, correlated=correlated)
            found = ids(index._fetch(plan) or [])
            assert found[:limit] == reference if plan.paged else sorted(found) == hits
    finally:
        index.close()


# -- the rules, one by one ------------------------------------------------------

LABELLED = {
    "missing": {},
    "null": {"x": None},
    "one": {"x": 1},
    "one-float": {"x": 1.0},
    "true": {"x": True},
    "string-one": {"x": "1"},
    "empty": {"x": []},
    "nulls": {"x": [None]},
    "langs": {"x": ["de", "fr", None]},
    "mixed": {"x": [1, "fr", False]},
}

RULES = [
    ("metadata.x = 1", ["mixed", "one", "one-float"]),
    ("metadata.x != 1", ["empty", "langs", "nulls", "string-one", "true"]),
    ("NOT metadata.x = 1", ["empty", "langs", "missing", "null", "nulls", "string-one", "true"]),
    ("metadata.x IS NULL", ["missing", "null"]),
    ("metadata.x IS NOT NULL", [k for k in sorted(LABELLED) if k not in ("missing", "null")]),
    ("metadata.x = 'fr'", ["langs", "mixed"]),
    ("metadata.x != 'fr'", ["empty", "nulls", "one", "one-float", "string-one", "true"]),
    ("metadata.x NOT IN ('de', 1)", ["empty", "nulls", "string-one", "true"]),
    ("metadata.x > 'e'", ["langs", "mixed"]),
    ("metadata.x < 'z'", ["langs", "mixed", "string-one"]),
    ("metadata.x >= 1", ["mixed", "one", "one-float"]),
    ("metadata.x = TRUE", ["true"]),
    ("metadata.x = FALSE", ["mixed"]),
    ("metadata.x > FALSE", []),
    ("metadata.x != TRUE", ["empty", "langs", "mixed", "nulls", "one", "one-float", "string-one"]),
    ("metadata.x LIKE '%'", ["langs", "mixed", "string-one"]),
    ("metadata.x NOT LIKE 'f%'", ["empty", "nulls", "one", "one-float", "string-one", "true"]),
]


@pytest.mark.parametrize(("where", "expected"), RULES)
def test_absent_values_lists_and_types_follow_the_reference(
    index: RunIndex, where: str, expected: list[str]
) -> None:
    records = [record(name, metadata=metadata) for name, metadata in LABELLED.items()]
    index.upsert_many(records)
    query = RunQuery(where=where, order_by="run_id")
    assert ids(index.query(query)) == expected == ids(query.apply(records))


SUTS = ["Shop-EU", "shop-eu", "100%", "1000", "a_b", "axb", "STRAẞE", "two\nlines", "ab"]
LIKES = [
    ("sut_name LIKE 'shop-%'", ["shop-eu"]),  # SQLite's own LIKE would take Shop-EU too
    ("sut_name ILIKE 'shop-%'", ["Shop-EU", "shop-eu"]),
    ("sut_name LIKE '100\\\\%'", ["100%"]),
    ("sut_name LIKE '100%'", ["100%", "1000"]),
    ("sut_name LIKE 'a\\\\_b'", ["a_b"]),
    ("sut_name LIKE 'a_b'", ["a_b", "axb"]),
    ("sut_name LIKE 'a\\\\b'", ["ab"]),  # a backslash before any other character
    ("sut_name ILIKE 'straße'", ["STRAẞE"]),
    ("sut_name LIKE 'two_lines'", ["two\nlines"]),
    ("sut_name NOT LIKE '%_%'", []),
    ("summary.pass_rate LIKE '%'", []),
    ("summary.pass_rate NOT LIKE '%'", ["Shop-EU"]),
]


@pytest.mark.parametrize(("where", "expected"), LIKES)
def test_like_is_case_sensitive_and_escapes_as_the_reference(
    index: RunIndex, where: str, expected: list[str]
) -> None:
    records = [
        record(sut, sut_name=sut, pass_rate=0.5 if n == 0 else None) for n, sut in enumerate(SUTS)
    ]
    index.upsert_many(records)
    query = RunQuery(where=where, order_by="run_id")
    assert sorted(ids(index.query(query))) == sorted(expected) == sorted(ids(query.apply(records)))


def test_absent_values_sort_last_in_both_directions_across_pages(index: RunIndex) -> None:
    records = [
        record(f"r{n}", n % 3, sut_name=None if n % 4 == 0 else f"s{n % 3}", pass_rate=rate)
        for n, rate in enumerate([None, 0.5, 1.0, None, 0.0, 0.5, None, 1.0, 0.25])
    ]
    index.upsert_many(records)
    for order in ["sut_name", "-sut_name", "summary.pass_rate", "-summary.pass_rate, run_id"]:
        seen = pages(index, records, order_by=order, limit=2)
        flat = [run_id for page in seen for run_id in page]
        assert flat == ids(RunQuery(order_by=order).apply(records))
    last = ids(index.query(RunQuery(order_by="-summary.pass_rate")))[-3:]
    assert sorted(last) == ["r0", "r3", "r6"]  # the runs without a pass rate


def test_mixed_types_and_bools_sort_by_the_reference_in_python(index: RunIndex) -> None:
    values: list[Any] = [True, "b", 2, False, None, "a", 1.5, ["x"], -1]
    records = [record(f"r{n}", metadata={"x": value}) for n, value in enumerate(values)]
    index.upsert_many(records)
    assert not index.plans(RunQuery(order_by="metadata.x"))[-1].paged  # the reference sorts
    for order in ["metadata.x", "-metadata.x"]:
        pages(index, records, order_by=order, limit=3)
    ascending = ids(index.query(RunQuery(order_by="metadata.x")))
    assert ascending == ["r8", "r6", "r2", "r5", "r1", "r3", "r0", "r4", "r7"]


def test_keyset_pages_skip_and_repeat_nothing_as_runs_come_and_go(index: RunIndex) -> None:
    records = [record(f"r{n}", n // 2, metadata={"p": n % 2}) for n in range(10)]
    index.upsert_many(records)
    query = RunQuery(where="metadata.p = 0", limit=2)
    first = index.query(query)
    index.upsert(record("r99", 100, metadata={"p": 0}))  # newer: before the token's row
    index.delete(first[-1].run_id)
    rest = index.query(RunQuery(where="metadata.p = 0", page_token=first.next_page_token))
    assert ids(first) + ids(rest) == ["r8", "r6", "r4", "r2", "r0"]
    with pytest.raises(InvalidInputError, match="another filter"):
        index.query(RunQuery(where="metadata.p = 1", page_token=first.next_page_token))


def test_a_token_whose_values_fit_no_column_is_paged_by_the_reference(index: RunIndex) -> None:
    records = [record(f"r{n}", sut_name=name) for n, name in enumerate(["b", None, "a", "c"])]
    index.upsert_many(records)
    query = RunQuery(order_by="sut_name", limit=2)
    odd = record("r9").model_copy(update={"sut_name": 5})  # a number: before any string
    token = encode_page_token(odd, query.order_by, query.fingerprint)
    after = RunQuery(order_by="sut_name", limit=2, page_token=token)
    assert not index.plans(after)[-1].paged
    assert ids(index.query(after)) == ids(after.apply(records)) == ["r2", "r0"]


def test_offset_still_pages_the_classic_way(index: RunIndex) -> None:
    records = [record(f"r{n}", n, status="failed" if n % 2 else "succeeded") for n in range(7)]
    index.upsert_many(records)
    choices: list[dict[str, Any]] = [{"offset": 2, "limit": 2}, {"status": "failed", "offset": 1}]
    for options in choices:
        query = RunQuery(**options)
        assert ids(index.query(query)) == ids(query.apply(records))


def test_a_number_sqlite_cannot_hold_sends_queries_to_the_reference(index: RunIndex) -> None:
    records = [record("big", metadata={"x": 2**63}), record("small", metadata={"x": 2**63 - 1})]
    records += [record("float", metadata={"x": float(2**63)})]
    index.upsert_many(records)
    for where in ["metadata.x = 9223372036854775807", "metadata.x > 9223372036854775807"]:
        for order in ["run_id", "metadata.x"]:
            pages(index, records, where=where, order_by=order, limit=1)
    index.delete("big")
    assert index.plans(RunQuery(where="metadata.x > 1"))[-1].paged


def test_updates_and_deletes_keep_the_side_tables_in_step(index: RunIndex) -> None:
    index.upsert(record("r1", tags=["a"], metadata={"x": [1, 2]}, metrics={"m": 1.0}))
    index.upsert(record("r1", tags=["b"], metadata={"y": "v"}))
    assert ids(index.query(RunQuery(where="tags CONTAINS 'a' OR metadata.x = 1"))) == []
    assert ids(index.query(RunQuery(where="metrics.m IS NOT NULL"))) == []
    assert ids(index.query(RunQuery(where="tags = 'b' AND metadata.y = 'v'"))) == ["r1"]
    index.delete("r1")
    db = sqlite3.connect(index.path)
    try:
        for table in ("runs", "run_tags", "run_metadata", "run_metrics"):
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    finally:
        db.close()


def test_a_write_is_one_transaction_and_the_last_record_of_an_id_wins(
    index: RunIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.upsert_many([record("r1", metadata={"x": 1}), record("r1", metadata={"x": 2})])
    assert ids(index.query(RunQuery(where="metadata.x = 2"))) == ["r1"]
    rows_of = index_sql.run_rows

    def twice(run: RunRecord, data: bytes) -> index_sql.RunRows:
        rows = rows_of(run, data)
        rows.metadata *= 2  # a primary-key clash after the run's row went in
        return rows

    monkeypatch.setattr(index_sql, "run_rows", twice)
    with pytest.raises(StorageIOError):
        index.upsert(record("r2", metadata={"x": 3}))
    monkeypatch.undo()
    assert ids(index.query(RunQuery())) == ["r1"]  # nothing of r2 stayed
    assert ids(index.query(RunQuery(where="metadata.x = 3"))) == []


def test_records_read_back_equal_the_records_written(index: RunIndex) -> None:
    written = [
        record("r1", metadata={"x": [1, 1.0, True, None, "s"], "y": None}, metrics={"m": 2.0}),
        record("r2", finished_at=datetime(2024, 1, 1, 1, tzinfo=CET), pass_rate=1.0),
        RunRecord(run_id="r3", status="created", created_at=datetime(2024, 1, 1), updated_at=BASE),
    ]
    index.upsert_many(written)
    read = index.query(RunQuery(order_by="run_id"))
    assert read == written
    for ours, theirs in zip(read, written, strict=True):
        assert ours.model_dump_json() == theirs.model_dump_json()
        assert [type(v) for v in ours.metadata.values()] == [
            type(v) for v in theirs.metadata.values()
        ]
        assert ours.model_copy(update={"status": "failed"}).status == "failed"


# -- the plans ------------------------------------------------------------------


def test_a_metadata_filter_and_the_default_order_use_indexes(index: RunIndex) -> None:
    index.upsert_many(record(f"r{n}", n, metadata={"project": f"p{n % 5}"}) for n in range(50))
    walk, lookup = index.explain(RunQuery(where="metadata.project = 'x'", limit=50))
    assert "SCAN runs USING INDEX runs_created" in walk  # in order, given up when slow
    assert not any(step.startswith("SCAN") for step in lookup), lookup
    assert any("INDEX run_metadata_value (key=? AND type=? AND value=?)" in s for s in lookup)
    (plain,) = index.explain(RunQuery(limit=50))
    assert plain == ["SCAN runs USING INDEX runs_created"]  # no sort, no full table scan
    (listing,) = index.explain(RunQuery(where="metadata.project = 'x'"))
    assert not any(step.startswith("SCAN") for step in listing), listing


def test_a_sparse_filter_gives_up_the_walk_and_finds_its_runs_by_index(
    index: RunIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [record(f"r{n:04}", n, metadata={"p": n % 100}) for n in range(300)]
    index.upsert_many(records)
    over_budget: list[bool] = []
    fetch = index._fetch

    def spy(plan: Plan) -> list[bytes] | None:
        found = fetch(plan)
        over_budget.append(found is None)
        return found

    monkeypatch.setattr(index, "_fetch", spy)
    dense = RunQuery(where="metadata.p < 90", limit=2)
    assert ids(index.query(dense)) == ids(dense.apply(records)) == ["r0289", "r0288"]
    assert over_budget == [False]  # the walk found the page
    monkeypatch.setattr(index_module, "_WALK_BUDGET", 1)
    over_budget.clear()
    sparse = RunQuery(where="metadata.p = 7", limit=2)
    assert ids(index.query(sparse)) == ids(sparse.apply(records)) == ["r0207", "r0107"]
    assert over_budget == [True, False]  # the walk gave up, the lookup answered
    walk, lookup = index.plans(sparse)
    assert walk.budget == 1 and lookup.budget is None


def test_the_sql_binds_every_value(index: RunIndex) -> None:
    evil = "x'); DROP TABLE runs; --"
    where = q.Or(
        (
            q.Compare(q.Field("metadata", evil), "=", evil),
            q.Like(q.Field("sut_name"), evil),
            q.Contains(q.Field("tags"), evil),
        )
    )
    for plan in index.plans(RunQuery(where=where, limit=1)):
        assert evil not in plan.sql and evil in plan.params.values()
    index.upsert(record("r1", metadata={evil: evil}))
    assert ids(index.query(RunQuery(where=where))) == ["r1"]


# -- the schema -----------------------------------------------------------------


OLD_SCHEMA = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, status TEXT NOT NULL, created_us INTEGER NOT NULL,
                   sut_name TEXT, tags TEXT NOT NULL, record BLOB NOT NULL);
CREATE INDEX runs_created ON runs (created_us DESC, run_id DESC);
CREATE TABLE id_counters (prefix TEXT PRIMARY KEY, highest INTEGER NOT NULL);
INSERT INTO id_counters VALUES ('run_', 41);
"""


def test_an_index_of_an_older_version_is_rebuilt_from_the_runs(root: Path) -> None:
    with runstore.open(str(root)) as store:
        with store.create_run(run_id="run_7", metadata={"project": "p"}) as run:
            run.log_metric("loss", 0.25)
        store.set_metadata("run_7", {"lang": ["de", "fr"]})
    path = root / ".runstore" / "index.sqlite3"
    db = sqlite3.connect(path)
    for table in ("runs", "run_tags", "run_metadata", "run_metrics", "id_counters"):
        db.execute(f"DROP TABLE {table}")
    db.executescript(OLD_SCHEMA + "PRAGMA user_version = 0;")
    db.close()
    with runstore.open(str(root)) as store:
        assert ids(store.list_runs(where="metadata.lang = 'fr' AND metrics.loss < 0.5")) == [
            "run_7"
        ]
    reopened = RunIndex(str(path))
    try:
        assert reopened.highest_number("run_") == 41  # the ids of deleted runs stay taken
        version = reopened._db.execute("PRAGMA user_version").fetchone()
        assert version == (index_sql.SCHEMA_VERSION,) and not reopened.created
    finally:
        reopened.close()


def test_the_store_api_lists_as_the_reference(store: runstore.Store) -> None:
    for n in range(6):
        with store.create_run(
            run_id=f"run_{n}", sut_name=f"sut{n % 2}", tags=["nightly"] if n % 3 else []
        ) as run:
            run.log_metric("loss", n / 4)
        store.set_metadata(f"run_{n}", {"lang": ["de", "fr"][: n % 3], "n": n})
    everything = store.list_runs()
    for where, order in [
        ("metadata.lang = 'fr' OR metrics.loss > 0.5", "-summary.instance_count, sut_name"),
        ("metadata.lang != 'de' AND tags CONTAINS 'nightly'", None),
        ("NOT metadata.n IN (1, 2) AND finished_at IS NOT NULL", "metadata.n"),
    ]:
        token, seen = None, []
        while True:
            page = store.list_runs(where=where, order_by=order, limit=2, page_token=token)
            reference = RunQuery(where=where, order_by=order, limit=2, page_token=token)
            assert ids(page) == ids(reference.apply(everything))
            seen += ids(page)
            if (token := page.next_page_token) is None:
                break
        assert seen == ids(RunQuery(where=where, order_by=order).apply(everything))
