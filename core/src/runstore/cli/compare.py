"""``runstore compare RUN_A RUN_B``: two runs instance by instance, as a CI gate.

A thin layer over :func:`runstore.analysis.compare.compare_runs` (pure
Python, no extra): regressions first, then fixes, changed, new and missing
instances, each with the assertions whose result changed. Exit status 1 when
run B has a regression (an instance that passed in A and failed or errored in
B), else 0. It follows the conventions of :mod:`runstore.cli.app`.
"""

from __future__ import annotations

import click
import orjson

from runstore.analysis.compare import Comparison, InstanceChange, compare_runs
from runstore.cli.app import CliContext, json_option, pass_cli
from runstore.cli.hints import require_store
from runstore.cli.refs import resolve_run
from runstore.store import open as open_store

__all__ = ["compare", "comparison_lines"]

_SECTIONS = ("regressions", "fixes", "changed", "new", "missing")


def comparison_lines(result: Comparison) -> list[str]:
    """The comparison as lines a person reads."""
    counts = {name: len(getattr(result, name)) for name in _SECTIONS}
    head = ", ".join(f"{count} {name}" for name, count in counts.items())
    lines = [f"{result.run_a} -> {result.run_b}: {head}, {result.unchanged} unchanged"]
    for name in _SECTIONS:
        changes: list[InstanceChange] = getattr(result, name)
        if changes:
            lines.append(f"{name}:")
        for change in changes:
            lines.append(f"  {change}")
            lines += [f"    {detail}" for detail in [*change.assertions, *change.steps]]
    differing = [stream for stream, same in result.streams.items() if not same]
    if differing:
        lines.append(f"streams that differ (in any order): {', '.join(differing)}")
    else:
        lines.append("every stream holds the same records (in any order, times aside)")
    return lines


@click.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option(
    "--store-b", metavar="URL", help="Read RUN_B from this store (default: the same store)."
)
@click.option("--steps", is_flag=True, help="Also compare each instance's steps, field by field.")
@json_option
@pass_cli
def compare(
    cli_ctx: CliContext, *, run_a: str, run_b: str, store_b: str | None, steps: bool
) -> None:
    """Compare RUN_B with RUN_A instance by instance, in any order they were written.

    RUN_A and RUN_B are run ids, latest, latest~N, latest:STATUS or unique
    prefixes. Regressions (passed in RUN_A, failed or error in RUN_B) come first, then
    fixes, other changes (outcome or assertion results), new and missing
    instances; then whether each stream holds the same records in any order,
    ignoring times, run ids and durations. Exit status 1 when there is a
    regression: usable as a CI gate.

    \b
    Examples:
      runstore compare run_20240115_001 run_20240116_001
      runstore compare nightly_a nightly_b --steps --json | jq '.regressions'
      runstore --store ./runs compare run_a run_b --store-b s3://bucket/runs
    """
    left = cli_ctx.get_run(run_a)
    if store_b is None:
        result = compare_runs(left, cli_ctx.get_run(run_b), steps=steps)
    else:
        require_store(store_b)
        with open_store(store_b) as other:
            right = other.get_run(other.portal.call(resolve_run(other.aio, run_b)))
            result = compare_runs(left, right, steps=steps)
    if cli_ctx.json:
        click.echo(orjson.dumps(result.to_dict(), default=str, option=orjson.OPT_INDENT_2).decode())
    else:
        for line in comparison_lines(result):
            click.echo(line)
    if result.regressions:
        raise click.exceptions.Exit(1)
