"""The ``runstore`` command line: look at runs from a terminal or a script.

Every command opens the store named by ``--store URL`` (or ``$RUNSTORE_URL``,
default ``./runs``) through the public API, so it works on any backend.

Conventions every command follows (and a new one should too):

* ``-s/--store``, ``--json`` and ``-v/--verbose`` work before or after the
  command's name, with one meaning (:func:`~runstore.cli.context.global_options`
  adds them to every command this group serves);
* wherever a command takes a run id it takes a run reference: ``latest``,
  ``latest~N``, ``latest:STATUS`` or a unique prefix
  (:meth:`CliContext.resolve`); a read command never creates a store;
* exit status 0 on success, 1 when runstore reports an error (or, for checking
  commands, finds a difference), 2 for a usage error (click's own), 130 when
  interrupted (Ctrl-C, one line on stderr);
* a :class:`~runstore.model.errors.RunstoreError` becomes one line on stderr, or
  ``{"error": {"code", "message", "details"}}`` on stdout with ``--json``;
  never a traceback;
* read commands print one JSON document with ``--json`` (``tail`` prints
  JSON Lines);
* ``--help`` shows at least one example.

A command is one function in a module of its own, listed in
:data:`LAZY_COMMANDS`, so ``runstore --help`` and the other commands never
import it. It takes :data:`pass_cli`, and :func:`json_option` to word its
``--json`` help, both from here (or :mod:`runstore.cli.context`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Final, NoReturn

import click

from runstore import __version__
from runstore.cli.context import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliContext,
    binary_stdout,
    emit_json,
    emit_json_line,
    global_options,
    json_flag,
    json_option,
    pass_cli,
    report_error,
    store_option,
    verbose_flag,
)
from runstore.model.errors import RunstoreError

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "LAZY_COMMANDS",
    "CliContext",
    "binary_stdout",
    "cli",
    "emit_json",
    "emit_json_line",
    "json_option",
    "main",
    "pass_cli",
]

INTERRUPTED_MESSAGE: Final = "runstore: interrupted"


LAZY_COMMANDS: dict[str, str] = {
    "ls": "runstore.cli.runs:ls",
    "show": "runstore.cli.runs:show",
    "tail": "runstore.cli.runs:tail",
    "cat": "runstore.cli.runs:cat",
    "demo": "runstore.cli.demo:demo",
    "backends": "runstore.cli.backends:backends",
    "cp": "runstore.cli.storage:cp",
    "diff": "runstore.cli.maintenance:diff",
    "gc": "runstore.cli.storage:gc",
    "recover": "runstore.cli.maintenance:recover",
    "reindex": "runstore.cli.reindex:reindex",
    "verify": "runstore.cli.maintenance:verify",
    "view": "runstore.cli.view:view",
    "replay": "runstore.cli.integrations:replay",
    "schema": "runstore.cli.integrations:schema",
    "meta": "runstore.cli.labels:meta",
    "compare": "runstore.cli.compare:compare",
    "query": "runstore.cli.query:query",
    "tag": "runstore.cli.labels:tag",
    "flaky": "runstore.cli.history:flaky",
    "slowest": "runstore.cli.history:slowest",
    "broken": "runstore.cli.history:broken",
}
"""Commands that live in their own module, imported only when run: ``name -> "module:attr"``.

A command with heavy dependencies (a web viewer, say) goes in its own module,
uses :data:`pass_cli` and :func:`json_option` from here, and is listed in
this mapping, so ``runstore --help`` and the other commands never import it.
"""


def interrupted(cli_ctx: CliContext | None) -> NoReturn:
    """Ctrl-C: one line on stderr (once per invocation) and exit status 130."""
    if cli_ctx is None or not cli_ctx.interrupted:
        click.echo(INTERRUPTED_MESSAGE, err=True)
    if cli_ctx is not None:
        cli_ctx.interrupted = True
    raise click.exceptions.Exit(EXIT_INTERRUPTED)


def _cli_context(ctx: click.Context | None) -> CliContext | None:
    return None if ctx is None else ctx.find_object(CliContext)


class RunstoreGroup(click.Group):
    """The ``runstore`` group.

    It serves the commands listed in :data:`LAZY_COMMANDS` (each given the
    global options), turns a runstore error into exit status 1 and one line,
    and Ctrl-C at any point of parsing, running or closing into 130.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_COMMANDS:
            module, _, attr = LAZY_COMMANDS[cmd_name].partition(":")
            loaded = getattr(importlib.import_module(module), attr)
            if not isinstance(loaded, click.Command):
                raise TypeError(f"{LAZY_COMMANDS[cmd_name]} is not a click command")
            command = loaded
        return None if command is None else global_options(command)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt:
            interrupted(None)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RunstoreError as exc:
            report_error(ctx.ensure_object(CliContext), exc)
            ctx.exit(EXIT_FAILURE)
        except KeyboardInterrupt:
            interrupted(_cli_context(ctx))
        except (click.exceptions.Exit, click.ClickException, click.Abort, BrokenPipeError):
            raise  # click's own: an exit, a usage error, the reader went away (ls | head)
        except Exception as exc:
            cli_ctx = ctx.ensure_object(CliContext)
            if cli_ctx.verbose:
                raise
            report_error(cli_ctx, _internal(exc))
            ctx.exit(EXIT_FAILURE)


def _internal(exc: Exception) -> RunstoreError:
    """A bug (an exception runstore did not type) as one line that says what to do."""
    error = RunstoreError(
        f"internal error ({type(exc).__name__}: {exc}); rerun with --verbose for the "
        "traceback, and please report it",
        details={"exception": repr(exc)},
    )
    error.__cause__ = exc
    return error


CONTEXT_SETTINGS: Final = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _close_on_exit(ctx: click.Context, cli_ctx: CliContext) -> None:
    def close() -> None:
        try:
            cli_ctx.close()
        except KeyboardInterrupt:
            interrupted(cli_ctx)

    ctx.call_on_close(close)


@click.group(cls=RunstoreGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="runstore")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Durable storage for test, simulation and pipeline runs.

    -s/--store, --json and -v/--verbose also work after the command's name.
    Wherever a command takes RUN it also takes latest, latest~N (the Nth
    before the newest), latest:STATUS (the newest with that status) or a
    unique prefix of a run id.

    \b
    Examples:
      runstore demo                       simulate a run into ./runs
      runstore ls --status failed         list failed runs
      runstore show latest                everything about the newest run
      runstore ls --store s3://bucket/runs

    \b
    Shell completion (bash; zsh_source and fish_source for the others):
      eval "$(_RUNSTORE_COMPLETE=bash_source runstore)"
    """
    _close_on_exit(ctx, ctx.ensure_object(CliContext))


# the global options, on the group itself (before the command's name)
cli.params[:0] = [store_option(group=True), json_flag(), verbose_flag()]


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``runstore``) and ``python -m runstore``."""
    cli.main(args=None if argv is None else list(argv), prog_name="runstore")
