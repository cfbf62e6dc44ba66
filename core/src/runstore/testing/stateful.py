"""Stateful conformance: random operation sequences, the backend against the reference.

A Hypothesis :class:`~hypothesis.stateful.RuleBasedStateMachine` opens the
backend under test and an empty in-memory reference (``memory://``), applies
every operation to both through the public sync API and asserts after each
step that they agree: the same result modulo timestamps, durations and
generated run ids, or the same error ``code`` for the same bad input.

Use it from a test class::

    class TestMyBackend(StoreConformance):      # includes StoreStateMachineConformance
        @pytest.fixture
        def store_factory(self, tmp_path):
            names = itertools.count()
            return lambda: runstore.open(f"mybackend://{tmp_path}/store{next(names)}")

or from a plain test function::

    def test_conformance(tmp_path):
        run_state_machine(lambda: runstore.open(...))

The factory must open a fresh, empty store on every call (one per example).
The default profile, ``ci``, tries the same 50 sequences of up to 40 steps on
every run (derandomised: a bug caught once is caught every time) and writes
nothing into the working directory; ``RUNSTORE_CONFORMANCE_PROFILE=thorough``
tries 500 new ones, ``RUNSTORE_CONFORMANCE_EXAMPLES=N`` sets how many, and
``settings=`` overrides anything.

The module is one piece on purpose: Hypothesis collects a machine's rules,
invariants and bundles from one class, and the helpers around it exist only
to apply each rule to both stores and compare what they return.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import itertools
import os
import pprint
import tempfile
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar, get_args

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pydantic import BaseModel

import runstore
from runstore.model.errors import RunstoreError
from runstore.model.run import ArtifactKind, PhaseStatus, RunStatus
from runstore.model.selection import Page
from runstore.spi.backends import Capabilities
from runstore.spi.layout import ARTIFACTS_STREAM

__all__ = [
    "EXAMPLES_ENV",
    "PROFILES",
    "PROFILE_ENV",
    "StoreStateMachine",
    "StoreStateMachineConformance",
    "declared_capabilities",
    "run_state_machine",
    "state_machine_settings",
]

EXAMPLES_ENV = "RUNSTORE_CONFORMANCE_EXAMPLES"
"""Environment variable: how many operation sequences to try (overrides the profile's)."""
PROFILE_ENV = "RUNSTORE_CONFORMANCE_PROFILE"
"""Environment variable: ``ci`` (the default) or ``thorough``; see :data:`PROFILES`."""
DEFAULT_EXAMPLES = 50
DEFAULT_STEPS = 40
PROFILES: dict[str, dict[str, Any]] = {
    # The same 50 sequences every run (derandomised), nothing written to the working
    # directory: a bug the kit catches once it catches on every run.
    "ci": {
        "max_examples": DEFAULT_EXAMPLES,
        "stateful_step_count": DEFAULT_STEPS,
        "derandomize": True,
        "database": None,
    },
    # New random sequences each run, longer ones, failures remembered (and replayed
    # first) in an example database in the temporary folder.
    "thorough": {"max_examples": 500, "stateful_step_count": 60, "derandomize": False},
}
"""Hypothesis settings each profile sets (``state_machine_settings`` adds the rest)."""

# -- the inputs ---------------------------------------------------------------------

RUN_IDS = ("run_a", "run_b", "run-c.1")
BAD_RUN_IDS = ("", "Run_Upper", "a..b", "a/b", "_hidden", "a" * 129)
UNKNOWN_RUN_IDS = ("run_never_created", "Not A Run Id")
SUT_NAMES = ("shop", "bank")
TAGS = ("nightly", "pinned")
INSTANCE_IDS = ("inst_001", "inst_002")
STREAMS = ("instances", "steps", "assertions", "logs", "phase_outputs")
BAD_STREAMS = ("artifacts", "Steps", "../x", "", "x" * 65)
GOOD_ARTIFACT_NAMES = (
    "a.json",
    "a",
    "a/b.json",
    "inst_001/step_001_request.json",
    "inst_002/report.md",
    "exports/ünï cødé.txt",
    "/".join(["d"] * 31 + ["leaf"]),
    "x" * 255,
)
BAD_ARTIFACT_NAMES = (
    "",
    "../escape",
    "/etc/passwd",
    "a//b",
    "a/./b",
    "a\\b",
    "C:evil",
    "frag#ment",
    "%2e%2e/x",
    "nul\x00byte",
    "a/" * 40 + "b",
    "x" * 256,
)
STATUSES: tuple[str, ...] = get_args(RunStatus)
KINDS: tuple[str, ...] = get_args(ArtifactKind)

_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_json = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
_records = st.one_of(
    st.fixed_dictionaries(
        {
            "instance_id": st.sampled_from(INSTANCE_IDS),
            "status": st.sampled_from(("passed", "failed", "skipped")),
        }
    ),
    st.fixed_dictionaries(
        {"instance_id": st.sampled_from(INSTANCE_IDS), "step_name": st.sampled_from(("a", "b"))}
    ),
    st.dictionaries(
        st.sampled_from(("n", "text", "nested")) | st.text(max_size=3), _json, max_size=4
    ),
)
# Not JSON objects: every backend must refuse them with invalid_input.
_bad_records = st.sampled_from(
    (["not", "an", "object"], "text", {1: "int key"}, {"big": 2**64}, {"lone": "\ud800"})
)
_metadata = st.fixed_dictionaries(
    {},
    optional={
        "sut_name": st.sampled_from(SUT_NAMES),
        "scenario_ids": st.none() | st.lists(st.sampled_from(("checkout", "refund")), max_size=2),
        "seed": st.integers(0, 2**32),
        "config": st.dictionaries(
            st.text(max_size=4),
            _json | st.tuples(st.integers(0, 9), st.text(max_size=2)),
            max_size=3,
        ),
        "tags": st.lists(st.sampled_from(TAGS), unique=True, max_size=2),
        "correlation_id": st.just("corr-1"),
    },
)
WHERE_FILTERS = (
    "metadata.project = 'ja'",
    "metadata.lang IN ('ja', 'fr') OR tags CONTAINS 'golden'",
    "summary.pass_rate < 1 AND status != 'running'",
    "metadata.project IS NULL",
    "NOT (metadata.lang = 1) AND run_id LIKE 'run%'",
    "metrics.latency_ms >= 0",
    "sut_name ILIKE 'BANK'",
    "metadata.project = ",  # malformed: invalid_input on both sides
)
ORDERS = (None, "-created_at", "metadata.lang", "summary.pass_rate DESC", "run_id", "-sut_name")
_queries = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(STATUSES)
        | st.lists(st.sampled_from(STATUSES), unique=True, max_size=3),
        "sut_name": st.sampled_from((*SUT_NAMES, "nobody")),
        "tags": st.lists(st.sampled_from(TAGS), unique=True, max_size=2),
        "limit": st.integers(-1, 4),
        "offset": st.integers(-1, 3),
        "where": st.sampled_from(WHERE_FILTERS),
        "order_by": st.sampled_from(ORDERS),
    },
)
_json_leaf = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(("ja", "fr", ""))
_artifact_bytes = st.sampled_from((b"", b"{}", b"[]")) | st.binary(max_size=40)


