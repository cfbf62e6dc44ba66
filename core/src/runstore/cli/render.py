"""Rich renderings of runstore's models: the only place that lays out tables and panels.

Commands print what these return; nothing here imports click.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import orjson
from rich import box
from rich.console import Console, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from runstore.cli.format import fmt_bytes, fmt_duration, fmt_pass_rate, fmt_time, fmt_value
from runstore.model.run import ArtifactRef, RunManifest, RunRecord, RunState, RunSummary
from runstore.spi.backends import BackendSpec

_STATUS_STYLES: Final = {
    "created": "dim",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "crashed": "bold red",
}


def status_text(status: str) -> Text:
    return Text(status, style=_STATUS_STYLES.get(status, ""))


def key_values(rows: Iterable[tuple[str, RenderableType | str]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, Text(value) if isinstance(value, str) else value)
    return grid


def runs_table(records: Sequence[RunRecord]) -> Table:
    # One space between columns: the table fits 80 columns (pipes, CI logs).
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    table.add_column("run id", no_wrap=True, style="cyan")
    table.add_column("status", no_wrap=True)
    table.add_column("sut", min_width=3, overflow="fold")
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("pass rate", justify="right", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    for r in records:
        table.add_row(
            Text(r.run_id),
            status_text(r.status),
            Text(r.sut_name or "-"),
            fmt_time(r.created_at).rstrip("Z"),
            fmt_pass_rate(r.pass_rate, r.pass_count, r.fail_count),
            fmt_duration(r.duration_ms),
        )
    return table


def manifest_panel(manifest: RunManifest) -> Panel:
    return Panel(
        key_values(
            [
                ("sut", manifest.sut_name or "-"),
                ("scenarios", ", ".join(manifest.scenario_ids or []) or "-"),
                ("seed", fmt_value(manifest.seed)),
                ("tags", ", ".join(manifest.tags) or "-"),
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
    return Panel(key_values(rows), title="state", title_align="left", expand=False)


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
                    "pass rate",
                    fmt_pass_rate(summary.pass_rate, summary.pass_count, summary.fail_count),
                ),
                ("duration", fmt_duration(summary.duration_ms)),
                (
                    "artifacts",
                    f"{summary.artifact_count} ({fmt_bytes(summary.artifact_bytes)})",
                ),
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
