"""Moved to :mod:`runstore.ops.maintenance`; this import path keeps working."""

from runstore.ops.maintenance import *  # noqa: F403
from runstore.ops.maintenance import __all__ as __all__  # noqa: PLC0414
