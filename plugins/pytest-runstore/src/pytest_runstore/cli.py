"""``pytest-runstore flaky`` and ``pytest-runstore slowest``: history from the command line.

Exit status 0 with results (or none), 1 when runstore refuses the request (a
malformed ``--where``, a store that cannot be opened): the error is printed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

import runstore
from pytest_runstore.history import broken_since_green, flaky_tests, slower_tests

__all__ = ["cli", "main"]

_T = TypeVar("_T")


def _common(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--store",
            "url",
            envvar="RUNSTORE_URL",
            default=None,
            help="Store to read (default: $RUNSTORE_URL or ./runs).",
        ),
        click.option("--last", default=10, show_default=True, help="How many recent runs."),
        click.option("--where", default=None, help="Narrow the runs (runstore filter language)."),
        click.option("--sut", default=None, help="Suite (sut_name); default: the newest run's."),
        click.option("--json", "as_json", is_flag=True, help="Print JSON lines."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _emit(rows: Sequence[Any], as_json: bool, header: str, line: Callable[[Any], str]) -> None:
    if as_json:
        for row in rows:
            click.echo(json.dumps(dataclasses.asdict(row)))
        return
    if not rows:
        click.echo("no tests found")
        return
    click.echo(header)
    for row in rows:
        click.echo(line(row))


@click.group()
def cli() -> None:
    """History of pytest sessions recorded with pytest --runstore."""


@cli.command()
@_common
@click.option("--min-flips", default=1, show_default=True, help="Fewest verdict changes shown.")
def flaky(
    *, url: str | None, last: int, where: str | None, sut: str | None, as_json: bool, min_flips: int
) -> None:
    """Tests whose outcome flipped between passing and failing across the last runs.

    \b
    Example:
      pytest-runstore flaky --store ./runs --last 20 --where "metadata.git_branch = 'main'"
    History letters, oldest run first: P passed, F failed, E error, s skipped,
    x xfailed, X xpassed, . not run.
    """
    with _store(url) as store:
        rows = _refused(
            lambda: flaky_tests(store, sut_name=sut, where=where, last=last, min_flips=min_flips)
        )
    _emit(
        rows,
        as_json,
        f"{'flips':>5} {'runs':>5} {'fails':>5}  {'history':<{max(last, 7)}}  test",
        lambda r: (
            f"{r.flips:>5} {r.judged_runs:>5} {r.failures:>5}  "
            f"{r.history:<{max(last, 7)}}  {r.nodeid}"
        ),
    )


@cli.command()
@_common
@click.option("--top", default=20, show_default=True, help="How many tests.")
def slowest(
    *, url: str | None, last: int, where: str | None, sut: str | None, as_json: bool, top: int
) -> None:
    """Tests whose duration in the newest run grew most over their earlier median."""
    with _store(url) as store:
        rows = _refused(lambda: slower_tests(store, sut_name=sut, where=where, last=last, top=top))
    _emit(
        rows,
        as_json,
        f"{'growth ms':>10} {'latest ms':>10} {'median ms':>10}  test",
        lambda r: f"{r.growth_ms:>10.1f} {r.latest_ms:>10.1f} {r.baseline_ms:>10.1f}  {r.nodeid}",
    )


@cli.command()
@click.option("--store", "url", envvar="RUNSTORE_URL", default=None, help="Store to read.")
@click.option("--where", default=None, help="Narrow the runs (runstore filter language).")
@click.option("--sut", default=None, help="Suite (sut_name); default: the newest run's.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def broken(*, url: str | None, where: str | None, sut: str | None, as_json: bool) -> None:
    """What broke since the last green run: tests failing now that passed then.

    Exit status 0 even when tests broke (use --json and count them in a script).
    """
    with _store(url) as store:
        found = _refused(lambda: broken_since_green(store, sut_name=sut, where=where))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "newest": found.newest.run_id if found.newest else None,
                    "green": found.green.run_id if found.green else None,
                    "tests": [dataclasses.asdict(t) for t in found.tests],
                }
            )
        )
        return
    if found.newest is None:
        click.echo("no recorded runs")
        return
    since = found.green.run_id if found.green else "no green run"
    click.echo(f"{found.newest.run_id} against {since}: {len(found.tests)} broke")
    for test in found.tests:
        click.echo(f"  {test.outcome:<7} (was {test.before or 'absent'})  {test.nodeid}")
        if test.message:
            click.echo(f"          {test.message}")


def _store(url: str | None) -> runstore.Store:
    return _refused(lambda: runstore.open(url))


def _refused(call: Callable[[], _T]) -> _T:
    try:
        return call()
    except runstore.RunstoreError as exc:
        raise click.ClickException(str(exc)) from exc


def main() -> None:
    cli()
