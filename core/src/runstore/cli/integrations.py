"""``runstore schema`` and ``runstore replay``: the files, for other tools and other machines.

Each command is a thin layer over :mod:`runstore.streams` and
:mod:`runstore.replay`; it is registered through
:data:`runstore.cli.app.LAZY_COMMANDS` and follows the conventions described in
:mod:`runstore.cli.app` (exit status, ``--json``, examples in ``--help``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click
import orjson
from pydantic import BaseModel
from rich.text import Text

from runstore.cli.app import CliContext, emit_json, json_option, pass_cli
from runstore.cli.format import fmt_bytes
from runstore.cli.render import print_commands
from runstore.model.errors import InvalidInputError
from runstore.model.names import validate_stream_name
from runstore.streams import schema as named_schema
from runstore.streams import schema_of, schemas

__all__ = ["replay", "schema"]


def _import_model(spec: str) -> type[BaseModel]:
    """``package.module:ClassName`` -> the pydantic model class."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidInputError(
            f"--model takes MODULE:CLASS (e.g. myharness.streams:PhaseOutput), got {spec!r}",
            details={"model": spec},
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(f"cannot import {spec}: {exc}", details={"model": spec}) from None
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        raise InvalidInputError(f"{spec} is not a pydantic model class", details={"model": spec})
    return target


@click.command("schema")
@click.argument("name", metavar="[STREAM]", required=False)
@click.option(
    "--model",
    "model_spec",
    metavar="MODULE:CLASS",
    help="Export the schema of your own stream's pydantic model (STREAM names it).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Write one STREAM.schema.json file per schema into DIR instead of printing.",
)
@json_option(help="With --out, print the written paths as JSON.")
@pass_cli
def schema(cli_ctx: CliContext, name: str | None, model_spec: str | None, out: Path | None) -> None:
    """Print the JSON Schema (draft 2020-12) of a run's files, for tools in other languages.

    STREAM is instances, steps, assertions, logs or artifacts (one line of
    STREAM.jsonl), or manifest, state or summary (the JSON documents).
    Without STREAM, prints an object holding every schema by name. The
    standard streams allow extra fields, as runstore does.

    \b
    Examples:
      runstore schema steps
      runstore schema --out schemas/
      runstore schema phase_outputs --model myharness.streams:PhaseOutput --out schemas/
    """
    found: dict[str, dict[str, Any]]
    if model_spec is not None:
        model = _import_model(model_spec)
        title = validate_stream_name(name) if name else model.__name__
        found = {title: schema_of(model, title=f"{title}.jsonl line" if name else None)}
    elif name is not None:
        found = {name: named_schema(name)}
    else:
        found = schemas()
    if out is None:
        emit_json(next(iter(found.values())) if name or model_spec else found)
        return
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key, body in found.items():
        path = out / f"{key}.schema.json"
        path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
        written.append(str(path))
    if cli_ctx.json:
        emit_json({"written": written})
    else:
        for path_text in written:
            cli_ctx.out.print(Text(path_text))


@click.command("replay")
@click.argument("run_id", metavar="RUN")
@click.argument("instance_id", metavar="INSTANCE")
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Directory to write bundle.json and artifacts/ into (created if missing).",
)
@click.option("--force", is_flag=True, help="Overwrite an earlier export in DIR.")
@json_option
@pass_cli
def replay(cli_ctx: CliContext, run_id: str, instance_id: str, out: Path, force: bool) -> None:
    """Export one instance of a run as files, to re-execute it elsewhere.

    Writes DIR/bundle.json (the run's seed, config and manifest, the
    instance record, its steps in order, assertions, log lines, records of
    other streams, artifact references) and DIR/artifacts/<name> for each of
    its artifacts, sha256-checked. runstore.replay.load(DIR) reads it back.

    \b
    Examples:
      runstore replay run_20240115_001 inst_007 --out replay/inst_007
      runstore replay run_20240115_001 inst_007 -o /tmp/inst_007 --force --json
    """
    bundle = cli_ctx.get_run(run_id).instance(instance_id)
    path = bundle.export(out, overwrite=force)
    size = sum(ref.size for ref in bundle.artifacts)
    if cli_ctx.json:
        emit_json(
            {
                "bundle": str(path),
                "run_id": bundle.run_id,
                "instance_id": bundle.instance_id,
                "steps": len(bundle.steps),
                "assertions": len(bundle.assertions),
                "logs": len(bundle.logs),
                "artifacts": len(bundle.artifacts),
                "artifact_bytes": size,
            }
        )
        return
    cli_ctx.out.print(
        Text.assemble(
            "Exported ",
            (instance_id, "bold cyan"),
            " of run ",
            (run_id, "bold cyan"),
            f" to {path.parent}: {len(bundle.steps)} steps, {len(bundle.assertions)} "
            f"assertions, {len(bundle.artifacts)} artifacts ({fmt_bytes(size)})",
        )
    )
    loader = f"import runstore.replay; bundle = runstore.replay.load({str(path.parent)!r})"
    print_commands(cli_ctx.out, "load it in Python:", [loader])
