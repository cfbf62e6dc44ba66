"""The ``runstore`` command line.

=====================  ==============================================================
module                 what it holds
=====================  ==============================================================
:mod:`~.app`           the group, the per-invocation context and the core commands
:mod:`~.maintenance`   ``verify``, ``diff``, ``gc``, ``recover``, ``cp``
:mod:`~.integrations`  ``schema``, ``replay``
:mod:`~.view`          ``view`` (the web viewer's command)
:mod:`~.demo`          the simulated run behind ``runstore demo``
:mod:`~.render`        rich tables and panels (no click)
:mod:`~.format`        plain-text formatting, shared with the viewer (no click, no rich)
=====================  ==============================================================

Importing this package imports nothing heavy: the viewer imports
:mod:`runstore.cli.format` without pulling in click or rich.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``runstore``) and ``python -m runstore``."""
    from runstore.cli.app import main as run

    run(argv)
