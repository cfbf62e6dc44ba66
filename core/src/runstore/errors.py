"""Moved to :mod:`runstore.model.errors`; this import path keeps working."""

from runstore.model.errors import *  # noqa: F403
from runstore.model.errors import __all__ as __all__  # noqa: PLC0414
