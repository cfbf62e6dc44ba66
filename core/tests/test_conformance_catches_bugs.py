"""The conformance kit catches broken backends, and says where they are broken.

Each test plants one bug in a subclass of the memory backend, runs the whole
kit (``StoreConformance``: the mixins and the state machine) on it in a
separate pytest session, and checks which tests fail and what they say.
The last tests cover how an author can misuse or tune the state machine.
"""

from __future__ import annotations

import re
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest
from hypothesis.database import DirectoryBasedExampleDatabase

import runstore
from runstore.testing import (
    EXAMPLES_ENV,
    PROFILE_ENV,
    run_state_machine,
    state_machine_settings,
)

pytest_plugins = ["pytester"]

PLANTED_MODULE = """
from __future__ import annotations

import itertools
import uuid

import pytest
from hypothesis import Phase

import runstore
from runstore.spi.memory import MemoryBackend
from runstore.testing import StoreConformance, state_machine_settings


class Planted(MemoryBackend):
    capabilities = runstore.Capabilities(persistent=False, {capabilities})

{bug}


class Registers:
    @runstore.hookimpl
    def runstore_register_backends(self, register):
        register(
            runstore.BackendSpec(
                name="planted",
                factory=lambda target: Planted(target.path),
                schemes=("planted",),
            )
        )


stores = itertools.count()
# Named memory stores live while anything references them, and pytester runs
# in this process: a prefix per inner run keeps runs of the kit apart.
prefix = uuid.uuid4().hex


def open_store() -> runstore.Store:
    return runstore.open(f"planted://{{prefix}}-{{next(stores)}}", plugins=[Registers()])


class TestPlanted(StoreConformance):
    # Deterministic, and reported as found (unshrunk): the first disagreement is the point.
    state_machine_settings = {machine_settings}

    @pytest.fixture
    def store(self):
        with open_store() as store:
            yield store

    @pytest.fixture
    def store_factory(self):
        return open_store
"""

NO_BUG = "    pass"
STATE_MACHINE = "test_random_operations_agree_with_the_reference"


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """The short summary keeps each failure's first line only if it fits the width."""
    monkeypatch.setenv("COLUMNS", "2000")


def run_kit(
    pytester: pytest.Pytester,
    bug: str,
    *,
    capabilities: str = "",
    examples: int | None = 100,
    only: str | None = None,
) -> pytest.RunResult:
    """Run the whole kit against the memory backend with ``bug`` planted in it.

    ``examples=None``: the state machine runs with the kit's default (``ci``)
    profile, as an author's CI would (reported unshrunk, to keep it quick).
    ``only``: a ``-k`` expression: the tests meant to catch the bug (quicker).
    """
    machine_settings = (
        "state_machine_settings(phases=[Phase.generate])"
        if examples is None
        else f"state_machine_settings(max_examples={examples}, derandomize=True, "
        "phases=[Phase.generate], database=None)"
    )
    pytester.makepyfile(
        test_planted=PLANTED_MODULE.format(
            bug=textwrap.indent(textwrap.dedent(bug), "    "),
            capabilities=capabilities,
            machine_settings=machine_settings,
        )
    )
    selection = [] if only is None else ["-k", only]
    return pytester.runpytest("-p", "no:cacheprovider", "-rfs", "-W", "error", *selection)


def failures(result: pytest.RunResult) -> dict[str, str]:
    """Failed test -> the first line of its failure, from the short summary."""
    found = {}
    for line in result.stdout.lines:
        match = re.match(r"FAILED test_planted\.py::TestPlanted::(\S+) - (.*)", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_the_memory_backend_wrapped_without_a_bug_passes_the_kit(
    pytester: pytest.Pytester,
) -> None:
    result = run_kit(pytester, NO_BUG, examples=20)
    assert failures(result) == {}
    outcomes = result.parseoutcomes()
    assert set(outcomes) == {"passed", "skipped"}
    # skipped: only what a backend in process memory cannot be (it says so)
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]3[]] *: persistent=False declared by backend 'planted' (state*"]
    )
    assert outcomes["skipped"] == 3


