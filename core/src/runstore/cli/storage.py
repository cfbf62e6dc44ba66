"""``runstore gc`` and ``runstore cp``: the commands that delete or copy whole runs.

Thin layers over :mod:`runstore.ops.retention` and :mod:`runstore.ops.transfer`,
registered through :data:`runstore.cli.app.LAZY_COMMANDS`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click
from rich import box
from rich.table import Table
from rich.text import Text

from runstore.cli.app import CliContext, emit_json, json_option, pass_cli
from runstore.cli.damage import DamageReport
from runstore.cli.format import fmt_bytes
from runstore.cli.maintenance import RUN_STATUSES, AgeParam, call_async, progress_bar
from runstore.ops.retention import (
    Candidate,
    ExpiredStream,
    RetentionPolicy,
    collect_garbage,
    expire_streams,
)
from runstore.ops.transfer import DEFAULT_CONCURRENCY, CopyProgress, copy_runs
from runstore.store import open as open_store

__all__ = ["cp", "gc"]


if TYPE_CHECKING:  # click >= 8.4 makes ParamType generic; older versions are not subscriptable
    _SizeParam = click.ParamType[int]
else:
    _SizeParam = click.ParamType


class SizeParam(_SizeParam):
    """A size in bytes: ``1048576``, ``500M``, ``10G``, ``1.5GiB`` (powers of 1024)."""

    name = "SIZE"
    _SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
    _POWERS: Final = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = self._SIZE.fullmatch(str(value).strip())
        if match is None:
            self.fail(f"{value!r} is not a size: use bytes or 500M, 10G, 1T", param, ctx)
        number, unit = float(match.group(1)), match.group(2).lower()
        return int(number * 1024 ** self._POWERS[unit])


# -- gc -----------------------------------------------------------------------------


def _policy(
    path: Path | None,
    *,
    older_than: timedelta | None,
    keep_last: int | None,
    statuses: Sequence[str],
    max_bytes: int | None,
    keep_tags: Sequence[str],
) -> RetentionPolicy:
    """The policy file's rules, overridden by the options given on the command line."""
    base = RetentionPolicy.from_file(path) if path is not None else RetentionPolicy()
    updates: dict[str, Any] = {}
    if older_than is not None:
        updates["older_than"] = older_than
    if keep_last is not None:
        updates["keep_last"] = keep_last
    if statuses:
        updates["statuses"] = list(statuses)
    if max_bytes is not None:
        updates["max_total_bytes"] = max_bytes
    if keep_tags:
        updates["keep_tags"] = sorted({*base.keep_tags, *keep_tags})
    return RetentionPolicy.model_validate({**base.model_dump(exclude_unset=True), **updates})


