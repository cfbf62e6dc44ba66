"""The conformance kit catches broken backends, and says where they are broken.

Each test plants one bug in a subclass of the memory backend, runs the whole
kit (``StoreConformance``: the mixins and the state machine) on it in a
separate pytest session, and checks which tests fail and what they say.
The last tests cover how an author can misuse or tune the state machine.
"""

from __future__ import annotations

import re
import textwrap
import uuid

import pytest

import runstore
from runstore.testing import EXAMPLES_ENV, run_state_machine, state_machine_settings

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
    state_machine_settings = state_machine_settings(
        max_examples={examples}, derandomize=True, phases=[Phase.generate], database=None
    )

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
    pytester: pytest.Pytester, bug: str, *, capabilities: str = "", examples: int = 100
) -> pytest.RunResult:
    """Run the whole kit against the memory backend with ``bug`` planted in it."""
    pytester.makepyfile(
        test_planted=PLANTED_MODULE.format(
            bug=textwrap.indent(textwrap.dedent(bug), "    "),
            capabilities=capabilities,
            examples=examples,
        )
    )
    return pytester.runpytest("-p", "no:cacheprovider", "-rfs", "-W", "error")


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
    assert set(result.parseoutcomes()) == {"passed"}  # nothing failed, nothing skipped


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
    assert "disagrees with the reference" in failed[STATE_MACHINE]


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
