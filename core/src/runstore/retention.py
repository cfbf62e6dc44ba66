"""Moved to :mod:`runstore.ops.retention`; this import path keeps working."""

from runstore.ops.retention import *  # noqa: F403
from runstore.ops.retention import __all__ as __all__  # noqa: PLC0414