def _gc_table(candidates: Sequence[Candidate], expired: Sequence[ExpiredStream]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("run id", style="cyan", no_wrap=True)
    table.add_column("what", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("why")
    for c in candidates:
        table.add_row(Text(c.run_id), "whole run", fmt_bytes(c.bytes), Text(c.reason))
    for e in expired:
        table.add_row(Text(e.run_id), Text(f"{e.stream}.jsonl"), fmt_bytes(e.bytes), Text(e.reason))
    return table


@click.command()
@click.option(
    "--older-than",
    type=AgeParam(),
    help="Delete runs that finished more than AGE ago (e.g. 30d, 12h, 2w).",
)
@click.option(
    "--keep-last",
    type=click.IntRange(min=0),
    metavar="N",
    help="Always keep the newest N runs (of --status, if given); "
    "alone: delete every finished run but those.",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(RUN_STATUSES),
    help="Only delete runs with this status (repeatable). Live runs are never deleted.",
)
@click.option(
    "--max-bytes",
    type=SizeParam(),
    help="Delete the oldest finished runs until the store holds at most SIZE (e.g. 10G).",
)
@click.option(
    "--keep-tag",
    "keep_tags",
    multiple=True,
    metavar="TAG",
    help="Never delete runs with this tag (repeatable; "
    "adds to 'pinned' or the policy file's keep_tags).",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Read the rules from a TOML or JSON file; options given here override it.",
)
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@json_option
@pass_cli
def gc(
    cli_ctx: CliContext,
    *,
    older_than: timedelta | None,
    keep_last: int | None,
    statuses: tuple[str, ...],
    max_bytes: int | None,
    keep_tags: tuple[str, ...],
    policy_file: Path | None,
    dry_run: bool,
) -> None:
    """Delete finished runs a retention policy selects, and expired log streams.

    A run is deleted when it finished more than --older-than ago, or is not
    among the newest --keep-last runs (when that is the only rule), or must
    go to bring the store under --max-bytes (oldest first). --keep-last
    always protects the newest N runs, and live runs (created, running) and
    runs tagged 'pinned' or --keep-tag are never deleted.

    Every gc also deletes the log streams whose retention has expired: a
    run created with log_retention={"logs": 7} loses logs.jsonl 7 days after
    it finished (the rest of the run stays).

    A policy file holds the same rules:

    \b
        older_than = "30d"
        keep_last = 50
        statuses = ["failed", "cancelled", "crashed"]
        max_total_bytes = 10_000_000_000
        keep_tags = ["pinned", "baseline"]

    \b
    Examples:
      runstore gc --older-than 30d --keep-last 50 --dry-run
      runstore gc --status failed --status crashed --older-than 7d
      runstore gc --max-bytes 10G --keep-tag baseline
      runstore gc --policy retention.toml --json
    """
    policy = _policy(
        policy_file,
        older_than=older_than,
        keep_last=keep_last,
        statuses=statuses,
        max_bytes=max_bytes,
        keep_tags=keep_tags,
    )
    store = cli_ctx.store.aio
    damaged = DamageReport(cli_ctx)
    candidates: list[Candidate] = []
    if policy.selects_anything:
        collect = collect_garbage(store, policy, dry_run=dry_run, on_damage=damaged)
        candidates = call_async(cli_ctx, collect)
    gone = {c.run_id for c in candidates}
    expire = expire_streams(store, policy, dry_run=dry_run, skip=gone, on_damage=damaged)
    expired = [e for e in call_async(cli_ctx, expire) if e.run_id not in gone]
    freed = sum(c.bytes for c in candidates) + sum(e.bytes for e in expired)
    if cli_ctx.json:
        emit_json(
            {
                "dry_run": dry_run,
                "policy": policy.model_dump(mode="json"),
                "runs": [
                    {"run_id": c.run_id, "reason": c.reason, "bytes": c.bytes} for c in candidates
                ],
                "streams": [
                    {"run_id": e.run_id, "stream": e.stream, "reason": e.reason, "bytes": e.bytes}
                    for e in expired
                ],
                "bytes": freed,
                "damaged": damaged.to_json(),
            }
        )
        damaged.finish()
        return
    out = cli_ctx.out
    if not policy.selects_anything:
        out.print(
            "no run retention rule given (--older-than, --keep-last, --max-bytes or --policy): "
            "only expired log streams are collected",
            style="dim",
            markup=False,
        )
    if not candidates and not expired:
        out.print("nothing to delete", markup=False)
        damaged.finish()
        return
    out.print(_gc_table(candidates, expired))
    verb = "would delete" if dry_run else "deleted"
    what = f"{len(candidates)} runs" + (f" and {len(expired)} log streams" if expired else "")
    out.print(f"{verb} {what}, {fmt_bytes(freed)}", style="bold", markup=False)
    if dry_run:
        out.print("(dry run: nothing was deleted)", style="dim", markup=False)
    damaged.finish()


# -- cp -----------------------------------------------------------------------------


@click.command()
@click.argument("destination", metavar="DEST_URL")
@click.argument("run_ids", metavar="[RUN]...", nargs=-1)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1, max=256),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Copy at most N artifacts at once (1: one after the other).",
)
@json_option
@pass_cli
def cp(cli_ctx: CliContext, destination: str, run_ids: tuple[str, ...], jobs: int) -> None:
    """Copy runs from the store to DEST_URL (any backend to any other), verified.

    Copies each finished run exactly as stored: manifest, state, summary,
    every stream byte for byte and every artifact, each checked against its
    sha256 on the way. With no RUN, copies every run. Live runs are left
    alone (they are still changing) and reported. Runs already copied are
    skipped, and an interrupted copy resumes where it stopped: run the same
    command again. A different run under the same id at DEST_URL is an
    error; nothing of it is overwritten. Artifacts are copied --jobs at a
    time, and a few runs at once; the progress bar shows the runs done and
    the bytes copied. RUN is a run id, latest, latest~N, latest:STATUS or a
    unique prefix.

    \b
    Examples:
      runstore --store ./runs cp s3://bucket/runs
      runstore --store s3://bucket/runs cp ./runs run_20240115_001
      runstore cp /backup/runs latest:failed --jobs 32 --json
    """
    source = cli_ctx.store
    target = open_store(destination)
    try:
        with progress_bar(cli_ctx, "copying") as progress:
            task = progress.add_task("cp", total=None, current="")

            def tell(step: CopyProgress) -> None:
                what = step.item or "done"
                progress.update(
                    task,
                    total=step.runs_total,
                    completed=step.runs_done,
                    current=f"{step.run_id} {what} ({fmt_bytes(step.bytes_copied)})",
                )

            wanted = [cli_ctx.resolve(ref) for ref in run_ids] or None
            damaged = DamageReport(cli_ctx)
            report = copy_runs(
                source, target, wanted, progress=tell, on_damage=damaged, concurrency=jobs
            )
    finally:
        target.close()
    if cli_ctx.json:
        emit_json(
            {
                "from": cli_ctx.store_url,
                "to": destination,
                "copied": report.copied,
                "skipped": report.skipped,
                "live": report.live,
                "bytes": report.bytes_copied,
                "damaged": damaged.to_json(),
            }
        )
        damaged.finish()
        return
    out = cli_ctx.out
    for run_id in report.copied:
        out.print(Text.assemble(("copied   ", "green"), run_id))
    for run_id in report.skipped:
        out.print(Text.assemble(("skipped  ", "dim"), run_id, (" (already there)", "dim")))
    for run_id in report.live:
        out.print(
            Text.assemble(("live     ", "yellow"), run_id, (" (not finished: left alone)", "dim"))
        )
    out.print(
        f"{len(report.copied)} runs copied ({fmt_bytes(report.bytes_copied)}), "
        f"{len(report.skipped)} already there, {len(report.live)} live, to {destination}",
        style="bold",
        markup=False,
    )
    damaged.finish()
