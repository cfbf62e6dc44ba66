"""The ``runstore`` command line: look at runs from a terminal or a script.

Every command opens the store named by ``--store URL`` (or ``$RUNSTORE_URL``,
default ``./runs``) through the public API, so it works on any backend.

Conventions every command follows (and a new one should too):

* exit status 0 on success, 1 when runstore reports an error (or, for checking
  commands, finds a difference), 2 for a usage error (click's own);
* a :class:`~runstore.model.errors.RunstoreError` becomes one line on stderr, or
  ``{"error": {"code", "message", "details"}}`` on stdout with ``--json``;
  never a traceback;
* read commands take ``--json`` (:func:`json_option`) and print one JSON
  document (``tail`` prints JSON Lines);
* ``--help`` shows at least one example.

The module is laid out so that a command stays a few lines long:

1. :class:`CliContext`: per-invocation state (the lazily opened store, the
   ``--json`` flag, the consoles); commands receive it through :data:`pass_cli`.
2. Rendering helpers: the only place that formats models as tables, panels
   and JSON.
3. :class:`RunstoreGroup`: turns errors into exit codes.
4. The commands, one function each, registered on :func:`cli` (or listed in
   :data:`LAZY_COMMANDS` when they live in a module of their own).
"""

from __future__ import annotations

import importlib
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, BinaryIO, Final, TypeVar, get_args, overload

import click
import orjson
from click.core import ParameterSource
from rich.console import Console, Group
from rich.text import Text

from runstore import __version__
from runstore.cli.render import (
    artifacts_table,
    format_record,
    labels_panel,
    manifest_panel,
    runs_table,
    state_panel,
    status_text,
    streams_table,
    summary_panel,
)
from runstore.model.errors import CorruptError, NotFoundError, RunstoreError
from runstore.model.records import DamagedLine
from runstore.model.run import (
    TERMINAL_STATUSES,
    ArtifactRef,
    RunStatus,
)
from runstore.reading import tail as tail_records
from runstore.registry.config import DEFAULT_STORE, STORE_ENV
from runstore.store import RunView, Store
from runstore.store import open as open_store

__all__ = ["LAZY_COMMANDS", "CliContext", "cli", "json_option", "main", "pass_cli"]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

RUN_STATUSES: Final = get_args(RunStatus)


# -- 1. per-invocation context ------------------------------------------------------


@dataclass
class CliContext:
    """What one ``runstore`` invocation shares between the group and its command."""

    store_url: str = DEFAULT_STORE
    store_from_command_line: bool = False
    json: bool = False
    # soft_wrap: plain lines (paths, commands to paste) are never broken; tables still fit.
    out: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    err: Console = field(
        default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True)
    )
    _store: Store | None = None

    @property
    def store(self) -> Store:
        """The store, opened on first use (so ``--help`` and ``backends`` never touch it)."""
        if self._store is None:
            self._store = open_store(self.store_url)
        return self._store

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


_JSON_HELP: Final = "Print machine-readable JSON instead of tables."


