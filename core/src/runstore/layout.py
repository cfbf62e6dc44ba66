"""Moved to :mod:`runstore.spi.layout`; this import path keeps working."""

from runstore.spi.layout import *  # noqa: F403
from runstore.spi.layout import __all__ as __all__  # noqa: PLC0414
