"""``runstore backends``: the installed plugins and the backends they register."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

import click
from rich import box
from rich.table import Table
from rich.text import Text

from runstore.cli.app import CliContext, emit_json, json_option, pass_cli
from runstore.cli.render import backend_json, backends_table
from runstore.model.errors import RunstoreError
from runstore.registry.config import parse_target, select_backend
from runstore.registry.plugins import Plugins

__all__ = ["PluginInfo", "backends"]


@click.command()
@click.option(
    "--check",
    is_flag=True,
    help="Open the --store and check what its backend declares against the storage "
    "itself (an S3 endpoint's conditional writes): print the capabilities it really has.",
)
@json_option
@pass_cli
def backends(cli_ctx: CliContext, check: bool) -> None:
    """List installed plugins and the backends they register.

    Shows each backend's name, the URL schemes it claims ("file" covers plain
    paths), the concerns it stores and the package that provides it, and
    which backend the current --store would use. --check opens that store
    and prints the capabilities its backend has, checked where they can be.

    \b
    Examples:
      runstore backends
      runstore --store s3://bucket/runs backends --json
      runstore --store s3://bucket/runs backends --check
    """
    if check:
        _check(cli_ctx)
        return
    plugins = Plugins()
    specs = sorted(plugins.backends().values(), key=lambda s: s.name)
    try:
        forced, target = parse_target(cli_ctx.store_url)
        serving: str | None = select_backend(forced, target, plugins.backends()).name
        problem = None
    except RunstoreError as exc:
        serving, problem = None, exc.message
    installed = [PluginInfo.of(plugins, name) for name in plugins.names()]
    if cli_ctx.json:
        emit_json(
            {
                "store": {"url": cli_ctx.store_url, "backend": serving, "error": problem},
                "plugins": [dataclasses.asdict(info) for info in installed],
                "backends": [backend_json(spec) for spec in specs],
            }
        )
        return
    cli_ctx.out.print(backends_table(specs))
    cli_ctx.out.print(plugins_table(installed))
    where = Text.assemble("store ", (cli_ctx.store_url, "bold"), " -> ")
    where.append(serving or f"no backend: {problem}", style="green" if serving else "red")
    cli_ctx.out.print(where)


@dataclass(frozen=True)
class PluginInfo:
    """An installed plugin: its entry-point name and the package that provides it."""

    name: str
    distribution: str | None
    version: str | None

    @classmethod
    def of(cls, plugins: Plugins, name: str) -> PluginInfo:
        dist = plugins.distribution_of(name)
        return cls(name=name, distribution=dist, version=_version(dist))


def _version(distribution: str | None) -> str | None:
    if distribution is None:
        return None
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def plugins_table(installed: Sequence[PluginInfo]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="plugins", title_justify="left")
    table.add_column("name", style="cyan", no_wrap=True)
    table.add_column("distribution")
    table.add_column("version")
    for info in installed:
        table.add_row(Text(info.name), Text(info.distribution or "(built in)"), info.version or "-")
    return table


def _check(cli_ctx: CliContext) -> None:
    """Print the checked capabilities of the store's state backend."""
    store = cli_ctx.store
    backend = store.aio.state_backend
    checked = store.portal.call(backend.verify_capabilities())
    rows = {f.name: getattr(checked, f.name) for f in dataclasses.fields(checked)}
    if cli_ctx.json:
        emit_json(
            {
                "store": cli_ctx.store_url,
                "backend": store.backend_names["state"],
                "capabilities": rows,
                "multi_writer": checked.multi_writer,
            }
        )
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="capabilities", title_justify="left")
    table.add_column("capability", style="cyan", no_wrap=True)
    table.add_column("value")
    for name, value in rows.items():
        table.add_row(name, Text(str(value), style="green" if value else "yellow"))
    cli_ctx.out.print(table)
    writers = "several processes or hosts" if checked.multi_writer else "one process at a time"
    cli_ctx.out.print(Text.assemble("writers: ", (writers, "bold")))
