"""``runstore meta`` and ``runstore tag``: change a run's labels, also after it finished.

Both are thin layers over :meth:`runstore.Store.set_metadata` and
:meth:`runstore.Store.set_tags`; they are registered through
:data:`runstore.cli.app.LAZY_COMMANDS` and follow the conventions described
in :mod:`runstore.cli.app` (exit status, ``--json``, examples in ``--help``).
The library checks keys, values and tags: what it refuses is an error (exit
1) and nothing is written; a word that is not ``KEY=VALUE`` (or a bare ``+``
or ``-``) is a usage error (exit 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import click
import orjson

from runstore.cli.app import CliContext, emit_json, json_option, pass_cli
from runstore.cli.render import fmt_label_value
from runstore.model.run import RunRecord

__all__ = ["meta", "parse_value", "tag"]

_SIGNS: Final = ("+", "-")


def parse_value(text: str) -> Any:
    """A metadata value typed on the command line: JSON when it parses, else the text itself.

    ``3`` is a number, ``true`` a boolean, ``["ja","fr"]`` a list, ``hello``
    (and the empty string) a string; ``'"3"'`` keeps ``3`` a string.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


if TYPE_CHECKING:  # click >= 8.4 makes ParamType generic; older versions are not subscriptable
    _Param = click.ParamType[tuple[str, Any]]
else:
    _Param = click.ParamType


class _WordParam(_Param):
    """One word of the command line read into a pair by :meth:`read`."""

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, Any]:
        return value if isinstance(value, tuple) else self.read(str(value), param, ctx)

    def read(
        self, word: str, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, Any]:
        raise NotImplementedError


class PairParam(_WordParam):
    """``KEY=VALUE``: the key, and the value read by :func:`parse_value`."""

    name = "KEY=VALUE"

    def read(
        self, word: str, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, Any]:
        key, equals, text = word.partition("=")
        if not equals:
            self.fail(f"{word!r} is not KEY=VALUE (e.g. owner=qa, n=3)", param, ctx)
        if not key:
            self.fail(f"{word!r} has no key before '='", param, ctx)
        return key, parse_value(text)


class ChangeParam(_WordParam):
    """``+TAG`` or ``TAG`` adds the tag, ``-TAG`` removes it: ``(sign, tag)``."""

    name = "TAG"

    def read(
        self, word: str, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, Any]:
        sign, name = (word[0], word[1:]) if word[:1] in _SIGNS else ("+", word)
        if not name:
            self.fail(f"{word!r} names no tag: write +TAG or -TAG", param, ctx)
        return sign, name


class TagCommand(click.Command):
    """A command whose words after ``RUN`` that start with one ``-`` are tags, never options.

    click would read ``-nightly`` as the short options ``-n -i -g -h ...`` and
    print the help at the ``h``; here only ``--long`` options and the help
    options are options (an unknown ``--long`` one is still a usage error),
    and everything after ``--`` is a word.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        options: list[str] = []
        words: list[str] = []
        takes_value = {
            opt
            for param in self.params
            if isinstance(param, click.Option) and not param.is_flag
            for opt in param.opts
            if opt.startswith("--")
        }
        rest = iter(args)
        for arg in rest:
            if arg == "--":
                words.extend(rest)
            elif arg.startswith("--") or arg in ctx.help_option_names:
                options.append(arg)
                if arg in takes_value:  # --store URL: the URL is the option's, not a tag
                    value = next(rest, None)
                    if value is not None:
                        options.append(value)
            else:
                words.append(arg)
        return super().parse_args(ctx, [*options, "--", *words])


def _record(cli_ctx: CliContext, run_id: str) -> RunRecord:
    """The run's index record as it stands (what ``ls --json`` lists for it)."""
    view = cli_ctx.store.get_run(run_id)
    return RunRecord.build(view.manifest, view.state, view.summary)


def _report(cli_ctx: CliContext, record: RunRecord, lines: Sequence[str], empty: str) -> None:
    """The record with ``--json``; else the lines on stdout, or ``empty`` on stderr if none."""
    if cli_ctx.json:
        emit_json(record.model_dump(mode="json"))
        return
    for line in lines:
        click.echo(line)
    if not lines:
        cli_ctx.err.print(empty, style="dim", markup=False)


@click.command()
@click.argument("run_id", metavar="RUN")
@click.argument("pairs", nargs=-1, type=PairParam(), metavar="[KEY=VALUE]...")
@json_option(help="Print the run's index record (as ls --json lists it) as JSON.")
@pass_cli
def meta(cli_ctx: CliContext, run_id: str, pairs: tuple[tuple[str, Any], ...]) -> None:
    """Set a run's metadata, also after it finished; without KEY=VALUE, print it.

    Keys are merged into the run's metadata: a key not named keeps its
    value. A value is read as JSON when it parses (n=3 is a number, ok=true a
    boolean, langs='["ja","fr"]' a list, x=null null) and is a string
    otherwise (note=hello, and empty with note=); quote a string that looks
    like JSON: version='"1.10"'. Values are JSON scalars or lists of them.
    Prints the metadata as KEY=VALUE lines in the same syntax; --json prints
    the run's index record.

    \b
    Examples:
      runstore meta run_20240115_001
      runstore meta run_20240115_001 owner=qa build=1234 flaky=false
      runstore meta run_20240115_001 'langs=["ja","fr"]' note='rerun after fix'
      runstore meta run_20240115_001 reviewed=true --json | jq .metadata
    """
    run_id = cli_ctx.resolve(run_id)
    record = cli_ctx.store.set_metadata(run_id, dict(pairs)) if pairs else _record(cli_ctx, run_id)
    lines = [f"{key}={fmt_label_value(value)}" for key, value in record.metadata.items()]
    _report(cli_ctx, record, lines, f"run {run_id} has no metadata")


@click.command(cls=TagCommand)
@click.argument("run_id", metavar="RUN")
@click.argument("changes", nargs=-1, type=ChangeParam(), metavar="[+TAG | -TAG | TAG]...")
@json_option(help="Print the run's index record (as ls --json lists it) as JSON.")
@pass_cli
def tag(cli_ctx: CliContext, run_id: str, changes: tuple[tuple[str, str], ...]) -> None:
    """Add and remove a run's tags, also after it finished; without changes, print them.

    +TAG or a plain TAG adds the tag, -TAG removes it (a tag both added and
    removed is removed). -TAG is never read as an option, so after RUN the
    global options take their long forms (--store, --verbose: -s and -v
    remove the tags s and v); after --, not even --TAG is (it removes the
    tag -TAG). Prints the tags afterwards, one a line; --json prints the
    run's index record.

    \b
    Examples:
      runstore tag run_20240115_001
      runstore tag run_20240115_001 +reviewed -flaky
      runstore tag run_20240115_001 nightly release-2.3
      runstore ls --tag flaky --json | jq -r '.[].run_id' | xargs -I{} runstore tag {} -flaky
    """
    run_id = cli_ctx.resolve(run_id)
    if changes:
        add = [name for sign, name in changes if sign == "+"]
        remove = [name for sign, name in changes if sign == "-"]
        record = cli_ctx.store.set_tags(run_id, add=add, remove=remove)
    else:
        record = _record(cli_ctx, run_id)
    _report(cli_ctx, record, record.tags, f"run {run_id} has no tags")
