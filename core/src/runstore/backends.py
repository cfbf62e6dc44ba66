"""Moved to :mod:`runstore.spi.backends`; this import path keeps working."""

from runstore.spi.backends import *  # noqa: F403
from runstore.spi.backends import __all__ as __all__  # noqa: PLC0414
