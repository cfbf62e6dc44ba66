"""Entry point ``sqlite``: registers the backend; its module loads on first use."""

from __future__ import annotations

from collections.abc import Callable

import runstore
from runstore.spi import BackendSpec, Target


def _factory(target: Target) -> object:
    from runstore_sqlite.backend import SQLiteBackend

    return SQLiteBackend.from_target(target)


@runstore.hookimpl
def runstore_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="sqlite",
            factory=_factory,
            schemes=("sqlite",),
            description="state, logs and artifacts in one SQLite file (example backend)",
            distribution="runstore-sqlite",
        )
    )
