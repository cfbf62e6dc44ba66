"""``runstore flaky``, ``runstore slowest`` and ``runstore broken``: one suite's history.

Thin layers over :mod:`runstore.analysis.history` (pure Python, no extra):
the last finished runs of one suite (``sut_name``), their instances paired by
``instance_id``. They follow the conventions of :mod:`runstore.cli.app`: a
malformed ``--where`` is an error (exit 1, one line, or ``{"error": ...}``
with ``--json``). ``flaky`` and ``slowest`` exit 0 whatever they find;
``broken`` exits 1 when an instance broke since the last green run, so it
can gate a CI job as ``runstore compare`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from runstore.analysis.history import (
    broken_since_green,
    flaky_instances,
    recent_runs,
    slower_instances,
)
from runstore.cli.app import CliContext, emit_json, json_option, pass_cli
from runstore.model.run import RunRecord

__all__ = ["broken", "flaky", "slowest"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _count(name: str, default: int, help: str) -> Callable[[F], F]:
    return click.option(
        name, type=click.IntRange(min=1), default=default, show_default=True, metavar="N", help=help
    )


_WHERE = click.option(
    "--where", metavar="FILTER", help="Only runs matching FILTER (as in 'runstore ls --where')."
)
_SUT = click.option(
    "--sut",
    "sut_name",
    metavar="NAME",
    help="The suite (sut_name) to read (default: the newest finished run's).",
)


def _suite_options(func: F) -> F:
    """``--last N``, ``--where FILTER`` and ``--sut NAME``."""
    return _count("--last", 10, "Read the last N finished runs of the suite.")(_WHERE(_SUT(func)))


def _runs(
    cli_ctx: CliContext, sut_name: str | None, where: str | None, last: int
) -> list[RunRecord]:
    runs = recent_runs(cli_ctx.store, sut_name=sut_name, where=where, last=last)
    if runs and not cli_ctx.json:
        span = runs[0].run_id if len(runs) == 1 else f"{runs[0].run_id} .. {runs[-1].run_id}"
        cli_ctx.err.print(
            f"{runs[0].sut_name}: {len(runs)} finished runs read ({span})", style="dim"
        )
    return runs


_SUITE_JSON = 'Print {"sut_name", "runs": [...], "instances": [...]} instead of a table.'


def _report(
    cli_ctx: CliContext,
    runs: Sequence[RunRecord],
    rows: Sequence[T],
    *,
    none: str,
    header: str,
    line: Callable[[T], str],
) -> None:
    """The rows as one JSON document, or a table (``none`` when there is no row)."""
    if cli_ctx.json:
        emit_json(
            {
                "sut_name": runs[0].sut_name if runs else None,
                "runs": [run.run_id for run in runs],
                "instances": list(rows),
            }
        )
    elif not rows:
        click.echo(none if runs else "no finished runs")
    else:
        click.echo(header)
        for row in rows:
            click.echo(line(row))


@click.command("flaky")
@_suite_options
@_count("--min-flips", 1, "Only instances whose verdict changed at least N times.")
@json_option(help=_SUITE_JSON)
@pass_cli
def flaky(
    cli_ctx: CliContext, *, last: int, where: str | None, sut_name: str | None, min_flips: int
) -> None:
    """Instances whose outcome flipped between pass and fail across the last runs of a suite.

    An instance passes (passed) or fails (failed, error) in each run; skipped
    is not judged. A flip is a change of verdict from one run to the next, so
    an instance fixed once flips once and --min-flips 2 keeps those that went
    back and forth. History letters, oldest run first: P passed, F failed,
    E error, s skipped, x xfailed, X xpassed, ? another outcome, . not in
    that run.

    \b
    Examples:
      runstore flaky
      runstore flaky --last 20 --where "metadata.git_branch = 'main'"
      runstore flaky --sut shop --min-flips 2 --json | jq '.instances[].instance_id'
    """
    runs = _runs(cli_ctx, sut_name, where, last)
    width = max(len(runs), len("history"))
    _report(
        cli_ctx,
        runs,
        flaky_instances(cli_ctx.store, runs=runs, min_flips=min_flips),
        none="no flaky instances",
        header=f"{'flips':>5} {'runs':>5} {'fails':>5}  {'history':<{width}}  instance",
        line=lambda row: (
            f"{row.flips:>5} {row.judged_runs:>5} {row.failures:>5}  "
            f"{row.history:<{width}}  {row.instance_id}"
        ),
    )


@click.command("slowest")
@_suite_options
@_count("--top", 20, "Show the N that grew most.")
@json_option(help=_SUITE_JSON)
@pass_cli
def slowest(
    cli_ctx: CliContext, *, last: int, where: str | None, sut_name: str | None, top: int
) -> None:
    """Instances whose duration in the newest run grew most over their earlier median.

    Durations are the instances' duration_ms; an instance counts when the
    newest run and at least one earlier run timed it.

    \b
    Examples:
      runstore slowest
      runstore slowest --top 10 --last 30 --sut shop
      runstore slowest --where "tags CONTAINS 'nightly'" --json
    """
    runs = _runs(cli_ctx, sut_name, where, last)
    _report(
        cli_ctx,
        runs,
        slower_instances(cli_ctx.store, runs=runs, top=top),
        none="no instance got slower",
        header=f"{'growth ms':>10} {'latest ms':>10} {'median ms':>10}  instance",
        line=lambda row: (
            f"{row.growth_ms:>10.1f} {row.latest_ms:>10.1f} {row.baseline_ms:>10.1f}  "
            f"{row.instance_id}"
        ),
    )


@click.command("broken")
@_WHERE
@_SUT
@json_option(help='Print {"newest", "green", "instances": [...]} instead of lines.')
@pass_cli
def broken(cli_ctx: CliContext, *, where: str | None, sut_name: str | None) -> None:
    """What broke since the last green run: instances failing in the newest run that did not then.

    The newest finished run of the suite is compared with the last succeeded
    run before it: instances that fail now (failed, error) and passed, were
    skipped or did not exist then, each with the last line of its failure
    text. Exit status 1 when something broke: usable as a CI gate.

    \b
    Examples:
      runstore broken
      runstore broken --sut shop --where "metadata.git_branch = 'main'"
      runstore broken --json | jq '.instances[].instance_id'
    """
    found = broken_since_green(cli_ctx.store, sut_name=sut_name, where=where)
    if cli_ctx.json:
        emit_json(
            {
                "newest": found.newest.run_id if found.newest else None,
                "green": found.green.run_id if found.green else None,
                "instances": found.instances,
            }
        )
    elif found.newest is None:
        click.echo("no finished runs")
    else:
        since = found.green.run_id if found.green else "no green run"
        click.echo(f"{found.newest.run_id} against {since}: {len(found.instances)} broke")
        for item in found.instances:
            click.echo(f"  {item.outcome:<7} (was {item.before or 'absent'})  {item.instance_id}")
            if item.message:
                click.echo(f"          {item.message}")
    if found.instances:
        raise click.exceptions.Exit(1)