def test_listing_that_drops_the_last_run_fails_the_listing_tests(
    pytester: pytest.Pytester,
) -> None:
    result = run_kit(
        pytester,
        """
        async def list_runs(self, query):
            return (await super().list_runs(query))[:-1]
        """,
    )
    failed = failures(result)
    assert "test_list_runs_newest_first_with_filters" in failed
    assert "== ['run_3', 'run_2', 'run_1']" in failed["test_list_runs_newest_first_with_filters"]
    assert "list_runs(" in failed[STATE_MACHINE]
    assert (
        "disagrees with the reference: runs missing from the backend: ['run_"
        in (failed[STATE_MACHINE])
    )


def test_artifact_overwrite_that_is_not_rejected_fails_the_conflict_tests(
    pytester: pytest.Pytester,
) -> None:
    result = run_kit(
        pytester,
        """
        async def put(self, run_id, name, source):
            self._data.artifacts.pop((run_id, name), None)  # forget what was stored
            return await super().put(run_id, name, source)
        """,
    )
    failed = failures(result)
    assert re.match(
        "Failed: DID NOT RAISE .*ConflictError", failed["test_reput_with_other_bytes_is_a_conflict"]
    )
    assert failed[STATE_MACHINE].startswith("AssertionError: put_artifact(")
    result.stdout.re_match_lines(
        [r"E\s+backend\s+returned ArtifactRef\(", r"E\s+reference raised ConflictError \(code "]
    )
    result.stdout.fnmatch_lines(["*already exists with different bytes; artifacts are immutable*"])


def test_compare_and_swap_that_ignores_revisions_fails_the_conflict_tests(
    pytester: pytest.Pytester,
) -> None:
    result = run_kit(
        pytester,
        """
        async def write_state(self, state, *, expected_revision, record):
            stored = (await self.read_state(state.run_id)).revision
            await super().write_state(state, expected_revision=stored, record=record)
        """,
    )
    failed = failures(result)
    assert re.match(
        "Failed: DID NOT RAISE .*ConflictError", failed["test_stale_state_revision_is_a_conflict"]
    )
    # a stale write went through: the machine sees what it overwrote (a revision, labels)
    assert "disagrees with the reference" in failed[STATE_MACHINE]


def test_stream_that_reorders_records_fails_the_order_tests(pytester: pytest.Pytester) -> None:
    result = run_kit(
        pytester,
        """
        async def read_bytes(self, run_id, stream, offset=0):
            stored = b"".join([chunk async for chunk in super().read_bytes(run_id, stream, offset)])
            lines = stored.splitlines(keepends=True)
            lines[:2] = reversed(lines[:2])  # the first two records swap places
            for line in lines:
                yield line
        """,
    )
    failed = failures(result)
    assert failed["test_records_read_back_in_order"] == (
        "assert [1, 0, 2, 3, 4, 5, ...] == [0, 1, 2, 3, 4, 5, ...]"
    )
    assert "disagrees with the reference" in failed[STATE_MACHINE]
    result.stdout.fnmatch_lines(["*disagrees with the reference: *first difference at position 0*"])


def test_a_capability_the_backend_declares_off_skips_its_tests_with_the_reason(
    pytester: pytest.Pytester,
) -> None:
    result = run_kit(
        pytester,
        """
        async def write_state(self, state, *, expected_revision, record):
            stored = (await self.read_state(state.run_id)).revision
            await super().write_state(state, expected_revision=stored, record=record)
        """,
        capabilities="compare_and_swap=False",
        examples=20,
    )
    assert failures(result) == {}
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]2[]] *: compare_and_swap=False declared by backend 'planted' (state*"]
    )


# -- using the state machine ------------------------------------------------------------


def test_a_store_factory_that_reopens_a_used_store_is_refused() -> None:
    url = f"memory://reused-{uuid.uuid4().hex}"
    with runstore.open(url) as keeper:  # keeps the named memory store's data alive
        keeper.create_run(run_id="run_left_over")
        with pytest.raises(AssertionError) as info:
            run_state_machine(
                lambda: runstore.open(url), settings=state_machine_settings(max_examples=1)
            )
    assert "fresh, empty store each time; this one holds ['run_left_over']" in str(info.value)


