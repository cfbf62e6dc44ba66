"""Damaged runs in a store-wide command's output: on stderr as met, in ``--json``, exit 1.

``verify``, ``gc``, ``cp``, ``recover`` and ``reindex`` go on past a run they
cannot read (see :mod:`runstore.ops.damage`). Each passes a
:class:`DamageReport` as the operation's ``on_damage``, puts
:meth:`DamageReport.to_json` under ``"damaged"`` in its ``--json`` document and
calls :meth:`DamageReport.finish` last: exit status 1 when a run was damaged.
"""

from __future__ import annotations

from typing import Any

import click

from runstore.cli.app import EXIT_FAILURE, CliContext
from runstore.model.errors import RunstoreError
from runstore.ops.damage import unlisted_damaged_runs

__all__ = ["DamageReport"]


class DamageReport:
    """The damaged runs one command met, each printed on stderr as it comes (not with --json)."""

    def __init__(self, cli_ctx: CliContext, *, in_json: bool = True) -> None:
        """:param in_json: the command's ``--json`` document lists them (else they go to
        stderr with ``--json`` too: ``ls --json`` prints a plain list of runs)."""
        self.cli_ctx = cli_ctx
        self.in_json = in_json
        self.errors: list[RunstoreError] = []

    def __call__(self, error: RunstoreError) -> None:
        run_id = error.details.get("run_id")
        if any(seen.details.get("run_id") == run_id for seen in self.errors):
            return  # met again by the command's next step (gc: runs, then log streams)
        self.errors.append(error)
        if not (self.cli_ctx.json and self.in_json):
            click.echo(f"{click.style('damaged:', fg='red', bold=True)} {error.message}", err=True)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def to_json(self) -> list[dict[str, Any]]:
        """Each damaged run: ``{"code", "message", "details": {"run_id", "path", "cause"}}``."""
        return [error.to_dict() for error in self.errors]

    def unlisted(self) -> None:
        """Report the damaged runs the store's listing left out (``ls``)."""
        store = self.cli_ctx.store
        for error in store.portal.call(unlisted_damaged_runs(store.aio)):
            self(error)

    def finish(self) -> None:
        """Exit with status 1 if a run was damaged (after the command's output)."""
        if self.errors:
            raise SystemExit(EXIT_FAILURE)
