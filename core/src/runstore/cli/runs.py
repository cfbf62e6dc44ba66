"""The core read commands: ``ls``, ``show``, ``tail`` and ``cat``.

Registered through :data:`runstore.cli.app.LAZY_COMMANDS`; each follows the
conventions described in :mod:`runstore.cli.app`. Wherever a command takes
``RUN`` it accepts a run reference (:mod:`runstore.cli.refs`): an id,
``latest``, ``latest~N``, ``latest:STATUS`` or a unique prefix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, get_args

import click
from rich.console import Group
from rich.text import Text

from runstore.cli.context import (
    CliContext,
    binary_stdout,
    emit_json,
    emit_json_line,
    json_option,
    pass_cli,
)
from runstore.cli.damage import DamageReport
from runstore.cli.maintenance import AgeParam
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
from runstore.engine.store import owner_stale_after
from runstore.model.errors import CorruptError, NotFoundError
from runstore.model.records import DamagedLine
from runstore.model.run import TERMINAL_STATUSES, ArtifactRef, RunStatus
from runstore.reading import tail as tail_records
from runstore.store import RunView

__all__ = ["RUN_STATUSES", "RunDetails", "TimeParam", "cat", "ls", "show", "tail"]

RUN_STATUSES: Final = get_args(RunStatus)


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


@click.command("ls")
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
    damaged = DamageReport(cli_ctx, in_json=False)
    damaged.unlisted()  # run folders the listing leaves out because they cannot be read
    if cli_ctx.json:
        emit_json([r.model_dump(mode="json") for r in records])
        damaged.finish()
        return
    if not records:
        hint = "" if offset else f"; {cli_ctx.command_hint('demo')} creates one"
        cli_ctx.out.print(f"no runs match in {cli_ctx.store_url}{hint}", markup=False)
        damaged.finish()
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
    damaged.finish()


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


@click.command()
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

    RUN is a run id, latest, latest~N (the Nth before the newest),
    latest:STATUS (the newest with that status) or a unique prefix.

    The labels are the run's current tags and metadata (runstore tag and
    runstore meta change them); the state shows the caller's own data (cut
    short: --json has all of it), the summary the error and skip counts and
    the metrics.

    \b
    Examples:
      runstore show run_20240115_001
      runstore show latest
      runstore show latest:failed --artifacts 0
      runstore show run_20240115_001 --json | jq .summary.pass_rate
      runstore show run_20240115_001 --json | jq .state.data
    """
    details = RunDetails.collect(cli_ctx.get_run(run_id))
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


@click.command()
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
@click.option(
    "--stale-after",
    type=AgeParam(),
    default=None,
    metavar="AGE",
    help="-f stops, with exit status 1, once the run's heartbeat is older than AGE "
    "(its writer stopped). Default: three of the writer's heartbeat intervals "
    "(5m if it sends none).",
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
    stale_after: timedelta | None,
) -> None:
    """Print the last records of a stream; -f follows a live run until it finishes.

    RUN is a run id, latest, latest~N, latest:STATUS or a unique prefix.

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
      runstore tail latest instances -n 0 -f
      runstore tail run_20240115_001 assertions --json | jq 'select(.passed == false)'
    """
    view = cli_ctx.get_run(run_id)
    run_id = view.run_id
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
        stale = owner_stale_after(view.state) if stale_after is None else stale_after
        chunks = view.aio.follow_chunks(
            stream, decoder, follow=True, poll_interval=poll_interval, stale_after=stale
        )
        for chunk in portal.iterate(chunks, long=True):
            seen = len(decoder.damaged)
            for record in decoder.records(decoder.feed(chunk)):
                emit(record)
            report(decoder.damaged[seen:])
        total += decoder.damaged.total
        if not view.state.is_terminal:  # the follow ended on a stale heartbeat
            beat = view.state.heartbeat_at or view.state.updated_at
            cli_ctx.err.print(
                f"error: run {run_id!r} is {view.state.status} but its writer stopped: "
                f"last heartbeat {beat.isoformat()}, older than {stale}; "
                f"{cli_ctx.command_hint('recover', run_id)} marks it crashed",
                style="red",
                markup=False,
            )
            raise click.exceptions.Exit(1)
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


@click.command("cat")
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

    RUN is a run id, latest, latest~N, latest:STATUS or a unique prefix.

    \b
    Examples:
      runstore cat run_20240115_001 inst_001/step_001_request.json
      runstore cat latest report.json | jq .failures
      runstore cat run_20240115_001 export.tar.gz --verify > export.tar.gz
    """
    view = cli_ctx.get_run(run_id)
    out = binary_stdout()
    for chunk in view.open_artifact(name, verify=verify):
        out.write(chunk)
    out.flush()
