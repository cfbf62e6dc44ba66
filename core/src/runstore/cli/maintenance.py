"""``runstore verify``, ``diff`` and ``recover``: keeping a store healthy.

Each command is a thin layer over :mod:`runstore.ops.maintenance`; it is
registered through :data:`runstore.cli.app.LAZY_COMMANDS` and follows the
conventions described in :mod:`runstore.cli.app` (exit status, ``--json``,
examples in ``--help``). ``gc`` and ``cp`` are in :mod:`runstore.cli.storage`.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar, get_args

import click
import orjson
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from runstore.aio import AsyncStore
from runstore.aio import open as open_async
from runstore.analysis.compare import compare_runs
from runstore.cli.app import EXIT_FAILURE, CliContext, emit_json, json_option, pass_cli
from runstore.cli.compare import comparison_lines
from runstore.cli.damage import DamageReport
from runstore.cli.hints import require_store
from runstore.cli.refs import resolve_run
from runstore.model.errors import InvalidInputError
from runstore.model.run import RunStatus
from runstore.ops.maintenance import (
    DEFAULT_STALE_AFTER,
    Difference,
    Problem,
    Recovery,
    diff_runs,
    recover_runs,
    verify_run,
)
from runstore.ops.retention import parse_age
from runstore.store import RunView

__all__ = ["AgeParam", "call_async", "diff", "progress_bar", "recover", "verify"]

T = TypeVar("T")

RUN_STATUSES: Final = get_args(RunStatus)


def call_async(cli_ctx: CliContext, coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of the async API on the store's event loop."""
    return cli_ctx.store.portal.call(coro)


