"""What one ``runstore`` invocation shares: the store, the global options, output and errors.

* :class:`CliContext`: the lazily opened store (a read command never creates
  one), the ``--json`` and ``--verbose`` flags, the consoles, and run
  references (``latest``, a prefix) turned into run ids.
* :func:`global_options`: ``-s/--store``, ``--json`` and ``-v/--verbose``,
  which every command accepts before or after its name.
* :func:`report_error`: a :class:`~runstore.model.errors.RunstoreError` as one
  line on stderr, or ``{"error": ...}`` on stdout with ``--json``.

Commands receive the context through :data:`pass_cli`.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final, TypeVar, overload

import click
import orjson
from rich.console import Console

from runstore.cli.hints import explain, require_store
from runstore.cli.refs import resolve_run
from runstore.model.errors import RunstoreError
from runstore.registry.config import DEFAULT_STORE, STORE_ENV
from runstore.store import RunView, Store
from runstore.store import open as open_store

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliContext",
    "binary_stdout",
    "emit_json",
    "emit_json_line",
    "global_options",
    "json_option",
    "pass_cli",
    "report_error",
]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130


@dataclass
class CliContext:
    """What one ``runstore`` invocation shares between the group and its command."""

    store_url: str = DEFAULT_STORE
    store_from_command_line: bool = False
    json: bool = False
    verbose: bool = False
    creates_store: bool = False
    """Set by the commands that write a new store (``demo``); every other one needs it to exist."""
    interrupted: bool = False
    """Ctrl-C was reported (the one line is printed once)."""
    # soft_wrap: plain lines (paths, commands to paste) are never broken; tables still fit.
    out: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    err: Console = field(
        default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True)
    )
    _store: Store | None = None

    @property
    def store(self) -> Store:
        """The store, opened on first use (so ``--help`` and ``backends`` never touch it).

        Unless :attr:`creates_store` is set, a local store must already exist:
        a mistyped path is ``not_found`` (with the near paths), never a new
        empty store.
        """
        if self._store is None:
            require_store(self.store_url, may_create=self.creates_store)
            self._store = open_store(self.store_url)
        return self._store

    def resolve(self, ref: str) -> str:
        """The run id ``ref`` names: an id, ``latest``, ``latest~N``, ``latest:STATUS``, prefix."""
        return self.store.portal.call(resolve_run(self.store.aio, ref))

    def get_run(self, ref: str) -> RunView:
        """The run a reference names (see :meth:`resolve`)."""
        return self.store.get_run(self.resolve(ref))

    def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            store.close()

    def command_hint(self, *args: str) -> str:
        """A ``runstore ...`` command line the user can paste, with ``--store`` if they gave one."""
        words = ["runstore"]
        if self.store_from_command_line:
            words += ["--store", self.store_url]
        return shlex.join([*words, *args])


pass_cli = click.make_pass_decorator(CliContext, ensure=True)


# -- global options ------------------------------------------------------------------

STORE_HELP: Final = (
    "Store to use: a path, file:///abs/path, s3://bucket/prefix, memory://name "
    f"(default: ${STORE_ENV}, else {DEFAULT_STORE})."
)
_JSON_HELP: Final = "Print machine-readable JSON instead of tables."
_VERBOSE_HELP: Final = "On an error, also print its code, details and cause."


def _set_store(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    cli_ctx = ctx.ensure_object(CliContext)
    from_command_line = ctx.get_parameter_source(param.name or "") is (
        click.core.ParameterSource.COMMANDLINE
    )
    if from_command_line and cli_ctx.store_from_command_line and value != cli_ctx.store_url:
        raise click.BadParameter(
            f"{value!r} differs from the --store {cli_ctx.store_url!r} given before the command; "
            "give it once",
            ctx=ctx,
            param=param,
        )
    if from_command_line or not cli_ctx.store_from_command_line:
        cli_ctx.store_url = value
        cli_ctx.store_from_command_line = from_command_line


def _set_flag(name: str) -> Callable[[click.Context, click.Parameter, bool], None]:
    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            setattr(ctx.ensure_object(CliContext), name, True)

    return remember


def store_option(*, group: bool) -> click.Option:
    """``-s/--store URL``: on the group with ``$RUNSTORE_URL`` and a default, else neither."""
    return click.Option(
        ["-s", "--store", "store_url"],
        metavar="URL",
        envvar=STORE_ENV if group else None,
        default=DEFAULT_STORE if group else None,
        show_default=False,
        expose_value=False,
        is_eager=True,  # before the arguments are resolved against it
        callback=_set_store,
        help=STORE_HELP,
    )


def json_flag(help: str = _JSON_HELP) -> click.Option:
    return click.Option(
        ["--json"], is_flag=True, expose_value=False, callback=_set_flag("json"), help=help
    )


def verbose_flag() -> click.Option:
    return click.Option(
        ["-v", "--verbose"],
        is_flag=True,
        expose_value=False,
        callback=_set_flag("verbose"),
        help=_VERBOSE_HELP,
    )


GLOBAL_OPTION_NAMES: Final = ("--store", "--json", "--verbose")
"""The options every command accepts, before or after its name, with one meaning."""


def global_options(command: click.Command) -> click.Command:
    """Give ``command`` the global options it does not declare itself (idempotent).

    A command's own ``--json`` (one with its own help text, from
    :func:`json_option`) is kept: it sets the same flag.
    """
    have = {opt for param in command.params for opt in param.opts}
    if "--store" not in have:
        command.params.append(store_option(group=False))
    if "--json" not in have:
        command.params.append(json_flag())
    if "--verbose" not in have:
        command.params.append(verbose_flag())
    return command


@overload
def json_option(f: F, *, help: str = _JSON_HELP) -> F: ...
@overload
def json_option(f: None = None, *, help: str = _JSON_HELP) -> Callable[[F], F]: ...
def json_option(f: F | None = None, *, help: str = _JSON_HELP) -> Any:
    """``--json`` with a help text saying what this command prints.

    Use as ``@json_option`` or ``@json_option(help="...")``. Every command has
    ``--json`` anyway (:func:`global_options`); this only words its help.
    """

    def decorate(func: F) -> F:
        return click.option(
            "--json", is_flag=True, expose_value=False, callback=_set_flag("json"), help=help
        )(func)

    return decorate if f is None else decorate(f)


# -- output -------------------------------------------------------------------------


def binary_stdout() -> BinaryIO:
    """stdout for raw bytes (after flushing any text written so far)."""
    sys.stdout.flush()
    return sys.stdout.buffer


def emit_json(data: Any) -> None:
    """Print one JSON document on stdout."""
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def emit_json_line(data: Any) -> None:
    """Print one JSON Lines record on stdout."""
    click.echo(orjson.dumps(data).decode())


def report_error(cli_ctx: CliContext, exc: RunstoreError) -> None:
    """The error on stderr (one line; ``--verbose`` adds code, details, cause) or as JSON."""
    exc = explain(exc)
    if cli_ctx.json:  # one line, so it also fits a JSON Lines stream (tail --json)
        emit_json_line({"error": exc.to_dict()})
        return
    click.echo(f"{click.style('error:', fg='red', bold=True)} {exc.message}", err=True)
    if cli_ctx.verbose:
        click.echo(f"  code: {exc.code}", err=True)
        if exc.details:
            click.echo(f"  details: {orjson.dumps(exc.details, default=repr).decode()}", err=True)
        cause = exc.__cause__
        while cause is not None:
            click.echo(f"  caused by: {type(cause).__name__}: {cause}", err=True)
            cause = cause.__cause__
