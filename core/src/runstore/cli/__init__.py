"""The ``runstore`` command line.

=====================  ==============================================================
module                 what it holds
=====================  ==============================================================
:mod:`~.app`           the group, :data:`~.app.LAZY_COMMANDS`, errors and Ctrl-C
:mod:`~.context`       the per-invocation context, the global options, output helpers
:mod:`~.refs`          run references: ``latest``, ``latest~N``, prefixes, "did you mean"
:mod:`~.hints`         install hints, the must-exist check of a store, S3 credentials
:mod:`~.runs`          ``ls``, ``show``, ``tail``, ``cat``
:mod:`~.maintenance`   ``verify``, ``diff``, ``recover``
:mod:`~.storage`       ``gc``, ``cp``
:mod:`~.labels`        ``meta``, ``tag``
:mod:`~.integrations`  ``schema``, ``replay``
:mod:`~.backends`      ``backends``
:mod:`~.view`          ``view`` (the web viewer's command)
:mod:`~.demo`          the simulated run behind ``runstore demo``
:mod:`~.render`        rich tables and panels (no click)
:mod:`~.format`        plain-text formatting, shared with the viewer (no click, no rich)
=====================  ==============================================================

Importing this package imports nothing heavy: the viewer imports
:mod:`runstore.cli.format` without pulling in click or rich.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

__all__ = ["handle_interrupts", "main"]

_INTERRUPTED = 130


def _quiet_interrupted_asyncio() -> None:
    """After Ctrl-C, what asyncio says about work cut short is noise to the user.

    A coroutine created but not yet scheduled when the interrupt landed
    ("was never awaited"), or a task pending when the loop stopped ("Task
    was destroyed"), is expected then; it is not at any other time, so
    this is installed only once the user interrupted.
    """
    warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited")
    logging.getLogger("asyncio").disabled = True


class _Phase:
    running = False
    """Inside :func:`main`'s ``try``: an interrupt unwinds (closing the store) there."""


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    if not _Phase.running:  # nothing started yet, or everything done: just go
        _exit_interrupted(say=True)
    _quiet_interrupted_asyncio()
    raise KeyboardInterrupt


def _exit_interrupted(*, say: bool) -> NoReturn:
    """Exit 130 now, skipping the interpreter's teardown (where the noise would come from)."""
    _quiet_interrupted_asyncio()
    try:
        if say:
            sys.stderr.write("runstore: interrupted\n")
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken pipe: nothing more to say
        pass
    os._exit(_INTERRUPTED)


def handle_interrupts() -> bool:
    """Take over Ctrl-C the way :func:`main` does; whether it did.

    Only when Python's own handler is in place (the main thread of a program
    that did not install one): an embedding program keeps its own. :func:`main`
    calls it first; a program that runs the command line later can call it
    earlier, to cover its own start-up too.
    """
    current = signal.getsignal(signal.SIGINT)
    if current is _on_interrupt:
        return True
    if current is not signal.default_int_handler:
        return False
    signal.signal(signal.SIGINT, _on_interrupt)
    return True


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``runstore``) and ``python -m runstore``.

    Ctrl-C at any point after ``import runstore`` exits 130 with one line on
    stderr and nothing else: during the imports, the command and the exit.
    """
    handle_interrupts()
    try:
        _Phase.running = True
        from runstore.cli.app import main as run

        run(argv)
    except KeyboardInterrupt:
        _exit_interrupted(say=True)
    except SystemExit as exc:
        if exc.code == _INTERRUPTED:
            _exit_interrupted(say=False)
        raise
    finally:
        _Phase.running = False  # Ctrl-C from here on (the interpreter's exit): exit at once