# -- comparing ----------------------------------------------------------------------

_VOLATILE = frozenset(
    {
        "timestamp",
        "created_at",
        "updated_at",
        "heartbeat_at",
        "started_at",
        "finished_at",
        "duration_ms",
        "ts",
        "owner",
    }
)
"""Fields that legitimately differ between two stores (wall-clock times, the random
part of a writer's ownership token)."""

_BACKEND_OWN = frozenset({"uri"})
"""Fields each backend fills in its own terms, or not at all (``None``)."""


def _canonical(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` with volatile fields masked and the side's run ids renamed to logical ones.

    ``None`` is never masked, so "set" versus "not set" still counts; tuples
    stay tuples, so a backend that hands back what it was given (instead of
    what it stored) shows up.
    """
    if isinstance(value, runstore.Run):
        value = {
            "run_id": value.run_id,
            "manifest": value.manifest,
            "state": value.state,
            "record_counts": value.record_counts,
        }
    elif isinstance(value, BaseModel):
        value = dict(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if (key in _VOLATILE and item is not None) or key in _BACKEND_OWN:
                out[key] = f"<{key}>"
            elif key == "run_id" and isinstance(item, str):
                out[key] = names.get(item, item)
            else:
                out[key] = _canonical(item, names)
        return out
    if isinstance(value, list | Page):
        return [_canonical(item, names) for item in value]
    if isinstance(value, tuple):
        return tuple(_canonical(item, names) for item in value)
    if isinstance(value, datetime):
        return "<datetime>"
    return value


def _run_ids(items: list[Any]) -> list[str] | None:
    """The run ids of a run listing (index records), ``None`` for any other list."""
    if not all(isinstance(i, dict) and isinstance(i.get("run_id"), str) for i in items):
        return None
    if not all("status" in i and "created_at" in i for i in items):
        return None  # stream records that happen to carry a run_id
    return [i["run_id"] for i in items]


def _hint(backend: Any, reference: Any, noun: str = "items") -> str:
    """One line saying where two canonical values part ways; ``noun`` names list items."""
    if isinstance(backend, list) and isinstance(reference, list):
        ids_b, ids_r = _run_ids(backend), _run_ids(reference)
        if ids_b is not None and ids_r is not None and ids_b != ids_r:
            missing = [i for i in ids_r if i not in ids_b]
            extra = [i for i in ids_b if i not in ids_r]
            if missing or extra:
                return f"runs missing from the backend: {missing}; extra runs: {extra}"
            return f"runs in another order: backend {ids_b}, reference {ids_r}"
        for index, (b, r) in enumerate(zip(backend, reference, strict=False)):
            if b != r:
                return f"first difference at position {index}: backend {b!r}, reference {r!r}"
        if len(backend) < len(reference):
            return (
                f"{noun} missing from the backend: it has {len(backend)}, the reference "
                f"{len(reference)}; the first missing is {reference[len(backend)]!r}"
            )
        return (
            f"extra {noun} in the backend: it has {len(backend)}, the reference "
            f"{len(reference)}; the first extra is {backend[len(reference)]!r}"
        )
    if isinstance(backend, dict) and isinstance(reference, dict):
        keys = sorted(
            (k for k in backend.keys() | reference.keys() if backend.get(k) != reference.get(k)),
            key=str,
        )
        return "; ".join(f"{k}: {_hint(backend.get(k), reference.get(k), noun)}" for k in keys)
    return f"backend {backend!r}, reference {reference!r}"


def _shown(value: Any) -> str:
    text = pprint.pformat(value, width=96, sort_dicts=True)
    return text if len(text) <= 3000 else text[:3000] + " ..."


def _outcome(value: Any, error: RunstoreError | None) -> str:
    if error is not None:
        return f"raised {type(error).__name__} (code {error.code!r}): {error}"
    return "returned " + _shown(value)


@dataclasses.dataclass
class _Side:
    """One of the two stores, with its names for the logical run ids."""

    name: str
    store: runstore.Store
    ids: dict[str, str] = dataclasses.field(default_factory=dict)
    """Logical run id (the reference's) -> this side's id; differs only for generated ids."""
    created_at: dict[str, datetime] = dataclasses.field(default_factory=dict)

    def id(self, logical: str) -> str:
        return self.ids.get(logical, logical)

    def logical_names(self) -> dict[str, str]:
        return {mine: logical for logical, mine in self.ids.items()}


class _Writer:
    """A run open for writing on both sides (from ``create_run`` or ``resume_run``)."""

    def __init__(self, run_id: str, backend: runstore.Run, reference: runstore.Run) -> None:
        self.run_id = run_id
        self.runs = {"backend": backend, "reference": reference}
        self.orphaned = False
        """Its run was deleted: writing through it is unspecified, so it is left alone."""
        self.last_put: tuple[str, bytes] | None = None
        """Name and bytes of the last artifact stored through it."""
        self.streams: set[str] = set()
        """Streams it may hold open: every one it tried to write, until it finished."""

    def on(self, side: _Side) -> runstore.Run:
        return self.runs[side.name]

    def flush(self, side: _Side) -> None:
        self.on(side).flush()

    @property
    def finished(self) -> bool:
        return self.runs["reference"].summary is not None

    def __repr__(self) -> str:
        return f"<writer of {self.run_id!r}>"


def declared_capabilities(store: runstore.Store) -> Capabilities:
    """What every backend serving ``store`` declares (a flag holds only if all declare it)."""
    backends = (store.aio.state_backend, store.aio.log_backend, store.aio.artifact_backend)
    flags = {
        f.name: all(getattr(b.capabilities, f.name) for b in backends)
        for f in dataclasses.fields(Capabilities)
    }
    return Capabilities(**flags)


def _both_capable(a: Capabilities, b: Capabilities) -> Capabilities:
    return Capabilities(
        **{f.name: getattr(a, f.name) and getattr(b, f.name) for f in dataclasses.fields(a)}
    )


_reference_names = itertools.count()


def _open_reference() -> runstore.Store:
    name = f"runstore-conformance-reference-{os.getpid()}-{next(_reference_names)}"
    return runstore.open(f"memory://{name}-{uuid.uuid4().hex}", heartbeat_interval=0)


class StoreStateMachine(RuleBasedStateMachine):
    """Drives the backend (``open_store()``) and a memory reference with the same operations.

    Set ``open_store`` (and optionally ``capabilities``) on a subclass, or use
    :func:`run_state_machine`. What a backend declares it does not do is
    left out: duplicate run ids without ``conditional_create``, two writers
    of one run without ``compare_and_swap``, listing comparisons without
    ``consistent_listing``; without ``native_append`` live writers are
    flushed before their records are read.
    """

    open_store: ClassVar[Callable[[], runstore.Store]]
    capabilities: ClassVar[Capabilities] = Capabilities()

    writers = Bundle("writers")

    shared_reference: ClassVar[runstore.Store | None] = None
    """A reference store reused (and emptied) across examples: opening one costs more
    than most examples. :func:`run_state_machine` sets it; else each example opens one."""

    def __init__(self) -> None:
        super().__init__()
        reference = type(self).shared_reference or _open_reference()
        try:
            backend = type(self).open_store()
        except BaseException:
            self._release_reference(reference)
            raise
        leftovers = [r.run_id for r in backend.list_runs()]
        if leftovers:
            backend.close()
            self._release_reference(reference)
            raise AssertionError(
                "the store factory must open a fresh, empty store each time; "
                f"this one holds {leftovers}"
            )
        # A heartbeat is a state write at a wall-clock moment: it would make the two
        # stores' revisions drift apart for reasons no operation explains.
        backend.aio.core.heartbeat_interval = 0
        self._reference = _Side("reference", reference)
        self._backend = _Side("backend", backend)
        self._capable = _both_capable(type(self).capabilities, declared_capabilities(backend))
        self._writers: list[_Writer] = []
        self._disagreed = False
        self._existing: set[str] = set()

    def teardown(self) -> None:
        try:
            if not self._disagreed:  # the first disagreement is the one to report
                self._every_stream_reads_alike()
        finally:
            try:
                self._backend.store.close()
            finally:
                self._release_reference(self._reference.store)

    def _every_stream_reads_alike(self) -> None:
        """At the end of each example, every stream of every run, record by record.

        The rules read what one step chose; this catches any stored difference
        (a lost, reordered or altered record) that no rule happened to read.
        """
        for run_id in sorted(self._existing):
            if not self._reference_has(run_id):
                continue
            self._settle(run_id)

            def streams(side: _Side, run_id: str = run_id) -> dict[str, list[Any]]:
                view = side.store.get_run(side.id(run_id))
                return {stream: list(view.read(stream)) for stream in view.streams()}

            self._both(f"every stream record of run {run_id!r}", streams)

    def _release_reference(self, reference: runstore.Store) -> None:
        if reference is not type(self).shared_reference:
            reference.close()
            return
        for record in reference.list_runs():
            reference.delete_run(record.run_id, force=True)

    # -- the comparison every step makes -------------------------------------------

    def _both(
        self,
        what: str,
        action: Callable[[_Side], Any],
        *,
        learn: Callable[[Any, Any], None] | None = None,
    ) -> tuple[Any, Any]:
        """:meth:`_compare`, remembering a disagreement (teardown then reports no other)."""
        try:
            return self._compare(what, action, learn=learn)
        except BaseException:
            self._disagreed = True
            raise

    def _compare(
        self,
        what: str,
        action: Callable[[_Side], Any],
        *,
        learn: Callable[[Any, Any], None] | None = None,
    ) -> tuple[Any, Any]:
        """Apply ``action`` to the reference, then the backend; assert they agree.

        Returns ``(backend result, reference result)``, or ``(None, None)`` when
        both raised the same error code. ``learn`` sees both results before
        they are compared (to map generated run ids).
        """
        results: dict[str, tuple[Any, RunstoreError | None]] = {}
        for side in (self._reference, self._backend):
            try:
                results[side.name] = (action(side), None)
            except RunstoreError as error:
                results[side.name] = (None, error)
            except Exception as error:
                if side is self._reference:
                    raise AssertionError(
                        f"{what}: the reference backend raised {type(error).__name__}: {error}; "
                        "every error runstore raises should be a RunstoreError (bug in runstore)"
                    ) from error
                value, ref_error = results["reference"]
                raise AssertionError(
                    f"{what}: the backend raised {type(error).__name__}: {error}, which is not "
                    f"a RunstoreError with a code; the reference {_outcome(value, ref_error)}"
                ) from error
        (backend, backend_error), (reference, reference_error) = (
            results["backend"],
            results["reference"],
        )
        if backend_error is not None or reference_error is not None:
            agree = (
                backend_error is not None
                and reference_error is not None
                and backend_error.code == reference_error.code
            )
            assert agree, (
                f"{what} disagrees with the reference:\n"
                f"  backend   {_outcome(backend, backend_error)}\n"
                f"  reference {_outcome(reference, reference_error)}"
            )
            return None, None
        if learn is not None:
            learn(backend, reference)
        mine = _canonical(backend, self._backend.logical_names())
        theirs = _canonical(reference, self._reference.logical_names())
        noun = "stream records" if ".read(" in what or "stream record" in what else "items"
        assert mine == theirs, (
            f"{what} disagrees with the reference: {_hint(mine, theirs, noun)}\n"
            f"  backend returned   {_shown(mine)}\n"
            f"  reference returned {_shown(theirs)}"
        )
        return backend, reference

    def _held_elsewhere(self, writer: _Writer, stream: str) -> bool:
        """Another writer of the run has ``stream`` open.

        Writing through a second one breaks the interface's "one writer per
        stream" contract, which a backend may detect (the local backend holds
        a lock) or not, so the machine never does it.
        """
        return any(
            stream in other.streams
            for other in self._live_writers(writer.run_id)
            if other is not writer
        )

    def _live_writers(self, run_id: str) -> list[_Writer]:
        return [
            w for w in self._writers if w.run_id == run_id and not w.finished and not w.orphaned
        ]

    def _reference_has(self, run_id: str) -> bool:
        try:
            self._reference.store.get_run(run_id)
        except runstore.NotFoundError:
            return False
        return True

    # -- creating -------------------------------------------------------------------

    def _create(self, run_id: str | None, metadata: dict[str, Any]) -> Any:
        if run_id in self._existing and not self._capable.conditional_create:
            return multiple()

        def create(side: _Side) -> runstore.Run:
            given = copy.deepcopy(metadata)
            run = side.store.create_run(run_id, **given)
            _reuse(given)  # what was stored must not change when the caller reuses its dicts
            return run

        def learn(backend: runstore.Run, reference: runstore.Run) -> None:
            self._backend.ids[reference.run_id] = backend.run_id

        args = ", ".join([repr(run_id), *(f"{k}={v!r}" for k, v in metadata.items())])
        backend, reference = self._both(f"create_run({args})", create, learn=learn)
        if reference is None:
            return multiple()
        logical = reference.run_id
        self._existing.add(logical)
        self._backend.created_at[logical] = backend.state.created_at
        self._reference.created_at[logical] = reference.state.created_at
        writer = _Writer(logical, backend, reference)
        self._writers.append(writer)
        return writer

    @initialize(target=writers, run_id=st.none() | st.sampled_from(RUN_IDS), metadata=_metadata)
    def first_run(self, run_id: str | None, metadata: dict[str, Any]) -> Any:
        return self._create(run_id, metadata)

    @rule(target=writers, run_id=st.none() | st.sampled_from(RUN_IDS), metadata=_metadata)
    def create_run(self, run_id: str | None, metadata: dict[str, Any]) -> Any:
        return self._create(run_id, metadata)

    @rule(run_id=st.sampled_from(BAD_RUN_IDS))
    def create_run_with_an_invalid_id(self, run_id: str) -> None:
        self._both(f"create_run({run_id!r})", lambda side: side.store.create_run(run_id))

    # -- writing --------------------------------------------------------------------

    def _append(self, writer: _Writer, stream: str, record: Any) -> None:
        if writer.orphaned or self._held_elsewhere(writer, stream):
            return
        writer.streams.add(stream)
        self._both(
            f"append({writer.run_id!r}, {stream!r}, {record!r})",
            lambda side: writer.on(side).append(stream, copy.deepcopy(record)),
        )

    @rule(writer=writers, stream=st.sampled_from(STREAMS), record=_records)
    def append(self, writer: _Writer, stream: str, record: Any) -> None:
        self._append(writer, stream, record)

    @rule(
        writer=writers,
        stream_and_record=st.tuples(st.sampled_from(BAD_STREAMS), _records)
        | st.tuples(st.sampled_from(STREAMS), _bad_records),
    )
    def append_what_is_refused(self, writer: _Writer, stream_and_record: tuple[str, Any]) -> None:
        self._append(writer, *stream_and_record)

    @rule(writer=writers, level=st.sampled_from(("info", "error")), instance=st.booleans())
    def log(self, writer: _Writer, level: str, instance: bool) -> None:
        if writer.orphaned or self._held_elsewhere(writer, "logs"):
            return
        writer.streams.add("logs")
        fields = {"instance_id": INSTANCE_IDS[0]} if instance else {}
        self._both(
            f"log({writer.run_id!r}, {level!r}, 'message', **{fields!r})",
            lambda side: writer.on(side).log(level, "message", **fields),
        )

    def _put(self, writer: _Writer, name: str, data: bytes, kind: Any, as_file: bool) -> None:
        if writer.orphaned or self._held_elsewhere(writer, ARTIFACTS_STREAM):
            return
        writer.streams.add(ARTIFACTS_STREAM)

        def put(side: _Side) -> runstore.ArtifactRef:
            source = io.BytesIO(data) if as_file else data
            return writer.on(side).put_artifact(name, source, kind=kind)

        _, stored = self._both(
            f"put_artifact({writer.run_id!r}, {name!r}, {data!r}, kind={kind!r})", put
        )
        if stored is not None:
            writer.last_put = (name, data)

    @rule(
        writer=writers,
        name=st.sampled_from(GOOD_ARTIFACT_NAMES),
        data=_artifact_bytes,
        kind=st.sampled_from(KINDS),
        as_file=st.booleans(),
    )
    def put_artifact(
        self, writer: _Writer, name: str, data: bytes, kind: Any, as_file: bool
    ) -> None:
        self._put(writer, name, data, kind, as_file)

    def _superseded(self, writer: _Writer) -> bool:
        """Without compare-and-swap a writer whose run another writer resumed since
        writes over it unchecked: that is the capability switched off, not a bug."""
        if self._capable.compare_and_swap:
            return False
        later = self._writers[self._writers.index(writer) + 1 :]
        return any(other.run_id == writer.run_id for other in later)

    def _have_put(self) -> list[_Writer]:
        return [w for w in self._writers if w.last_put is not None and not w.orphaned]

    @precondition(lambda self: bool(self._have_put()))  # enabled only when it means something
    @rule(data=st.data(), same_bytes=st.booleans(), as_file=st.booleans())
    def put_the_last_artifact_again(self, data: Any, same_bytes: bool, as_file: bool) -> None:
        """Identical bytes are a no-op returning the stored reference; other bytes a conflict."""
        writer = data.draw(st.sampled_from(self._have_put()), label="writer")
        assert writer.last_put is not None
        name, data = writer.last_put
        self._put(writer, name, data if same_bytes else data + b"!", "raw", as_file)

    @rule(
        writer=writers,
        name_and_kind=st.tuples(st.sampled_from(BAD_ARTIFACT_NAMES), st.just("raw"))
        | st.tuples(st.sampled_from(GOOD_ARTIFACT_NAMES), st.just("bogus")),
    )
    def put_artifact_that_is_refused(self, writer: _Writer, name_and_kind: tuple[str, Any]) -> None:
        self._put(writer, *name_and_kind, b"x", False)

    @rule(
        writer=writers,
        phase=st.sampled_from(("load", "translate")),
        status=st.none() | st.sampled_from(get_args(PhaseStatus)),
        completed=st.none() | st.integers(0, 20),
        total=st.none() | st.integers(0, 20),
    )
    def set_phase(
        self,
        writer: _Writer,
        phase: str,
        status: Any,
        completed: int | None,
        total: int | None,
    ) -> None:
        if writer.orphaned or self._superseded(writer):
            return
        self._both(
            f"set_phase({writer.run_id!r}, {phase!r}, status={status!r}, "
            f"completed={completed!r}, total={total!r})",
            lambda side: writer.on(side).set_phase(
                phase, status=status, completed=completed, total=total
            ),
        )

    @rule(
        writer=writers,
        data=st.dictionaries(st.sampled_from(("phase", "done", "langs")), _json_leaf, max_size=3),
        merge=st.booleans(),
    )
    def set_state(self, writer: _Writer, data: dict[str, Any], merge: bool) -> None:
        if writer.orphaned or self._superseded(writer):
            return
        method = "update_state" if merge else "set_state"
        self._both(
            f"{method}({writer.run_id!r}, {data!r})",
            lambda side: getattr(writer.on(side), method)(copy.deepcopy(data)),
        )

    @precondition(lambda self: self._capable.compare_and_swap)  # labels change beside writers
    @rule(
        run=writers,
        metadata=st.dictionaries(
            st.sampled_from(("project", "lang", "bad key")), _json_leaf, max_size=2
        ),
        add=st.lists(st.sampled_from(("nightly", "golden", "")), max_size=2),
        remove=st.lists(st.sampled_from(("nightly", "golden")), max_size=1),
    )
    def relabel(
        self, run: _Writer, metadata: dict[str, Any], add: list[str], remove: list[str]
    ) -> None:
        """Labels change through the store, live run or finished, like a reviewer's would."""
        run_id = run.run_id
        if run.orphaned:
            return
        self._both(
            f"set_metadata({run_id!r}, {metadata!r})",
            lambda side: side.store.set_metadata(side.id(run_id), copy.deepcopy(metadata)),
        )
        self._both(
            f"set_tags({run_id!r}, add={add!r}, remove={remove!r})",
            lambda side: side.store.set_tags(side.id(run_id), add=add, remove=remove),
        )

    @rule(
        writer=writers,
        name=st.sampled_from(("latency_ms", "tokens", "bad name")),
        value=st.floats(allow_nan=True, allow_infinity=True, width=32) | st.integers(-5, 5),
        step=st.none() | st.integers(0, 3),
    )
    def log_metric(self, writer: _Writer, name: str, value: float, step: int | None) -> None:
        if writer.orphaned or self._held_elsewhere(writer, "metrics"):
            return
        writer.streams.add("metrics")
        self._both(
            f"log_metric({writer.run_id!r}, {name!r}, {value!r}, step={step!r})",
            lambda side: writer.on(side).log_metric(name, value, step=step),
        )

    @rule(writer=writers)
    def flush(self, writer: _Writer) -> None:
        if writer.orphaned:
            return
        self._both(f"flush({writer.run_id!r})", lambda side: writer.on(side).flush())

    @rule(
        writer=writers,
        status=st.sampled_from(("succeeded", "failed", "cancelled", "crashed", "running")),
        error=st.none() | st.just("RuntimeError: boom"),
    )
    def finish(self, writer: _Writer, status: Any, error: str | None) -> None:
        if writer.orphaned:
            return
        self._both(
            f"finish({writer.run_id!r}, {status!r}, error={error!r})",
            lambda side: writer.on(side).finish(status, error=error),
        )
        if writer.finished:
            writer.streams.clear()

    @rule(target=writers, run=writers)
    def resume_run(self, run: _Writer) -> Any:
        run_id = run.run_id
        self._settle(run_id)
        if self._live_writers(run_id) and not self._capable.compare_and_swap:
            return multiple()
        backend, reference = self._both(
            f"resume_run({run_id!r})",
            lambda side: side.store.resume_run(side.id(run_id), force=True),
        )
        if reference is None:
            return multiple()
        writer = _Writer(run_id, backend, reference)
        self._writers.append(writer)
        return writer

    @rule(run=writers, force=st.booleans())
    def delete_run(self, run: _Writer, force: bool) -> None:
        run_id = run.run_id
        self._both(
            f"delete_run({run_id!r}, force={force})",
            lambda side: side.store.delete_run(side.id(run_id), force=force),
        )
        if run_id in self._existing and not self._reference_has(run_id):
            self._existing.discard(run_id)
            for writer in self._writers:
                if writer.run_id == run_id:
                    writer.orphaned = True

    # -- reading --------------------------------------------------------------------

    def _settle(self, run_id: str) -> None:
        """Without ``native_append`` records show once flushed: flush before reading them.

        (Object stores buffer records into segments; the reference appends in place.)
        """
        if self._capable.native_append:
            return
        for writer in self._live_writers(run_id):
            self._both(f"flush({run_id!r})", writer.flush)

    @precondition(lambda self: self._capable.consistent_listing)
    @rule(
        query=_queries,
        after=st.none() | writers,
        before=st.none() | writers,
    )
    def list_runs(
        self, query: dict[str, Any], after: _Writer | None, before: _Writer | None
    ) -> None:
        def list_(side: _Side) -> list[runstore.RunRecord]:
            times: dict[str, Any] = {}
            if after is not None:
                times["created_after"] = side.created_at[after.run_id]
            if before is not None:
                times["created_before"] = side.created_at[before.run_id]
            return list(side.store.list_runs(**query, **times))

        bounds = [f"created_after=<{after.run_id}>"] if after else []
        bounds += [f"created_before=<{before.run_id}>"] if before else []
        args = ", ".join([*(f"{k}={v!r}" for k, v in query.items()), *bounds])
        self._both(f"list_runs({args})", list_)

    @rule(run=writers)
    def get_run(self, run: _Writer) -> None:
        self._settle(run.run_id)

        def view(side: _Side) -> dict[str, Any]:
            found = side.store.get_run(side.id(run.run_id))
            return {
                "manifest": found.manifest,
                "state": found.state,
                "summary": found.summary,
                "streams": found.streams(),
                "artifacts": found.artifacts(),
            }

        self._both(f"get_run({run.run_id!r})", view)

    @rule(run=writers, stream=st.sampled_from((*STREAMS, ARTIFACTS_STREAM, *BAD_STREAMS[1:])))
    def read_stream(self, run: _Writer, stream: str) -> None:
        self._settle(run.run_id)
        self._both(
            f"get_run({run.run_id!r}).read({stream!r})",
            lambda side: list(side.store.get_run(side.id(run.run_id)).read(stream)),
        )

    @rule(
        run=writers,
        name=st.sampled_from((*GOOD_ARTIFACT_NAMES, *BAD_ARTIFACT_NAMES[:3])),
        verify=st.booleans(),
    )
    def read_artifact(self, run: _Writer, name: str, verify: bool) -> None:
        self._settle(run.run_id)
        self._both(
            f"get_run({run.run_id!r}).read_artifact({name!r}, verify={verify})",
            lambda side: side.store.get_run(side.id(run.run_id)).read_artifact(name, verify=verify),
        )

    @rule(run=writers, instance_id=st.sampled_from((*INSTANCE_IDS, "inst_missing")))
    def instance(self, run: _Writer, instance_id: str) -> None:
        self._settle(run.run_id)
        self._both(
            f"get_run({run.run_id!r}).instance({instance_id!r})",
            lambda side: side.store.get_run(side.id(run.run_id)).instance(instance_id),
        )

    @rule(
        run_id=st.sampled_from((*UNKNOWN_RUN_IDS, *BAD_RUN_IDS)),
        operation=st.sampled_from(("get_run", "resume_run", "delete_run")),
    )
    def ask_for_a_run_that_does_not_exist(self, run_id: str, operation: str) -> None:
        self._both(
            f"{operation}({run_id!r})",
            lambda side: getattr(side.store, operation)(run_id),
        )

    @invariant()
    def every_run_is_listed_alike(self) -> None:
        if self._capable.consistent_listing:
            self._both("list_runs()", lambda side: side.store.list_runs())


def _reuse(metadata: dict[str, Any]) -> None:
    """Change the caller's nested containers after they were handed over."""
    for value in metadata.get("config", {}).values():
        if isinstance(value, dict):
            value["changed_after_create"] = True
        elif isinstance(value, list):
            value.append("changed after create")
    if isinstance(metadata.get("scenario_ids"), list):
        metadata["scenario_ids"].append("changed_after_create")


def state_machine_settings(**changes: Any) -> settings:
    """Hypothesis settings for the kit, by profile (``$RUNSTORE_CONFORMANCE_PROFILE``).

    ``ci`` (the default) tries the same :data:`DEFAULT_EXAMPLES` sequences of up to
    :data:`DEFAULT_STEPS` steps on every run and writes no example database;
    ``thorough`` tries 500 new ones of up to 60 steps and keeps failing examples in
    ``<temporary folder>/runstore-conformance-examples`` unless ``database=`` is given.
    ``$RUNSTORE_CONFORMANCE_EXAMPLES`` overrides how many sequences either tries.

    :param changes: any :class:`hypothesis.settings` field, e.g. ``max_examples=200``.
    """
    profile = os.environ.get(PROFILE_ENV, "").strip() or "ci"
    if profile not in PROFILES:
        raise ValueError(f"{PROFILE_ENV} must be one of {', '.join(PROFILES)}, got {profile!r}")
    options: dict[str, Any] = {
        **PROFILES[profile],
        "deadline": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
    }
    if "database" not in options:
        folder = os.path.join(tempfile.gettempdir(), "runstore-conformance-examples")
        options["database"] = DirectoryBasedExampleDatabase(folder)
    raw = os.environ.get(EXAMPLES_ENV, "").strip()
    if raw:
        try:
            options["max_examples"] = int(raw)
        except ValueError:
            raise ValueError(f"{EXAMPLES_ENV} must be a whole number, got {raw!r}") from None
    options.update(changes)
    return settings(**options)


def run_state_machine(
    open_store: Callable[[], runstore.Store],
    *,
    capabilities: Capabilities | None = None,
    settings: settings | None = None,
) -> None:
    """Run :class:`StoreStateMachine` against the store ``open_store()`` opens.

    :param open_store: opens a fresh, empty store each call (one per example).
    :param capabilities: switch off what the test environment cannot do
        (combined with what the backend declares).
    :param settings: Hypothesis settings; default :func:`state_machine_settings`.

    Raises with a minimal failing sequence of operations if the backend and
    the reference disagree.
    """
    with _open_reference() as reference:
        machine = type(
            "StoreStateMachine",
            (StoreStateMachine,),
            {
                "open_store": staticmethod(open_store),
                "capabilities": capabilities or Capabilities(),
                "shared_reference": reference,
            },
        )
        run_state_machine_as_test(machine, settings=settings or state_machine_settings())


class StoreStateMachineConformance:
    """Pytest mixin: the state machine against the ``store_factory`` fixture.

    ``store_factory`` returns a callable opening a fresh, empty store. Without
    it the test is skipped, visibly.
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    state_machine_settings: ClassVar[settings | None] = None
    """Hypothesis settings for this class; default :func:`state_machine_settings`."""

    @pytest.fixture
    def store_factory(self) -> Callable[[], runstore.Store]:
        pytest.skip(
            "no store_factory fixture: provide one returning a callable that opens a fresh, "
            "empty store, to compare random operation sequences with the reference"
        )

    def test_random_operations_agree_with_the_reference(
        self, store_factory: Callable[[], runstore.Store]
    ) -> None:
        run_state_machine(
            store_factory, capabilities=self.capabilities, settings=self.state_machine_settings
        )
