"""The conformance kit: prove a backend behaves like the in-memory reference.

A backend author writes::

    import itertools, pytest, runstore
    from runstore.testing import StoreConformance

    class TestMyBackend(StoreConformance):
        @pytest.fixture
        def store(self, tmp_path):
            with runstore.open(f"mybackend://{tmp_path}") as store:
                yield store

        @pytest.fixture
        def store_factory(self, tmp_path):  # a fresh, empty store per call
            names = itertools.count()
            return lambda: runstore.open(f"mybackend://{tmp_path}/machine{next(names)}")

        # store_opener (a picklable callable opening a new store object on the same
        # location as `store`) defaults to runstore.open(store.url): override it when
        # that URL alone does not reopen your store.

and runs pytest. The mixins state one behaviour per test; the state machine
(:func:`run_state_machine`) applies random operation sequences to the backend
and to the reference and fails at the first step where they disagree.

Capability flags switch tests off visibly, as skips naming the capability
and who switched it off: the backend (``capabilities`` on its class) or the
test class (``capabilities = Capabilities(...)``, for a test environment
that lacks something the backend can do).
"""

import pytest

pytest.register_assert_rewrite(
    "runstore.testing.conformance", "runstore.testing.processes", "runstore.testing.stateful"
)

from runstore.testing.conformance import (  # noqa: E402 - after assert rewriting is registered
    ArtifactConformance,
    LogConformance,
    MultiProcessConformance,
    PersistenceConformance,
    StateConformance,
    StoreConformance,
    check_registration,
)
from runstore.testing.stateful import (  # noqa: E402
    EXAMPLES_ENV,
    PROFILE_ENV,
    PROFILES,
    StoreStateMachine,
    StoreStateMachineConformance,
    declared_capabilities,
    run_state_machine,
    state_machine_settings,
)

__all__ = [
    "EXAMPLES_ENV",
    "PROFILES",
    "PROFILE_ENV",
    "ArtifactConformance",
    "LogConformance",
    "MultiProcessConformance",
    "PersistenceConformance",
    "StateConformance",
    "StoreConformance",
    "StoreStateMachine",
    "StoreStateMachineConformance",
    "check_registration",
    "declared_capabilities",
    "run_state_machine",
    "state_machine_settings",
]