def test_the_examples_variable_sets_how_many_sequences_are_tried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(EXAMPLES_ENV, "7")
    assert state_machine_settings().max_examples == 7
    assert state_machine_settings(max_examples=3).max_examples == 3


def test_an_examples_variable_that_is_not_a_number_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(EXAMPLES_ENV, "lots")
    with pytest.raises(ValueError, match="RUNSTORE_CONFORMANCE_EXAMPLES must be a whole number"):
        state_machine_settings()


def test_the_default_profile_is_derandomised_and_writes_no_example_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    monkeypatch.delenv(EXAMPLES_ENV, raising=False)
    chosen = state_machine_settings()
    assert (chosen.derandomize, chosen.database, chosen.max_examples) == (True, None, 50)


def test_the_thorough_profile_tries_more_and_keeps_examples_in_the_temporary_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(PROFILE_ENV, "thorough")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    chosen = state_machine_settings()
    assert (chosen.derandomize, chosen.max_examples) == (False, 500)
    assert isinstance(chosen.database, DirectoryBasedExampleDatabase)
    assert str(chosen.database.path).startswith(str(tmp_path))
    monkeypatch.setenv(EXAMPLES_ENV, "7")
    assert state_machine_settings().max_examples == 7


def test_an_unknown_profile_is_refused_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROFILE_ENV, "fast")
    with pytest.raises(
        ValueError, match="RUNSTORE_CONFORMANCE_PROFILE must be one of ci, thorough"
    ):
        state_machine_settings()


def test_a_finished_runs_state_that_is_never_written_again_fails_the_label_tests(
    pytester: pytest.Pytester,
) -> None:
    result = run_kit(
        pytester,
        """
        async def write_state(self, state, *, expected_revision, record):
            if (await self.read_state(state.run_id)).is_terminal:
                return  # planted: metadata and tags of a finished run never change
            await super().write_state(state, expected_revision=expected_revision, record=record)
        """,
    )
    failed = failures(result)
    label_test = "test_metadata_and_tags_change_after_finish_and_the_index_shows_them"
    assert failed[label_test].startswith("AssertionError: assert ({'project': ...")
    # The deterministic test above is what must catch it; the state machine reaches a
    # relabel after finish in some of its sequences only (not in every CI run).


def test_a_state_write_dropped_on_a_stale_revision_fails_the_lost_update_test(
    pytester: pytest.Pytester,
) -> None:
    result = run_kit(
        pytester,
        """
        async def write_state(self, state, *, expected_revision, record):
            if (await self.read_state(state.run_id)).revision != expected_revision:
                return  # planted: the stale write is dropped, and nobody is told
            await super().write_state(state, expected_revision=expected_revision, record=record)
        """,
    )
    failed = failures(result)
    assert re.match(
        "Failed: DID NOT RAISE .*ConflictError",
        failed["test_a_state_patch_from_a_stale_writer_is_a_conflict_not_a_lost_update"],
    )


def test_a_filter_that_drops_a_row_fails_the_query_tests(pytester: pytest.Pytester) -> None:
    result = run_kit(
        pytester,
        """
        async def list_runs(self, query):
            found = list(await super().list_runs(query))
            if query.where is not None and len(found) > 1:
                del found[-1]  # planted: a filtered listing loses its last row
            return found
        """,
    )
    failed = failures(result)
    assert (
        "list_runs(where="
        in failed["test_list_runs_where_and_order_by_match_the_reference_semantics"]
    )


# -- the bugs a backend author planted in a real backend (issue 16) ----------------------


