"""Moved to :mod:`runstore.spi.hookspecs`; this import path keeps working."""

from runstore.spi.hookspecs import *  # noqa: F403
from runstore.spi.hookspecs import __all__ as __all__  # noqa: PLC0414
