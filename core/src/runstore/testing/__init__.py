"""The conformance kit: prove a backend behaves like the in-memory reference.

A backend author writes::

    import pytest, runstore
    from runstore.testing import StoreConformance

    class TestMyBackend(StoreConformance):
        @pytest.fixture
        def store(self, tmp_path):
            with runstore.open(f"mybackend://{tmp_path}") as store:
                yield store

and runs pytest. Capability flags (``capabilities = Capabilities(...)`` on the
class) switch tests off visibly, as skips naming the capability.
"""

import pytest

pytest.register_assert_rewrite("runstore.testing.conformance")

from runstore.testing.conformance import (  # noqa: E402 - after assert rewriting is registered
    ArtifactConformance,
    LogConformance,
    StateConformance,
    StoreConformance,
    check_registration,
)

__all__ = [
    "ArtifactConformance",
    "LogConformance",
    "StateConformance",
    "StoreConformance",
    "check_registration",
]
