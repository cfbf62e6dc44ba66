"""Clean exits of the real console script: Ctrl-C at any point, and no asyncio noise.

Each test runs ``runstore`` in a child process, as a user does, and reads
its stderr: Ctrl-C exits 130 with the one line ``runstore: interrupted``,
and no command leaves asyncio's "coroutine ... was never awaited", "Task was
destroyed but it is pending!" or "Unclosed client session" behind.

The interrupt tests do not depend on when the signal lands: whatever the
child was doing, the exit must be clean (130 and one line, or 0 and
nothing if the command had already finished).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

import runstore
from runstore.cli.demo import run_demo
from runstore_fsspec.testing import S3Server

NOISE = (
    "Traceback",
    "was never awaited",
    "Task was destroyed",
    "Unclosed",
    "Exception ignored",
    "RuntimeWarning",
)

_AFTER_IMPORT = (
    "import sys\n"
    "from runstore.cli import handle_interrupts, main\n"
    "handle_interrupts()\n"
    "sys.stderr.write('ready\\n'); sys.stderr.flush()\n"
    "main(sys.argv[1:])\n"
)
"""The console script, telling the parent once ``import runstore`` is done.

A Ctrl-C during that import, before any runstore code can run, is Python's
own (a traceback); from there on it is the command line's to handle
(``handle_interrupts`` is the first thing ``main`` does; called here before
"ready", so the signal cannot land between the two).
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "RUNSTORE_URL"}


def _script() -> str:
    found = shutil.which("runstore", path=str(Path(sys.executable).parent))
    assert found is not None, "the runstore console script is not installed next to python"
    return found


def _assert_quiet(err: str) -> None:
    for noise in NOISE:
        assert noise not in err, err


def _interrupt(args: list[str], delay: float, cwd: Path) -> tuple[int, str]:
    """Start the CLI, wait until it is past ``import runstore`` and ``delay`` more, send SIGINT."""
    child = subprocess.Popen(
        [sys.executable, "-c", _AFTER_IMPORT, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=_env(),
    )
    try:
        assert child.stderr is not None
        assert child.stderr.readline() == b"ready\n"
        time.sleep(delay)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode, err.decode()


def _assert_interrupted_cleanly(code: int, err: str) -> None:
    if code == 0:  # finished before the signal landed
        assert err == ""
    else:
        assert (code, err) == (130, "runstore: interrupted\n")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local store with two demo runs of different seeds (their diff stops at --limit)."""
    root = tmp_path_factory.mktemp("signals") / "runs"
    with runstore.open(str(root)) as store:
        run_demo(store, seed=1, instances=30, run_id="run_a")
        run_demo(store, seed=2, instances=30, run_id="run_b")
    return root


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
def test_ctrl_c_while_starting_exits_130_with_one_line(
    two_runs: Path, tmp_path: Path, delay: float
) -> None:
    code, err = _interrupt(["--store", str(two_runs), "verify"], delay, tmp_path)
    _assert_interrupted_cleanly(code, err)


@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_ctrl_c_while_starting_on_s3_exits_130_with_one_line(
    s3: S3Server, tmp_path: Path, delay: float
) -> None:
    with runstore.open(s3.url("runs")) as store:
        run_demo(store, seed=1, instances=3, run_id="run_a")
    code, err = _interrupt(["--store", s3.url("runs"), "show", "latest"], delay, tmp_path)
    _assert_interrupted_cleanly(code, err)


def test_ctrl_c_while_following_exits_130_with_one_line(two_runs: Path, tmp_path: Path) -> None:
    with runstore.open(str(tmp_path / "runs")) as store:
        run = store.create_run("live")
        code, err = _interrupt(
            ["--store", str(tmp_path / "runs"), "tail", "live", "steps", "-f"], 0.5, tmp_path
        )
        run.finish()
    assert (code, err) == (130, "runstore: interrupted\n")


COMMANDS = [
    ["ls"],
    ["ls", "--json"],
    ["show", "latest"],
    ["tail", "run_a", "steps", "-n", "3"],
    ["cat", "run_a", "inst_001/step_001_request.json"],
    ["verify", "--json"],
    ["diff", "run_a", "run_b", "--json"],
    ["diff", "run_a", "run_b"],
    ["diff", "run_a", "run_b", "--exact", "--json", "--limit", "3"],
    ["diff", "run_a", "run_b", "--exact", "--limit", "3"],
    ["meta", "run_a"],
    ["tag", "run_a"],
    ["recover", "--dry-run"],
    ["gc", "--dry-run", "--json"],
    ["backends"],
    ["schema", "steps"],
]


_DRIVER = (
    "import sys, json\n"
    "from runstore.cli.app import cli\n"
    "codes = []\n"
    "for args in json.loads(sys.argv[1]):\n"
    "    try:\n"
    "        cli.main(args, prog_name='runstore')\n"
    "    except SystemExit as exc:\n"
    "        codes.append(exc.code)\n"
    "open(sys.argv[2], 'w').write(json.dumps(codes))\n"
)
"""Every command of a list, one after the other in one interpreter, then its exit."""


def _run_all(store: str, commands: list[list[str]], cwd: Path) -> tuple[list[int], str]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _DRIVER,
            orjson.dumps([["--store", store, *a] for a in commands]).decode(),
            str(cwd / "codes.json"),
        ],
        capture_output=True,
        cwd=cwd,
        env=_env(),
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    codes: list[int] = orjson.loads((cwd / "codes.json").read_bytes())
    return codes, done.stderr.decode()


def test_no_command_leaves_asyncio_noise_on_stderr(two_runs: Path, tmp_path: Path) -> None:
    codes, err = _run_all(str(two_runs), COMMANDS, tmp_path)
    assert len(codes) == len(COMMANDS)
    assert set(codes) <= {0, 1}, codes  # 1: diff found differences
    _assert_quiet(err)


def test_no_command_on_s3_leaves_asyncio_noise_on_stderr(s3: S3Server, tmp_path: Path) -> None:
    with runstore.open(s3.url("runs")) as store:
        run_demo(store, seed=1, instances=4, run_id="run_a")
        run_demo(store, seed=2, instances=4, run_id="run_b")
    commands = [
        ["ls"],
        ["show", "latest"],
        ["diff", "run_a", "run_b", "--json"],
        ["diff", "run_a", "run_b", "--exact", "--json", "--limit", "3"],
        ["cp", str(tmp_path / "copy")],
    ]
    codes, err = _run_all(s3.url("runs"), commands, tmp_path)
    assert codes == [0, 0, 0, 1, 0]  # seeds 1 and 2: no regression, but lines differ
    _assert_quiet(err)
