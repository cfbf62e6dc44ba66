"""Ctrl-C while the ``runstore`` console script is still importing runstore.

The script runs :func:`runstore_main.main`, a module outside the package, so
that an interrupt during ``import runstore`` exits 130 with the command line's
one line instead of a traceback. Every test runs a child process; none depends
on when a signal lands: each allows exactly the outcomes that are correct
wherever it lands.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

INTERRUPTED = (130, "runstore: interrupted\n")

# The console script's own steps, with a Ctrl-C sent from inside the import of
# MODULE: the interrupt lands exactly there, every time.
_TRIPPED = textwrap.dedent(
    """
    import os, signal, sys


    class Trip:
        def find_spec(self, name, path=None, target=None):
            if name == {module!r}:
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signal.SIGINT)
            return None


    sys.meta_path.insert(0, Trip())
    {entry}

    sys.argv = ["runstore", "--help"]
    sys.exit(main())
    """
)


def _tripped(module: str, entry: str = "from runstore_main import main") -> tuple[int, str]:
    child = subprocess.run(
        [sys.executable, "-c", _TRIPPED.format(entry=entry, module=module)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return child.returncode, child.stderr


def test_the_console_script_runs_runstore_main() -> None:
    (script,) = entry_points(group="console_scripts", name="runstore")
    assert script.value == "runstore_main:main"


def test_runstore_main_says_what_the_command_line_says() -> None:
    """Its exit status and line are the CLI's (it cannot import them: that is the point)."""
    code = (
        "import runstore_main as entry\nfrom runstore.cli import app\n"
        "assert entry.EXIT_INTERRUPTED == app.EXIT_INTERRUPTED == 130\n"
        "assert entry.INTERRUPTED_MESSAGE == app.INTERRUPTED_MESSAGE\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert child.returncode == 0, child.stderr


@pytest.mark.parametrize(
    "module",
    [
        "pydantic",  # deep inside `import runstore`
        "runstore.aio",
        "runstore.cli",  # the last import before the command line takes over
        "runstore.cli.app",  # after it took over: its own handling
    ],
)
def test_ctrl_c_while_importing_exits_130_with_one_line(module: str) -> None:
    assert _tripped(module) == INTERRUPTED


def test_without_it_ctrl_c_while_importing_prints_a_traceback() -> None:
    """Why runstore_main exists: the package's own entry point cannot cover its import."""
    status, stderr = _tripped("pydantic", entry="from runstore.cli import main")
    assert status != 130
    assert "Traceback" in stderr and "KeyboardInterrupt" in stderr


def _script() -> Path:
    script = Path(sysconfig.get_path("scripts")) / "runstore"
    assert script.is_file(), f"the runstore console script is not installed at {script}"
    return script


@pytest.mark.parametrize("after", ["runstore_main", "pydantic", "runstore.aio", "runstore.cli"])
def test_the_real_console_script_interrupted_while_importing(after: str) -> None:
    """The installed script, SIGINT once ``after`` is imported (Python's own start-up
    is over by then; that window is not runstore's): 130 and the one line, or, had
    ``--help`` finished first, 0 and nothing on stderr."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}  # one stderr line per import
    child = subprocess.Popen(
        [str(_script()), "--help"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None
    lines: list[str] = []
    sent = False
    for line in child.stderr:
        lines.append(line)
        if line.rsplit("|", 1)[-1].strip() == after:
            child.send_signal(signal.SIGINT)
            sent = True
            break
    _, rest = child.communicate(timeout=120)
    said = "".join(x for x in [*lines, *rest.splitlines(True)] if not x.startswith("import time:"))
    assert sent, f"the script never imported {after}"
    assert (child.returncode, said) in (INTERRUPTED, (0, ""))
