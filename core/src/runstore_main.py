"""The ``runstore`` console script: Ctrl-C while runstore is still being imported.

This module sits outside the ``runstore`` package on purpose. Importing
:mod:`runstore.cli` imports ``runstore`` first (pydantic, asyncio: about
0.4 s), and only then can :func:`runstore.cli.main` take over Ctrl-C. An
interrupt in that window used to print a traceback; here it exits 130 with the
command line's one line, ``runstore: interrupted``. It imports nothing heavy.

Importing it installs its SIGINT handler, so that the console script's own
lines before :func:`main` are covered too. What it cannot cover is Python's
own start-up (``site`` and the ``.pth`` files), before any of runstore runs.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import NoReturn

__all__ = ["EXIT_INTERRUPTED", "INTERRUPTED_MESSAGE", "main"]

EXIT_INTERRUPTED = 130
"""The same as ``runstore.cli.app.EXIT_INTERRUPTED`` (which this cannot import)."""

INTERRUPTED_MESSAGE = "runstore: interrupted"
"""The same as ``runstore.cli.app.INTERRUPTED_MESSAGE``."""


def main() -> None:
    """Import the command line, hand Ctrl-C over to it, and run it."""
    from runstore import cli  # the slow part: a Ctrl-C meanwhile is _exit_at_once

    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        cli.handle_interrupts()  # from here on, the command line's own handling
    except KeyboardInterrupt:  # in the two statements above
        _interrupted()
    cli.main()


def _exit_at_once(signum: int, frame: FrameType | None) -> None:
    _interrupted()


def _interrupted() -> NoReturn:
    """Exit 130 with the one line, skipping the teardown of a half-imported runstore."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: the same exit
    try:
        sys.stderr.write(f"{INTERRUPTED_MESSAGE}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed or broken pipe: nothing more to say
        pass
    os._exit(EXIT_INTERRUPTED)


# At import, before the console script's own lines run: only where Python's
# handler is in place (the main thread of a program that installed none), as
# runstore.cli.handle_interrupts does.
if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _exit_at_once)
