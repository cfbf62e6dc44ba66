"""Damage stays in one run: how store-wide operations report a run they cannot read.

``recover``, ``gc``, ``cp`` and ``reindex`` walk many runs. A run whose files
were damaged behind runstore's back (a garbage ``state.json``, a run directory
swapped for a symbolic link, a file the store may not read) must not stop the
walk: the operation reports that run as a typed error and goes on with the
others. Each such error names the run (``details["run_id"]``), where it lives
(``details["path"]``) and what is wrong (``details["cause"]``, the backend's
own message, and ``details["cause_code"]``).

Every operation takes ``on_damage``: a callable receiving each damaged run's
error as it is met (the CLI collects them, prints them and exits 1 at the
end). Without it the operation finishes the undamaged runs first and then
raises: the damaged run's error, or one :class:`~runstore.model.errors.CorruptError`
listing them all when there are several.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Final, Protocol, runtime_checkable

from runstore.aio import AsyncStore
from runstore.model.errors import (
    BackendUnavailableError,
    ConflictError,
    CorruptError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RunstoreError,
    StorageIOError,
)

__all__ = [
    "DAMAGE",
    "DamageHandler",
    "Damages",
    "ReportsDamagedRuns",
    "as_damaged_run",
    "damaged_run",
    "raise_damaged",
    "run_location",
    "unlisted_damaged_runs",
]

DamageHandler = Callable[[RunstoreError], None]
"""Receives the typed error of each damaged run an operation meets."""

DAMAGE: Final[tuple[type[RunstoreError], ...]] = (
    CorruptError,
    InvalidInputError,  # a symbolic link in the way
    ConflictError,  # a file where a directory belongs, or the other way round
    NotFoundError,  # a file of the run is missing (callers tell it from a deleted run)
    PermissionDeniedError,
    StorageIOError,
)
"""What reading one run may raise when that run is damaged.

:class:`~runstore.model.errors.BackendUnavailableError` is not among them: an
unreachable backend fails every run, so the operation stops.
"""

# Errors that tell the user what to fix keep their class; the rest mean the run's
# stored tree is not what runstore wrote: corrupt.
_KEPT: Final = (CorruptError, PermissionDeniedError, StorageIOError)


def run_location(store: AsyncStore, run_id: str) -> str:
    """Where the run lives, for a person: ``/abs/runs/run_1``, ``s3://bucket/p/run_1``."""
    url = store.url.split("?", 1)[0].rstrip("/")
    if url.startswith("file://"):
        url = url[len("file://") :]
    if ":" not in url:  # a local path: absolute, so it can be pasted anywhere
        url = os.path.abspath(url)
    return f"{url}/{run_id}"


def damaged_run(store: AsyncStore, run_id: str, exc: RunstoreError) -> RunstoreError:
    """The typed error reporting run ``run_id`` as damaged by ``exc``.

    It carries the run's id, its location and the cause; a corrupt, unreadable
    or failing run keeps its error class, any other damage is a
    :class:`~runstore.model.errors.CorruptError`.
    """
    if isinstance(exc, BackendUnavailableError):
        return exc
    if "cause_code" in exc.details and exc.details.get("run_id") == run_id:
        return exc  # reported already
    path = run_location(store, run_id)
    cls = type(exc) if isinstance(exc, _KEPT) else CorruptError
    error = cls(
        f"run {run_id!r} at {path} is damaged: {exc.message}; the other runs were not "
        "affected ('runstore verify' lists what is wrong, restore the run from a copy "
        "or delete it)",
        details={
            **exc.details,
            "run_id": run_id,
            "path": path,
            "cause": exc.message,
            "cause_code": exc.code,
        },
    )
    error.__cause__ = exc
    return error


def as_damaged_run(store: AsyncStore, run_id: str | None, exc: Exception) -> Exception:
    """``exc`` reported as run ``run_id``'s damage when that is what it is, else ``exc``.

    It is when ``exc`` is about that run's stored files: a corrupt file, or a
    file-system error in its tree (a link in the way, a file where a
    directory belongs). A missing run or a refused name is not damage.
    """
    if (
        run_id is None
        or not isinstance(exc, DAMAGE)
        or isinstance(exc, NotFoundError)
        or exc.details.get("run_id") != run_id
        or not (isinstance(exc, CorruptError) or "errno" in exc.details)
    ):
        return exc
    return damaged_run(store, run_id, exc)


@runtime_checkable
class ReportsDamagedRuns(Protocol):
    """A state backend that says which runs its last index rebuild could not read."""

    def damaged_runs(self) -> dict[str, RunstoreError]:
        """``run_id -> error`` of the runs left out of the index because they are damaged."""
        ...


async def unlisted_damaged_runs(store: AsyncStore) -> list[RunstoreError]:
    """The damaged runs the store's listing leaves out, as :func:`damaged_run` errors.

    Only a backend that tracks them (:class:`ReportsDamagedRuns`: the local one,
    whose index follows its run folders) knows any; for the others this is empty.
    """
    backend = store.state_backend
    if not isinstance(backend, ReportsDamagedRuns):
        return []
    found = sorted(backend.damaged_runs().items())
    return [damaged_run(store, run_id, exc) for run_id, exc in found]


class Damages:
    """The damaged runs one operation met: each reported once, then raised at the end."""

    def __init__(self, store: AsyncStore, on_damage: DamageHandler | None) -> None:
        self.store = store
        self.on_damage = on_damage
        self.found: dict[str, RunstoreError] = {}

    def __contains__(self, run_id: object) -> bool:
        return run_id in self.found

    def report(self, run_id: str, exc: RunstoreError) -> None:
        """Report run ``run_id`` damaged by ``exc`` (re-raising a store-wide failure)."""
        if not isinstance(exc, DAMAGE):
            raise exc
        if run_id in self.found:
            return
        error = damaged_run(self.store, run_id, exc)
        self.found[run_id] = error
        if self.on_damage is not None:
            self.on_damage(error)

    async def gone(self, run_id: str, exc: NotFoundError) -> None:
        """A listed run was not found: deleted meanwhile (fine), or damaged if still listed."""
        if run_id in await self.store.state_backend.list_run_ids(run_id):
            self.report(run_id, exc)

    def raise_unhandled(self) -> None:
        """Without ``on_damage``: raise what was found, now that the other runs are done."""
        if self.on_damage is None:
            raise_damaged(list(self.found.values()))


def raise_damaged(errors: Sequence[RunstoreError]) -> None:
    """Raise the damaged runs' errors: the one, or a :class:`CorruptError` listing them all."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        runs = ", ".join(str(e.details.get("run_id")) for e in errors)
        raise CorruptError(
            f"{len(errors)} runs are damaged ({runs}); the other runs were not affected: "
            + "; ".join(e.message for e in errors),
            details={"damaged": [e.to_dict() for e in errors]},
        )