def test_a_writer_reopened_that_drops_the_streams_last_record_fails_the_resume_test(
    pytester: pytest.Pytester,
) -> None:
    result = run_kit(
        pytester,
        """
        async def open_writer(self, run_id, stream, *, durability=None):
            stored = self._data.streams.get((run_id, stream))
            if stored:  # planted: a torn-tail "repair" that cuts the last whole record off
                del stored[stored.rstrip(b"\\n").rfind(b"\\n") + 1 :]
            return await super().open_writer(run_id, stream, durability=durability)
        """,
        examples=None,  # the default profile, as an author's CI runs it
        only=f"resume_then_append or {STATE_MACHINE}",
    )
    failed = failures(result)
    assert failed["test_resume_then_append_keeps_every_stream_record"].startswith(
        "AssertionError: stream records of 'steps' after resume_run and one more append: "
        "read [{'n': 0}, {'n': 1}, {'n': 3}]"
    )
    # where the state machine finds it too, it does not call the lost record a run
    assert "runs missing" not in failed.get(STATE_MACHINE, "")


def test_a_delete_that_leaves_artifacts_behind_fails_the_recreate_test(
    pytester: pytest.Pytester,
) -> None:
    result = run_kit(
        pytester,
        """
        async def delete_run(self, run_id):
            kept = {k: v for k, v in self._data.artifacts.items() if k[0] == run_id}
            await super().delete_run(run_id)
            self._data.artifacts.update(kept)  # planted: the bytes of a deleted run stay
        """,
        only="deleted_run_leaves_nothing",
    )
    failed = failures(result)
    assert failed[
        "test_a_deleted_run_leaves_nothing_behind_for_a_new_run_of_the_same_id"
    ].startswith(
        "Failed: a new run of a deleted run's id cannot store an artifact name the deleted "
        "run used (what the delete left behind?): ConflictError: "
    )


def test_a_backend_that_refuses_the_longest_valid_artifact_name_fails_the_names_test(
    pytester: pytest.Pytester,
) -> None:
    result = run_kit(
        pytester,
        """
        async def put(self, run_id, name, source):
            if len(name.encode()) > 1000:  # planted: the engine's key limit
                raise runstore.StorageIOError("key too long for the engine")
            return await super().put(run_id, name, source)
        """,
        only="longest",
    )
    failed = failures(result)
    for case in ("1024-bytes-32-parts", "1023-bytes-4-parts"):
        assert failed[f"test_the_longest_valid_names_are_stored[{case}]"].startswith(
            f"Failed: a valid artifact name of {case.split('-')[0]} bytes in "
        )
    assert "test_the_longest_valid_names_are_stored[255-bytes-1-parts]" not in failed
    assert (
        "StorageIOError: key too long for the engine"
        in (failed["test_the_longest_valid_names_are_stored[1024-bytes-32-parts]"])
    )


PERSISTENT_MODULE = """
from __future__ import annotations

import functools
import itertools
import multiprocessing
import sqlite3
import threading
import time

import orjson
import pytest

import runstore
from runstore.spi import AlreadyExistsError, KeyValueStore, KVBackend
from runstore.testing import StoreConformance


class SQLiteKV(KeyValueStore):
    def __init__(self, path):
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
        self.lock = threading.Lock()

    def sql(self, query, *args):
        with self.lock:
            return self.db.execute(query, args)

    async def get(self, key):
        row = self.sql("SELECT v FROM kv WHERE k = ?", key).fetchone()
        return None if row is None else bytes(row[0])

    async def put_if_absent(self, key, value):
        return self.sql("INSERT OR IGNORE INTO kv VALUES (?, ?)", key, value).rowcount == 1

    async def compare_and_set(self, key, expected, value):
        query = "UPDATE kv SET v = ? WHERE k = ? AND v = ?"
        return self.sql(query, value, key, expected).rowcount == 1

    async def list_keys(self, prefix):
        query = "SELECT k FROM kv WHERE k >= ? AND k < ? ORDER BY k"
        return [row[0] for row in self.sql(query, prefix, prefix + "\\U0010ffff")]

    async def delete(self, key):
        self.sql("DELETE FROM kv WHERE k = ?", key)

    def set(self, key, value):
        self.sql("INSERT OR REPLACE INTO kv VALUES (?, ?)", key, value)

    async def aclose(self):
        self.db.close()


class Planted(KVBackend):
{bug}


class Registers:
    @runstore.hookimpl
    def runstore_register_backends(self, register):
        register(
            runstore.BackendSpec(
                name="planted",
                factory=lambda target: Planted(SQLiteKV(target.path)),
                schemes=("planted",),
            )
        )


def open_store(path):
    return runstore.open(f"planted://{{path}}", plugins=[Registers()], heartbeat_interval=0)


class TestPlanted(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path):
        with open_store(tmp_path / "runs.db") as store:
            yield store

    @pytest.fixture
    def store_opener(self, tmp_path):
        return functools.partial(open_store, tmp_path / "runs.db")  # picklable

    @pytest.fixture
    def store_factory(self, tmp_path):
        names = itertools.count()
        return lambda: open_store(tmp_path / f"machine{{next(names)}}.db")
"""