@overload
def json_option(f: F, *, help: str = _JSON_HELP) -> F: ...
@overload
def json_option(f: None = None, *, help: str = _JSON_HELP) -> Callable[[F], F]: ...
def json_option(f: F | None = None, *, help: str = _JSON_HELP) -> Any:
    """Add ``--json``: machine-readable output, and errors as ``{"error": {...}}``.

    Use as ``@json_option`` or ``@json_option(help="...")``.
    """

    def remember(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.ensure_object(CliContext).json = True

    decorator = click.option(
        "--json", is_flag=True, expose_value=False, callback=remember, help=help
    )
    return decorator if f is None else decorator(f)


# -- 2. output helpers -------------------------------------------------------------


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


# -- 3. error handling --------------------------------------------------------------


def report_error(cli_ctx: CliContext, exc: RunstoreError) -> None:
    if cli_ctx.json:  # one line, so it also fits a JSON Lines stream (tail --json)
        emit_json_line({"error": exc.to_dict()})
    else:
        click.echo(f"{click.style('error:', fg='red', bold=True)} {exc.message}", err=True)


LAZY_COMMANDS: dict[str, str] = {
    "demo": "runstore.cli.demo:demo",
    "backends": "runstore.cli.backends:backends",
    "cp": "runstore.cli.storage:cp",
    "diff": "runstore.cli.maintenance:diff",
    "gc": "runstore.cli.storage:gc",
    "recover": "runstore.cli.maintenance:recover",
    "verify": "runstore.cli.maintenance:verify",
    "view": "runstore.cli.view:view",
    "replay": "runstore.cli.integrations:replay",
    "schema": "runstore.cli.integrations:schema",
    "meta": "runstore.cli.labels:meta",
    "query": "runstore.cli.query:query",
    "tag": "runstore.cli.labels:tag",
}
"""Commands that live in their own module, imported only when run: ``name -> "module:attr"``.

A command with heavy dependencies (a web viewer, say) goes in its own module,
uses :data:`pass_cli` and :func:`json_option` from here, and is listed in
this mapping, so ``runstore --help`` and the other commands never import it.
"""


class RunstoreGroup(click.Group):
    """The ``runstore`` group: errors become exit status 1 and a one-line message.

    It also serves the commands listed in :data:`LAZY_COMMANDS`.
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
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RunstoreError as exc:
            report_error(ctx.ensure_object(CliContext), exc)
            ctx.exit(EXIT_FAILURE)
        except KeyboardInterrupt:
            ctx.exit(EXIT_INTERRUPTED)


if TYPE_CHECKING:  # click >= 8.4 makes ParamType generic; older versions are not subscriptable
    _DateTimeParam = click.ParamType[datetime]
else:
    _DateTimeParam = click.ParamType


class TimeParam(_DateTimeParam):
    """An ISO 8601 date or time (UTC unless it says otherwise), or an age like ``7d``."""

    name = "TIME"
    _AGE = re.compile(r"(\d+)([smhdw])")
    _UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        age = self._AGE.fullmatch(text)
        if age:
            delta = timedelta(**{self._UNITS[age.group(2)]: int(age.group(1))})
            return datetime.now(UTC) - delta
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{text!r} is not a time: use 2024-01-15, 2024-01-15T10:30:00+01:00 "
                "or an age such as 30m, 12h, 7d, 2w",
                param,
                ctx,
            )
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- 4. commands --------------------------------------------------------------------

CONTEXT_SETTINGS: Final = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=RunstoreGroup, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--store",
    "store_url",
    envvar=STORE_ENV,
    default=DEFAULT_STORE,
    show_default=True,
    show_envvar=True,
    metavar="URL",
    help="Store to use: a path, file:///abs/path, s3://bucket/prefix, memory://name.",
)
@click.version_option(__version__, "-V", "--version", prog_name="runstore")
@click.pass_context
def cli(ctx: click.Context, store_url: str) -> None:
    """Durable storage for test, simulation and pipeline runs.

    \b
    Examples:
      runstore demo                       simulate a run into ./runs
      runstore ls --status failed         list failed runs
      runstore show run_20240115_001      everything about one run
      runstore --store s3://bucket/runs ls

    \b
    Shell completion (bash; zsh_source and fish_source for the others):
      eval "$(_RUNSTORE_COMPLETE=bash_source runstore)"
    """
    source = ctx.get_parameter_source("store_url")
    cli_ctx = ctx.ensure_object(CliContext)
    cli_ctx.store_url = store_url
    cli_ctx.store_from_command_line = source is ParameterSource.COMMANDLINE
    ctx.call_on_close(cli_ctx.close)


@cli.command("ls")
@click.option(
    "--status",
    multiple=True,
    type=click.Choice(RUN_STATUSES),
    help="Only runs with this status (repeatable: any of them).",
)
@click.option("--sut", "sut_name", metavar="NAME", help="Only runs of this system under test.")
@click.option("--tag", "tags", multiple=True, help="Only runs with this tag (repeatable: all).")
@click.option("--since", type=TimeParam(), help="Created at or after TIME (e.g. 2024-01-15, 7d).")
@click.option("--until", type=TimeParam(), help="Created before TIME.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="At most this many runs (0: no limit).",
)
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many runs.")
@click.option(
    "--where",
    metavar="FILTER",
    help="Only runs matching FILTER: comparisons (= != < <= > >= LIKE IN) of run_id, status, "
    "sut_name, created_at, tags, metadata.KEY, summary.FIELD, metrics.NAME, joined by AND/OR.",
)
@click.option(
    "--order-by",
    "order_by",
    multiple=True,
    metavar="KEY",
    help="Sort by KEY (repeatable): a field as in --where, '-KEY' or 'KEY DESC' for descending.",
)
@click.option("--page-token", metavar="TOKEN", help="The next page of the same listing.")
@json_option
@pass_cli
def ls(
    cli_ctx: CliContext,
    *,
    status: tuple[RunStatus, ...],
    sut_name: str | None,
    tags: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    limit: int,
    offset: int,
    where: str | None,
    order_by: tuple[str, ...],
    page_token: str | None,
) -> None:
    """List runs, newest first, or as --order-by says.

    Times are ISO 8601 (UTC unless an offset is given) or an age: 30m, 12h,
    7d, 2w. The tags and the metadata get a column when a listed run has
    some, cut short to fit the terminal. --json prints a JSON array of run
    index records.

    \b
    Examples:
      runstore ls
      runstore ls --status failed --status crashed --since 7d
      runstore ls --sut ecommerce --tag nightly --limit 20 --offset 20
      runstore ls --where "metadata.project = 'demo' AND summary.pass_rate < 0.9"
      runstore ls --where "tags CONTAINS 'nightly'" --order-by summary.pass_rate
      runstore ls --json | jq -r '.[].run_id'
    """
    records = cli_ctx.store.list_runs(
        status=status or None,
        sut_name=sut_name,
        tags=tags or None,
        created_after=since,
        created_before=until,
        limit=limit or None,
        offset=offset,
        where=where,
        order_by=list(order_by) or None,
        page_token=page_token,
    )
    if cli_ctx.json:
        emit_json([r.model_dump(mode="json") for r in records])
        return
    if not records:
        hint = "" if offset else f"; {cli_ctx.command_hint('demo')} creates one"
        cli_ctx.out.print(f"no runs match in {cli_ctx.store_url}{hint}", markup=False)
        return
    cli_ctx.out.print(runs_table(records, cli_ctx.out.width))
    if records.next_page_token is not None and (where or order_by or page_token):
        args = [
            *(["--where", where] if where else []),
            *(a for k in order_by for a in ("--order-by", k)),
        ]
        more = cli_ctx.command_hint(
            "ls", *args, "--limit", str(limit), "--page-token", records.next_page_token
        )
        cli_ctx.out.print(f"showing {limit}; the next page: {more}", style="dim", markup=False)
    elif limit and len(records) == limit:
        more = cli_ctx.command_hint("ls", "--offset", str(offset + limit))
        cli_ctx.out.print(f"showing {limit}; more may follow: {more}", style="dim", markup=False)


@dataclass
class RunDetails:
    """What ``show`` reports about a run; rendered as panels or as JSON."""

    view: RunView
    streams: dict[str, int]
    artifacts: list[ArtifactRef]

    @classmethod
    def collect(cls, view: RunView) -> RunDetails:
        refs = view.artifacts()
        finished = view.summary if view.state.status in TERMINAL_STATUSES else None
        counts: dict[str, int] = {}
        for stream in view.streams():
            if stream == "artifacts":
                counts[stream] = len(refs)
            elif finished is not None and stream in finished.stream_counts:
                counts[stream] = finished.stream_counts[stream]  # the writer's own count
            else:  # live or unfinished run: count what is there now
                counts[stream] = sum(1 for _ in view.read(stream))
        return cls(view=view, streams=counts, artifacts=refs)

    def to_json(self) -> dict[str, Any]:
        view = self.view
        return {
            "run_id": view.run_id,
            "tags": view.tags,
            "metadata": view.metadata,
            "manifest": view.manifest.model_dump(mode="json"),
            "state": view.state.model_dump(mode="json"),
            "summary": None if view.summary is None else view.summary.model_dump(mode="json"),
            "streams": self.streams,
            "artifacts": [ref.model_dump(mode="json") for ref in self.artifacts],
        }


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "--artifacts",
    "artifact_limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="List at most this many artifacts (0: all). --json always lists all.",
)
@json_option
@pass_cli
def show(cli_ctx: CliContext, run_id: str, artifact_limit: int) -> None:
    """Show one run: labels, manifest, state, summary, streams and artifacts.

    The labels are the run's current tags and metadata (runstore tag and
    runstore meta change them); the state shows the caller's own data (cut
    short: --json has all of it), the summary the error and skip counts and
    the metrics.

    \b
    Examples:
      runstore show run_20240115_001
      runstore show run_20240115_001 --artifacts 0
      runstore show run_20240115_001 --json | jq .summary.pass_rate
      runstore show run_20240115_001 --json | jq .state.data
    """
    details = RunDetails.collect(cli_ctx.store.get_run(run_id))
    if cli_ctx.json:
        emit_json(details.to_json())
        return
    view = details.view
    title = Text.assemble(("run ", "bold"), (view.run_id, "bold cyan"), "  ")
    title.append_text(status_text(view.state.status))
    cli_ctx.out.print(
        Group(
            title,
            labels_panel(view.tags, view.metadata),
            manifest_panel(view.manifest),
            state_panel(view.state),
            summary_panel(view.summary),
            streams_table(details.streams),
            artifacts_table(details.artifacts, artifact_limit),
        )
    )


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.argument("stream")
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Print the last N records (0: none, useful with -f).",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records until the run ends.")
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.01),
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="How often -f checks for new records.",
)
@json_option(help="Print JSON Lines: each record exactly as stored.")
@pass_cli
def tail(
    cli_ctx: CliContext,
    *,
    run_id: str,
    stream: str,
    lines: int,
    follow: bool,
    poll_interval: float,
) -> None:
    """Print the last records of a stream; -f follows a live run until it finishes.

    Streams: instances, steps, assertions, logs, artifacts and any user
    stream (runstore show lists them). --json prints JSON Lines, one record
    per line, exactly as stored. The stream is read from its end, so -n N
    costs N records however long it is. A damaged line (not JSON) among
    them is skipped and reported on stderr, and the exit status is 1 (with
    --json the report is the last line, an error object).

    \b
    Examples:
      runstore tail run_20240115_001 logs
      runstore tail run_20240115_001 steps -n 50
      runstore tail run_20240115_001 instances -n 0 -f
      runstore tail run_20240115_001 assertions --json | jq 'select(.passed == false)'
    """
    view = cli_ctx.store.get_run(run_id)
    if stream not in view.streams() and not (follow and not view.state.is_terminal):
        have = ", ".join(view.streams()) or "none yet"
        raise NotFoundError(
            f"stream {stream!r} not found in run {run_id!r} (streams: {have})",
            details={"run_id": run_id, "stream": stream},
        )
    emit: Callable[[Any], None] = (
        emit_json_line if cli_ctx.json else lambda r: click.echo(format_record(stream, r))
    )
    portal = cli_ctx.store.portal
    end = portal.call(tail_records(view.aio, stream, lines))
    damaged: list[DamagedLine] = []

    def report(found: Sequence[DamagedLine]) -> None:
        damaged.extend(found)
        if not cli_ctx.json:
            for line in found:
                cli_ctx.err.print(str(line), style="yellow", markup=False)

    for record in end.records:
        emit(record)
    report(end.damaged)
    total = end.damaged.total
    if follow:
        decoder = end.decoder()
        chunks = view.aio.follow_chunks(stream, decoder, follow=True, poll_interval=poll_interval)
        for chunk in portal.iterate(chunks):
            seen = len(decoder.damaged)
            for record in decoder.records(decoder.feed(chunk)):
                emit(record)
            report(decoder.damaged[seen:])
        total += decoder.damaged.total
    torn = view.torn_tails.get(stream, 0)
    if torn:
        cli_ctx.err.print(
            f"note: {torn} bytes of an unfinished last line were hidden "
            "(the writer crashed mid-record or is writing it now)",
            style="yellow",
            markup=False,
        )
    if total:
        raise CorruptError(
            f"{stream}.jsonl has damaged lines ({total} skipped); "
            f"{cli_ctx.command_hint('verify', run_id)} lists every damaged line of the run",
            details={
                "run_id": run_id,
                "stream": stream,
                "count": total,
                "damaged": [line.to_dict() for line in damaged],
            },
        )


@cli.command("cat")
@click.argument("run_id", metavar="RUN")
@click.argument("name", metavar="ARTIFACT")
@click.option(
    "--verify",
    is_flag=True,
    help="Check the bytes against the stored sha256; exit 1 on a mismatch "
    "(reported after the bytes were written).",
)
@pass_cli
def cat(cli_ctx: CliContext, run_id: str, name: str, verify: bool) -> None:
    """Write an artifact's bytes to stdout, streamed (large files never load whole).

    \b
    Examples:
      runstore cat run_20240115_001 inst_001/step_001_request.json
      runstore cat run_20240115_001 report.json | jq .failures
      runstore cat run_20240115_001 export.tar.gz --verify > export.tar.gz
    """
    view = cli_ctx.store.get_run(run_id)
    out = binary_stdout()
    for chunk in view.open_artifact(name, verify=verify):
        out.write(chunk)
    out.flush()


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``runstore``) and ``python -m runstore``."""
    cli.main(args=None if argv is None else list(argv), prog_name="runstore")