def progress_bar(cli_ctx: CliContext, label: str) -> Progress:
    """A progress bar on stderr, shown only to a person at a terminal."""
    return Progress(
        TextColumn(f"[bold]{label}[/] {{task.fields[current]}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=cli_ctx.err,
        transient=True,
        disable=cli_ctx.json or not cli_ctx.err.is_terminal,
    )


if TYPE_CHECKING:  # click >= 8.4 makes ParamType generic; older versions are not subscriptable
    _AgeParam = click.ParamType[timedelta]
else:
    _AgeParam = click.ParamType


class AgeParam(_AgeParam):
    """An age such as ``90s``, ``5m``, ``12h``, ``30d`` or ``2w``."""

    name = "AGE"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_age(str(value))
        except InvalidInputError as exc:
            self.fail(exc.message, param, ctx)


# -- verify -------------------------------------------------------------------------


@click.command()
@click.argument("run_ids", metavar="[RUN]...", nargs=-1)
@json_option
@pass_cli
def verify(cli_ctx: CliContext, run_ids: tuple[str, ...]) -> None:
    """Check runs: re-hash every artifact, parse every stream, check snapshots.

    RUN is a run id, latest, latest~N, latest:STATUS or a unique prefix.
    With no RUN, checks every run in the store. Each artifact's bytes must
    match the sha256 and size recorded when it was stored, every line of
    every stream must parse, and a finished run's summary must agree with
    its streams (record counts, pass/fail counts, artifact count). Each
    damaged line is a problem of its own, with its line number (at most 100
    a stream, then how many more; --json gives the number as "line"). Exits
    1 if any run has a problem, after listing every problem found.

    \b
    Examples:
      runstore verify
      runstore verify run_20240115_001 run_20240115_002
      runstore verify --json | jq '.runs[] | select(.ok | not)'
    """
    if run_ids:
        run_ids = tuple(cli_ctx.resolve(ref) for ref in run_ids)
    else:
        run_ids = tuple(r.run_id for r in cli_ctx.store.list_runs())
    results: list[tuple[str, list[Problem]]] = []
    with progress_bar(cli_ctx, "verifying") as progress:
        task = progress.add_task("verify", total=len(run_ids), current="")
        for run_id in run_ids:
            progress.update(task, current=run_id)
            results.append((run_id, call_async(cli_ctx, verify_run(cli_ctx.store.aio, run_id))))
            progress.advance(task)
    failed = [run_id for run_id, problems in results if problems]
    count = sum(len(problems) for _, problems in results)
    if cli_ctx.json:
        emit_json(
            {
                "ok": not failed,
                "checked": len(results),
                "failed": len(failed),
                "problems": count,
                "runs": [
                    {
                        "run_id": run_id,
                        "ok": not problems,
                        "problems": [
                            {"where": p.where, "message": p.message, "line": p.line, "code": p.code}
                            for p in problems
                        ],
                    }
                    for run_id, problems in results
                ],
            }
        )
    else:
        out = cli_ctx.out
        for run_id, problems in results:
            if not problems:
                out.print(Text.assemble(("ok    ", "green"), run_id))
                continue
            out.print(Text.assemble(("FAIL  ", "bold red"), run_id))
            for problem in problems:
                out.print(Text(f"      {problem.where}: {problem.message}"))
        if not results:
            out.print(f"no runs to verify in {cli_ctx.store_url}", markup=False)
        elif failed:
            out.print(
                f"{len(failed)} of {len(results)} runs have problems ({count} in all)",
                style="bold red",
                markup=False,
            )
        else:
            out.print(f"{len(results)} runs verified, no problems", style="green", markup=False)
    if failed:
        raise SystemExit(EXIT_FAILURE)


# -- diff ---------------------------------------------------------------------------


def _leaf_changes(left: Any, right: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """The paths where two JSON values differ: ``("observation.latency_ms", 120, 130)``."""
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(left.keys() | right.keys()):
            sub = f"{path}.{key}" if path else str(key)
            if key not in left:
                yield sub, _MISSING, right[key]
            elif key not in right:
                yield sub, left[key], _MISSING
            elif left[key] != right[key]:
                yield from _leaf_changes(left[key], right[key], sub)
    elif left != right:
        yield path or "(value)", left, right


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


_MISSING: Final = _Missing()


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(absent)"
    return orjson.dumps(value).decode()


def describe_difference(diff: Difference, a: str, b: str) -> list[str]:
    """One difference as lines a person reads, naming the runs ``a`` and ``b``."""
    where, left, right = diff.where, diff.left, diff.right
    if isinstance(left, bool) and isinstance(right, bool):  # a stream only one run has
        return [f"{where}: only in {a if left else b}"]
    if where.startswith("artifacts/"):
        if left is None or right is None:
            return [f"{where}: only in {a if right is None else b}"]
        return [f"{where}: content differs (sha256 {left[:12]}… != {right[:12]}…)"]
    if left is None or right is None:
        return [f"{where}: only in {a if right is None else b}: {_show(left or right)}"]
    changes = list(_leaf_changes(left, right))
    return [f"{where}: {path}: {_show(x)} != {_show(y)}" for path, x, y in changes]


@contextmanager
def _second_store(cli_ctx: CliContext, url: str | None) -> Iterator[AsyncStore]:
    """The store RUN_B lives in, opened on the first store's event loop (one loop for both)."""
    if url is None:
        yield cli_ctx.store.aio
        return
    require_store(url)

    async def opened() -> AsyncStore:
        return open_async(url)

    other = call_async(cli_ctx, opened())
    try:
        yield other
    finally:
        call_async(cli_ctx, other.aclose())


@click.command()
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@click.option(
    "--store-b",
    metavar="URL",
    help="Store holding RUN_B (default: the same store as RUN_A).",
)
@click.option(
    "--exact",
    is_flag=True,
    help="Compare line by line instead: manifests, summaries, every record in its place and "
    "every artifact by sha256; exit 1 on any difference.",
)
@click.option("--steps", is_flag=True, help="Also compare each instance's steps, field by field.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="With --exact: stop after this many differences.",
)
@json_option
@pass_cli
def diff(
    cli_ctx: CliContext,
    *,
    run_a: str,
    run_b: str,
    store_b: str | None,
    exact: bool,
    steps: bool,
    limit: int,
) -> None:
    """Compare RUN_B with RUN_A instance by instance; exit 1 on a regression.

    Pairs the instances of the two runs by instance id, in whatever order
    they were written, and lists regressions (passed in RUN_A, failed or
    error in RUN_B) first, then fixes, other changes (outcome or assertion
    results; steps too with --steps), new and missing instances, and whether
    each stream holds the same records in any order (times, run ids and
    durations aside). The same as 'runstore compare'. Exit status 1 when
    there is a regression: usable as a CI gate.

    With --exact, the line-by-line comparison: manifests, final status and
    summaries, every record of every stream in its place and every artifact
    by sha256, ignoring run ids, timestamps, durations and revisions; exit
    status 1 on any difference.

    \b
    Examples:
      runstore diff run_20240115_001 run_20240115_002
      runstore diff latest~1 latest --steps
      runstore diff nightly_a nightly_b --json | jq '.regressions[].instance_id'
      runstore --store ./runs diff run_a run_b --store-b s3://bucket/runs
      runstore diff run_a run_b --exact --json | jq '.differences[].where'
    """
    if exact and steps:
        raise click.UsageError("--steps compares instances; --exact compares lines: pick one")
    with _second_store(cli_ctx, store_b) as other:
        left = cli_ctx.get_run(run_a)
        run_a = left.run_id
        run_b = call_async(cli_ctx, resolve_run(other, run_b))
        right = call_async(cli_ctx, other.get_run(run_b))
        if exact:
            differences = call_async(cli_ctx, diff_runs(left.aio, right, limit=limit))
        else:
            result = compare_runs(left, RunView(right, cli_ctx.store.portal), steps=steps)
    sides = {
        "run_a": {"store": cli_ctx.store_url, "run_id": run_a},
        "run_b": {"store": store_b or cli_ctx.store_url, "run_id": run_b},
    }
    if exact:
        _report_exact(cli_ctx, sides, differences, limit)
        return
    if cli_ctx.json:
        emit_json({"mode": "instances", **result.to_dict(), **sides})
    else:
        for line in comparison_lines(result):
            cli_ctx.out.print(Text(line))
        if result.identical:
            cli_ctx.out.print(
                f"{run_a} and {run_b} are identical instance by instance "
                "(in any order; run ids, times and durations aside)",
                style="green",
                markup=False,
            )
    if result.regressions:
        raise SystemExit(EXIT_FAILURE)


def _report_exact(
    cli_ctx: CliContext,
    sides: dict[str, dict[str, str]],
    differences: Sequence[Difference],
    limit: int,
) -> None:
    """The line-by-line comparison (``diff --exact``); exit 1 on any difference."""
    run_a, run_b = sides["run_a"]["run_id"], sides["run_b"]["run_id"]
    truncated = len(differences) >= limit
    if cli_ctx.json:
        emit_json(
            {
                "mode": "exact",
                "identical": not differences,
                **sides,
                "differences": [
                    {"where": d.where, "run_a": d.left, "run_b": d.right} for d in differences
                ],
                "truncated": truncated,
            }
        )
    elif not differences:
        cli_ctx.out.print(
            f"{run_a} and {run_b} are identical (ignoring run ids and timestamps)",
            style="green",
            markup=False,
        )
    else:
        for difference in differences:
            for line in describe_difference(difference, "RUN_A", "RUN_B"):
                cli_ctx.out.print(Text(line))
        more = f"; stopped after {limit} (--limit)" if truncated else ""
        cli_ctx.out.print(
            f"{run_a} and {run_b} differ: {len(differences)} differences{more}",
            style="bold red",
            markup=False,
        )
    if differences:
        raise SystemExit(EXIT_FAILURE)


# -- recover ------------------------------------------------------------------------


def _recovery_table(results: Sequence[Recovery]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("run id", style="cyan", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("torn bytes repaired", justify="right")
    table.add_column("why")
    styles = {"marked_crashed": "bold red", "alive": "green", "skipped": "dim"}
    for r in results:
        torn = ", ".join(f"{s}: {n}" for s, n in sorted(r.torn_bytes.items())) or "-"
        table.add_row(
            Text(r.run_id), Text(r.action, style=styles[r.action]), Text(torn), Text(r.reason)
        )
    return table


@click.command()
@click.argument("run_ids", metavar="[RUN]...", nargs=-1)
@click.option(
    "--stale-after",
    type=AgeParam(),
    default=f"{DEFAULT_STALE_AFTER // timedelta(minutes=1)}m",
    show_default=True,
    help="A live run whose last heartbeat is older than AGE is taken for dead.",
)
@click.option("--dry-run", is_flag=True, help="Report what would be recovered; change nothing.")
@json_option
@pass_cli
def recover(
    cli_ctx: CliContext, run_ids: tuple[str, ...], stale_after: timedelta, dry_run: bool
) -> None:
    """Mark runs whose writer died as crashed, repairing their torn stream tails.

    A live run (created or running) whose heartbeat is older than
    --stale-after had its writer killed: its torn last lines are cut off,
    its summary is rebuilt from what is stored and it is marked crashed.
    Runs with a fresh heartbeat are left alone, and so is a run whose writer
    beats less often than half of --stale-after (it may be alive). A writer
    that comes back before its run is marked wins; one that comes back after
    gets a conflict on its next write, never a silent success. Running it
    twice changes nothing the second time. With no RUN, looks at every live run.

    \b
    Examples:
      runstore recover --dry-run
      runstore recover --stale-after 30m
      runstore recover run_20240115_001 --json
    """
    damaged = DamageReport(cli_ctx)
    results = call_async(
        cli_ctx,
        recover_runs(
            cli_ctx.store.aio,
            stale_after=stale_after,
            run_ids=[cli_ctx.resolve(ref) for ref in run_ids] or None,
            dry_run=dry_run,
            on_damage=damaged,
        ),
    )
    if cli_ctx.json:
        emit_json(
            {
                "dry_run": dry_run,
                "runs": [
                    {
                        "run_id": r.run_id,
                        "action": r.action,
                        "torn_bytes": r.torn_bytes,
                        "reason": r.reason,
                    }
                    for r in results
                ],
                "damaged": damaged.to_json(),
            }
        )
        damaged.finish()
        return
    if not results:
        cli_ctx.out.print("no live runs: nothing to recover", markup=False)
        damaged.finish()
        return
    cli_ctx.out.print(_recovery_table(results))
    crashed = sum(r.action == "marked_crashed" for r in results)
    verb = "would mark" if dry_run else "marked"
    cli_ctx.out.print(f"{verb} {crashed} runs crashed", style="bold", markup=False)
    damaged.finish()
