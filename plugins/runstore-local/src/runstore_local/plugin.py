"""Entry point ``local``: registers the backend; the backend module loads on first use."""

from __future__ import annotations

from collections.abc import Callable

import runstore
from runstore.spi.backends import BackendSpec, Target


def _factory(target: Target) -> object:
    from runstore_local.backend import LocalBackend

    return LocalBackend.from_target(target)


@runstore.hookimpl
def runstore_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="local",
            factory=_factory,
            schemes=("file",),
            description="local filesystem (bare paths and file:// URLs)",
            distribution="runstore-local",
        )
    )
