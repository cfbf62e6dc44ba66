"""History across recorded sessions: flaky tests, tests that got slower, what broke since green.

A thin layer over :mod:`runstore.analysis.history` (what ``runstore flaky``,
``runstore slowest`` and ``runstore broken`` print) that reads only the runs
pytest-runstore recorded (``metadata.pytest`` is set: :data:`RECORDED`) and
names tests by node id. A run counts when it finished (``succeeded`` or
``failed``); the suite is the run's ``sut_name`` (the rootdir's name), by
default the suite of the newest recorded run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from pytest_runstore.nodeids import decode_instance_id
from runstore import InvalidInputError
from runstore.analysis import history
from runstore.analysis.history import OUTCOME_LETTERS
from runstore.model.query import parse_where

if TYPE_CHECKING:
    from runstore import RunRecord, Store

__all__ = [
    "OUTCOME_LETTERS",
    "RECORDED",
    "Breakage",
    "BrokenTest",
    "FlakyTest",
    "SlowerTest",
    "TestHistory",
    "broken_since_green",
    "flaky_tests",
    "load_history",
    "recent_runs",
    "slower_tests",
]

RECORDED: Final = "metadata.pytest IS NOT NULL"
"""The runs pytest-runstore recorded; ``runstore flaky --where`` takes it too."""


class _NamedByNodeId:
    """The ``nodeid`` of an instance recorded by pytest-runstore, decoded from its id."""

    if TYPE_CHECKING:

        @property
        def instance_id(self) -> str: ...

    @property
    def nodeid(self) -> str:
        try:
            return decode_instance_id(self.instance_id)
        except InvalidInputError:  # shortened with a digest: the id is all there is here
            return self.instance_id


class TestHistory(_NamedByNodeId, history.InstanceHistory):
    """The outcomes and durations of one test in the runs read, oldest first."""

    __test__ = False


class FlakyTest(_NamedByNodeId, history.FlakyInstance):
    """A test whose verdict (pass or fail) changed between consecutive runs."""


class SlowerTest(_NamedByNodeId, history.SlowerInstance):
    """A test whose duration in the newest run grew over its earlier median."""


class BrokenTest(_NamedByNodeId, history.BrokenInstance):
    """A test that fails in the newest run and passed (or did not exist) in the last green one."""


class Breakage(history.Breakage):
    """What broke between the last green run and the newest one."""

    @property
    def tests(self) -> list[BrokenTest]:
        return [BrokenTest(**vars(item)) for item in self.instances]


def _recorded(where: str | None) -> str:
    if not where:
        return RECORDED
    parse_where(where)  # its errors point into the caller's filter, not the combined one
    return f"{RECORDED} AND ({where})"


def recent_runs(
    store: Store, *, sut_name: str | None = None, where: str | None = None, last: int = 10
) -> list[RunRecord]:
    """The last ``last`` finished runs recorded by pytest-runstore of one suite, oldest first.

    ``where`` narrows them further (runstore's filter language); a malformed
    filter raises :class:`runstore.InvalidInputError`.
    """
    return history.recent_runs(store, sut_name=sut_name, where=_recorded(where), last=last)


def load_history(store: Store, runs: Sequence[RunRecord]) -> list[TestHistory]:
    """Every test seen in ``runs`` with its outcome and duration in each."""
    return [TestHistory(**vars(item)) for item in history.instance_history(store, runs)]


def flaky_tests(
    store: Store,
    *,
    sut_name: str | None = None,
    where: str | None = None,
    last: int = 10,
    min_flips: int = 1,
) -> list[FlakyTest]:
    """Tests whose verdict flipped at least ``min_flips`` times in the last ``last`` runs."""
    found = history.flaky_instances(
        store, sut_name=sut_name, where=_recorded(where), last=last, min_flips=min_flips
    )
    return [FlakyTest(**vars(item)) for item in found]


def slower_tests(
    store: Store,
    *,
    sut_name: str | None = None,
    where: str | None = None,
    last: int = 10,
    top: int = 20,
) -> list[SlowerTest]:
    """The ``top`` tests whose duration in the newest run grew most over their earlier median."""
    found = history.slower_instances(
        store, sut_name=sut_name, where=_recorded(where), last=last, top=top
    )
    return [SlowerTest(**vars(item)) for item in found]


def broken_since_green(
    store: Store, *, sut_name: str | None = None, where: str | None = None
) -> Breakage:
    """The tests that fail in the newest run and passed in the last green (succeeded) run."""
    return Breakage(
        **vars(history.broken_since_green(store, sut_name=sut_name, where=_recorded(where)))
    )
