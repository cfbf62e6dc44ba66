"""Rich renderings of runstore's models: the only place that lays out tables and panels.

Commands print what these return; nothing here imports click.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import orjson
from rich import box
from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from runstore.cli.format import fmt_bytes, fmt_duration, fmt_pass_rate, fmt_time, fmt_value
from runstore.model.run import (
    ArtifactRef,
    Metadata,
    RunManifest,
    RunRecord,
    RunState,
    RunSummary,
)
from runstore.spi.backends import BackendSpec

_STATUS_STYLES: Final = {
    "created": "dim",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "crashed": "bold red",
}
VALUE_WIDTH: Final = 160
"""Characters of one value (the caller's state, a metadata value) ``show`` prints at most."""
LABEL_MIN_WIDTH: Final = 10
"""``ls`` shows the tags and metadata only if each gets at least this many columns."""
"""Characters of one value (the caller's state, a metadata value) ``show`` prints at most."""


def status_text(status: str) -> Text:
    return Text(status, style=_STATUS_STYLES.get(status, ""))


def key_values(rows: Iterable[tuple[str, RenderableType | str]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, Text(value) if isinstance(value, str) else value)
    return grid


def clip(text: str, width: int = VALUE_WIDTH) -> str:
    """``text`` cut to ``width`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def fmt_label_value(value: Any) -> str:
    """A metadata value as ``runstore meta`` reads it back.

    A string is shown as it is unless it would read as JSON (``"3"``,
    ``"true"``): then, like any other value, as compact JSON.
    """
    if isinstance(value, str):
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return orjson.dumps(value).decode()


def fmt_metadata(metadata: Metadata) -> str:
    """Metadata on one line: ``key=value key=value``."""
    return " ".join(f"{key}={fmt_label_value(value)}" for key, value in metadata.items())


def _label_widths(core: int, width: int, columns: dict[str, list[str]]) -> list[int] | None:
    """Widths of the label columns in what ``core`` leaves of ``width``; ``None`` if too narrow.

    Each column but the last takes what it needs, leaving the others at least
    :data:`LABEL_MIN_WIDTH`; the last takes the rest, up to its own need.
    """
    widths: list[int] = []
    left = width - core
    for index, (name, cells) in enumerate(columns.items()):
        others = len(columns) - index - 1
        need = max(cell_len(text) for text in [name, *cells])
        given = min(need, left - 1 - others * (LABEL_MIN_WIDTH + 1))  # one space before it
        if given < min(need, LABEL_MIN_WIDTH):
            return None
        widths.append(given)
        left -= given + 1
    return widths


def runs_table(records: Sequence[RunRecord], width: int) -> Table:
    """The runs as a table no wider than ``width``.

    The run's tags and metadata get a column each when a listed run has
    some, in what the other columns leave: cut short, or left out with a
    note when fewer than :data:`LABEL_MIN_WIDTH` columns are left.
    """
    # One space between columns: without labels the table fits 80 columns (pipes, CI logs).
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    table.add_column("run id", no_wrap=True, style="cyan")
    table.add_column("status", no_wrap=True)
    table.add_column("sut", min_width=3, overflow="fold")
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("pass rate", justify="right", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    rows = [
        [
            r.run_id,
            r.status,
            r.sut_name or "-",
            fmt_time(r.created_at).rstrip("Z"),
            fmt_pass_rate(r.pass_rate, r.pass_count, (r.fail_count or 0) + (r.error_count or 0)),
            fmt_duration(r.duration_ms),
        ]
        for r in records
    ]
    headers = [str(column.header) for column in table.columns]
    columns = zip(headers, *rows, strict=False)  # no rows: the headers alone
    core = len(headers) - 1 + sum(max(map(cell_len, texts)) for texts in columns)
    every = {
        "tags": [",".join(r.tags) for r in records],
        "metadata": [fmt_metadata(r.metadata) for r in records],
    }
    wanted = [name for name, texts in every.items() if any(texts)]
    shown: dict[str, int] = {}  # label column -> its width
    for count in range(len(wanted), 0, -1):  # the metadata gives way first, then the tags
        widths = _label_widths(core, width, {name: every[name] for name in wanted[:count]})
        if widths is not None:
            shown = dict(zip(wanted, widths, strict=False))
            break
    if len(shown) < len(wanted):
        left_out = " and ".join(wanted[len(shown) :])
        table.caption = f"{left_out} left out at {width} columns: ls --json has them"
        table.caption_justify = "left"
    for name, given in shown.items():
        style = "dim" if name == "metadata" else ""
        table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=given, style=style)
    for index, (run_id, status, sut, *numbers) in enumerate(rows):
        table.add_row(
            Text(run_id),
            status_text(status),
            Text(sut),
            *numbers,
            *(Text(every[name][index] or "-") for name in shown),
        )
    return table


def manifest_panel(manifest: RunManifest) -> Panel:
    return Panel(
        key_values(
            [
                ("sut", manifest.sut_name or "-"),
                ("scenarios", ", ".join(manifest.scenario_ids or []) or "-"),
                ("seed", fmt_value(manifest.seed)),
                ("created", fmt_time(manifest.timestamp)),
                ("config", fmt_value(manifest.config)),
                ("correlation id", manifest.correlation_id or "-"),
                ("runstore", manifest.runstore_version or "-"),
            ]
        ),
        title="manifest",
        title_align="left",
        expand=False,
    )


def state_panel(state: RunState) -> Panel:
    rows: list[tuple[str, RenderableType | str]] = [
        ("status", status_text(state.status)),
        ("revision", str(state.revision)),
        ("created", fmt_time(state.created_at)),
        ("started", fmt_time(state.started_at)),
        ("finished", fmt_time(state.finished_at)),
        ("heartbeat", fmt_time(state.heartbeat_at)),
    ]
    for name, phase in state.phases.items():
        total = "?" if phase.total is None else str(phase.total)
        message = f"  {phase.message}" if phase.message else ""
        rows.append((f"phase {name}", f"{phase.status} {phase.completed}/{total}{message}"))
    if state.error:
        rows.append(("error", Text(state.error, style="red")))
    if state.data is not None:
        rows.append(("data", clip(fmt_value(state.data))))
    return Panel(key_values(rows), title="state", title_align="left", expand=False)


def labels_panel(tags: Sequence[str], metadata: Metadata) -> Panel:
    """The run's current tags and metadata (they may change after the run finished)."""
    fields = key_values((key, clip(fmt_label_value(v))) for key, v in metadata.items())
    rows: list[tuple[str, RenderableType | str]] = [
        ("tags", ", ".join(tags) or "-"),
        ("metadata", fields if metadata else "-"),
    ]
    return Panel(key_values(rows), title="labels", title_align="left", expand=False)


def summary_panel(summary: RunSummary | None) -> Panel:
    if summary is None:
        body: RenderableType = Text("not finished yet", style="dim")
    else:
        body = key_values(
            [
                ("status", status_text(summary.status)),
                ("instances", str(summary.instance_count)),
                ("passed", Text(str(summary.pass_count), style="green")),
                (
                    "failed",
                    Text(str(summary.fail_count), style="red" if summary.fail_count else ""),
                ),
                (
                    "errors",
                    Text(str(summary.error_count), style="red" if summary.error_count else ""),
                ),
                ("skipped", Text(str(summary.skip_count), style="dim")),
                (  # errors are judged like failures (RunSummary.pass_rate)
                    "pass rate",
                    fmt_pass_rate(
                        summary.pass_rate,
                        summary.pass_count,
                        summary.fail_count + summary.error_count,
                    ),
                ),
                ("duration", fmt_duration(summary.duration_ms)),
                (
                    "artifacts",
                    f"{summary.artifact_count} ({fmt_bytes(summary.artifact_bytes)})",
                ),
                *((f"metric {name}", f"{value:g}") for name, value in summary.metrics.items()),
            ]
        )
    return Panel(body, title="summary", title_align="left", expand=False)


def streams_table(counts: dict[str, int]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="streams", title_justify="left")
    table.add_column("stream", style="cyan")
    table.add_column("records", justify="right")
    for name, count in counts.items():
        table.add_row(Text(name), str(count))
    return table


def artifacts_table(refs: Sequence[ArtifactRef], limit: int) -> Table:
    shown = refs if limit == 0 else refs[:limit]
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=f"artifacts ({len(refs)})",
        title_justify="left",
        caption=(
            f"{len(refs) - len(shown)} more: --artifacts 0 lists all"
            if len(shown) < len(refs)
            else None
        ),
        caption_justify="left",
    )
    table.add_column("name", style="cyan", overflow="fold")
    table.add_column("kind", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("sha256", no_wrap=True)
    for ref in shown:
        table.add_row(Text(ref.name), ref.kind, fmt_bytes(ref.size), ref.sha256[:12])
    return table


def print_commands(console: Console, heading: str, commands: Sequence[str]) -> None:
    """Commands to paste, one a line, never wrapped (a wrapped command cannot be pasted)."""
    console.print(heading, style="bold", markup=False)
    for command in commands:
        console.print(Text("  " + command))


def backend_json(spec: BackendSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "schemes": list(spec.schemes),
        "concerns": sorted(spec.concerns),
        "fallback": spec.fallback,
        "distribution": spec.distribution,
        "description": spec.description,
    }


def backends_table(specs: Sequence[BackendSpec]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="backends", title_justify="left")
    table.add_column("name", style="cyan", no_wrap=True)
    table.add_column("schemes")
    table.add_column("concerns")
    table.add_column("distribution")
    table.add_column("description")
    for spec in specs:
        schemes = ", ".join(f"{s}://" for s in spec.schemes) or "-"
        if "file" in spec.schemes:
            schemes += " (and plain paths)"
        if spec.fallback:
            schemes += " (and any other)"
        table.add_row(
            Text(spec.name),
            Text(schemes),
            ", ".join(sorted(spec.concerns)),
            Text(spec.distribution or "-"),
            Text(spec.description),
        )
    return table


def format_record(stream: str, record: Any) -> str:
    """One record as a line for humans: log lines readable, anything else compact JSON."""
    if stream == "logs" and isinstance(record, dict) and "message" in record:
        rest = {k: v for k, v in record.items() if k not in ("ts", "level", "message")}
        extras = " ".join(f"{k}={fmt_value(v)}" for k, v in rest.items())
        line = f"{record.get('ts', '-')} {str(record.get('level', '-')).upper():<7} "
        return f"{line}{record['message']}" + (f"  {extras}" if extras else "")
    return orjson.dumps(record).decode()
