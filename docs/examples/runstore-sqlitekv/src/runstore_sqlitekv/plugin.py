"""The entry point's module: registers the ``sqlitekv`` backend (``sqlitekv:///path/runs.db``)."""

from __future__ import annotations

from collections.abc import Callable

from runstore.spi import BackendSpec, InvalidInputError, KVBackend, Target, hookimpl


def _open(target: Target) -> KVBackend:
    if target.options or not target.path:
        raise InvalidInputError(
            f"use sqlitekv:///path/to/runs.db, without options (got {target.url!r})",
            details={"options": sorted(target.options)},
        )
    from runstore_sqlitekv.kv import SQLiteKV  # imported when a store is opened

    return KVBackend(SQLiteKV(target.path))


@hookimpl
def runstore_register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="sqlitekv",
            factory=_open,
            schemes=("sqlitekv",),
            description="runs in one SQLite table of keys and values (key-value SPI example)",
            distribution="runstore-sqlitekv",
        )
    )
