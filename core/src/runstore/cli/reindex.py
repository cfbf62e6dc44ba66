"""``runstore reindex``: rebuild the run index from the runs themselves.

A thin layer over :func:`runstore.ops.maintenance.reindex`, registered through
:data:`runstore.cli.app.LAZY_COMMANDS`.
"""

from __future__ import annotations

import click

from runstore.cli.app import CliContext, emit_json, json_option, pass_cli
from runstore.cli.damage import DamageReport
from runstore.ops.maintenance import reindex as reindex_store

__all__ = ["reindex"]


@click.command()
@json_option
@pass_cli
def reindex(cli_ctx: CliContext) -> None:
    """Rebuild the store's run index from the run folders (or objects) themselves.

    Rarely needed: the local store's index follows its folders by itself, so
    a run folder copied in or deleted by hand shows up in (or leaves) 'ls' at
    once. Rebuild it after restoring a backup of the runs without the index,
    or to list the run folders that cannot be read: each damaged run is
    reported with its path and cause, left out of the index, and the command
    exits 1.

    \b
    Examples:
      runstore reindex
      runstore --store /data/runs reindex --json
    """
    damaged = DamageReport(cli_ctx)
    store = cli_ctx.store
    count = store.portal.call(reindex_store(store.aio, on_damage=damaged))
    if cli_ctx.json:
        emit_json({"store": cli_ctx.store_url, "runs": count, "damaged": damaged.to_json()})
    else:
        left_out = f"; {len(damaged.errors)} damaged runs left out" if damaged else ""
        cli_ctx.out.print(
            f"reindexed {cli_ctx.store_url}: {count} runs{left_out}",
            style="bold red" if damaged else "green",
            markup=False,
        )
    damaged.finish()
