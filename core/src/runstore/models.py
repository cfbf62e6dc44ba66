"""Moved to :mod:`runstore.model.run`; this import path keeps working."""

from runstore.model.run import *  # noqa: F403
from runstore.model.run import __all__ as __all__  # noqa: PLC0414
