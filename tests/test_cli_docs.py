"""What every ``runstore`` command shares: help with examples, ``--json``, exit codes,
shell completion, and docs/cli.md generated from the real ``--help`` output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from runstore.cli.app import cli

REPO = Path(__file__).resolve().parents[1]
COMMANDS = cli.list_commands(click.Context(cli))
NOT_JSON = {"cat"}  # writes the artifact's raw bytes


def _script() -> str:
    found = shutil.which("runstore", path=str(Path(sys.executable).parent))
    assert found is not None, "the runstore console script is not installed next to python"
    return found


def test_the_maintenance_commands_and_the_viewer_are_listed() -> None:
    assert {"verify", "diff", "gc", "recover", "cp", "view"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.stdout
    assert f"runstore {command} " in result.stdout or f"runstore {command}\n" in result.stdout


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in NOT_JSON])
def test_every_command_that_reports_takes_json(command: str) -> None:
    assert "--json" in CliRunner().invoke(cli, [command, "--help"]).stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_option_is_a_usage_error_with_exit_2(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--no-such-option"])
    assert result.exit_code == 2
    assert "No such option" in result.stderr


def test_the_cli_reference_is_generated_from_the_current_help() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "docs" / "gen_cli.py"), "--check"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


def test_the_cli_reference_holds_each_commands_help() -> None:
    page = (REPO / "docs" / "cli.md").read_text()
    for command in COMMANDS:
        assert f"### runstore {command}\n" in page
        assert f"Usage: runstore {command} [OPTIONS]" in page
    assert "_RUNSTORE_COMPLETE=bash_source runstore" in page


def _complete(words: str) -> list[str]:
    """What bash completion offers for ``words`` (the console script, as bash runs it)."""
    env = {
        **os.environ,
        "_RUNSTORE_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    done = subprocess.run([_script()], env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return [line.split(",", 1)[1] for line in done.stdout.decode().splitlines()]


def test_bash_completion_script_is_printed() -> None:
    env = {**os.environ, "_RUNSTORE_COMPLETE": "bash_source"}
    done = subprocess.run([_script()], env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0
    assert b"complete -o nosort -F _runstore_completion runstore" in done.stdout


def test_bash_completion_offers_commands_options_and_choices() -> None:
    assert {"verify", "view"} <= set(_complete("runstore v"))
    assert "--keep-last" in _complete("runstore gc --ke")
    assert _complete("runstore gc --status fa") == ["failed"]
