"""Run references: what the command line accepts wherever it takes a run id.

==================  ==========================================================
reference           the run
==================  ==========================================================
``run_20240115_001``  that run (an exact id always wins)
``latest``          the newest run (by creation time)
``latest~N``        the run N before the newest (``latest~0`` is ``latest``)
``latest:STATUS``   the newest run with that status (``latest:failed``)
``latest:STATUS~N`` the run N before that one
a unique prefix     the one run whose id starts with it (``run_20240115_0``)
==================  ==========================================================

An unknown id is ``not_found`` naming the closest ids; a prefix that
several runs share is ``invalid_input`` listing them.
"""

from __future__ import annotations

import difflib
import re
from typing import Final, cast, get_args

from runstore.aio import AsyncStore
from runstore.model.errors import InvalidInputError, NotFoundError
from runstore.model.names import validate_run_id
from runstore.model.run import RunStatus

__all__ = ["LATEST", "resolve_run"]

LATEST: Final = re.compile(r"latest(?::(?P<status>[A-Za-z_]+))?(?:~(?P<back>\d+))?")
_STATUSES: Final = get_args(RunStatus)
_SHOWN: Final = 10
"""How many candidates an ambiguous prefix lists."""


async def resolve_run(store: AsyncStore, ref: str) -> str:
    """The id of the run ``ref`` names in ``store`` (see the module's table)."""
    latest = LATEST.fullmatch(ref)
    if latest is not None:
        return await _latest(store, ref, latest.group("status"), int(latest.group("back") or 0))
    if ref.startswith("latest") and ref[6:7] in (":", "~"):
        raise InvalidInputError(
            f"{ref!r} is not a run reference: use latest, latest~N, latest:STATUS "
            "or latest:STATUS~N (e.g. latest~1, latest:failed)",
            details={"ref": ref},
        )
    matches = await store.state_backend.list_run_ids(ref)
    if ref in matches:
        return ref
    if len(matches) == 1:
        return matches[0]
    if matches:
        ordered = sorted(matches)
        shown = ", ".join(ordered[:_SHOWN])
        more = f" and {len(ordered) - _SHOWN} more" if len(ordered) > _SHOWN else ""
        raise InvalidInputError(
            f"{ref!r} matches {len(ordered)} runs: {shown}{more}; give more of the id to pick one",
            details={"ref": ref, "candidates": ordered},
        )
    validate_run_id(ref)  # a malformed id is invalid_input, not an unknown run
    every = await store.state_backend.list_run_ids()
    close = difflib.get_close_matches(ref, every, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    where = "" if every else " (the store has no runs)"
    raise NotFoundError(
        f"run {ref!r} not found in {store.url}{where}{hint}; 'runstore ls' lists the runs",
        details={"run_id": ref, "suggestions": close},
    )


async def _latest(store: AsyncStore, ref: str, status: str | None, back: int) -> str:
    if status is not None and status not in _STATUSES:
        raise InvalidInputError(
            f"{ref!r}: no run status {status!r} (statuses: {', '.join(_STATUSES)})",
            details={"ref": ref, "status": status},
        )
    wanted = cast("RunStatus | None", status)  # checked against the statuses above
    page = await store.list_runs(status=wanted, limit=1, offset=back)
    if page:
        return page[0].run_id
    which = f"with status {status}" if status else "in all"
    count = len(await store.list_runs(status=wanted))
    has = f"it has {count} runs {which}" if count or status else "it has no runs yet"
    raise NotFoundError(
        f"no run {ref!r} in {store.url}: {has}",
        details={"ref": ref, "status": status, "count": count},
    )