def run_persistent_kit(pytester: pytest.Pytester, bug: str) -> pytest.RunResult:
    """The kit's checks of ``persistent`` and of racing processes, on ``KVBackend`` over
    SQLite with ``bug`` planted.

    Only those: the rest of the kit drives one store object in one process and
    cannot see these bugs (``test_kit_kv.py`` and the key-value example hold the
    adapter to the whole kit).
    """
    pytester.makepyfile(
        test_planted=PERSISTENT_MODULE.format(bug=textwrap.indent(textwrap.dedent(bug), "    "))
    )
    return pytester.runpytest(
        "-p", "no:cacheprovider", "-rfs", "-W", "error", "-k", "new_store or racing"
    )


def test_the_key_value_backend_on_sqlite_passes_the_checks_across_processes(
    pytester: pytest.Pytester,
) -> None:
    result = run_persistent_kit(pytester, NO_BUG)
    assert failures(result) == {}
    assert result.parseoutcomes()["passed"] == 3


def test_summaries_kept_in_process_memory_fail_the_persistence_test(
    pytester: pytest.Pytester,
) -> None:
    result = run_persistent_kit(
        pytester,
        """
        summaries = {}  # planted: per process, although the backend declares persistent

        async def write_summary(self, summary):
            await self.read_state(summary.run_id)
            self.summaries[(id(self), summary.run_id)] = summary

        async def read_summary(self, run_id):
            await self.read_state(run_id)
            return self.summaries.get((id(self), run_id))
        """,
    )
    failed = failures(result)
    test = "test_a_new_store_object_and_a_new_process_see_everything_written"
    assert failed[test].startswith(
        "AssertionError: persistent is declared, but a new store object on the same location "
        "sees other data than the one that wrote it"
    )
    shown = result.stdout.str()
    assert "['run_everything']['summary']: written {'run_id': 'run_everything', " in shown
    assert ", read back None" in shown


def test_a_run_created_in_two_transactions_fails_the_multi_process_race(
    pytester: pytest.Pytester,
) -> None:
    result = run_persistent_kit(
        pytester,
        """
        async def create_run(self, manifest, state):
            key = f"runs/{manifest.run_id}"
            if await self.kv.get(key) is not None:  # transaction 1: is the id free?
                raise AlreadyExistsError(f"run {manifest.run_id!r} already exists")
            if multiprocessing.parent_process() is not None:
                time.sleep(1.0)  # planted: the gap, widened where processes race
            record = runstore.RunRecord.build(manifest, state)
            value = {"manifest": manifest, "state": state, "record": record, "summary": None}
            # transaction 2: write, whoever wrote meanwhile
            self.kv.set(key, orjson.dumps({k: v and v.model_dump(mode="json")
                                           for k, v in value.items()}))
        """,
    )
    failed = failures(result)
    test = "test_processes_racing_on_one_store_create_each_run_once_and_lose_no_update"
    # Both racers' checks land in the gap: two or more were told they created the run
    # (or, were one of them held up past it, the generated ids collide the same way).
    assert re.match(
        r"AssertionError: conditional_create is declared, but ([234] of 4 processes creating "
        r"run 'run_contested' at once were told they created it|racing processes were "
        r"handed the same generated run ids)",
        failed[test],
    ), failed[test]
