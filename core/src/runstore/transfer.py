"""Moved to :mod:`runstore.ops.transfer`; this import path keeps working."""

from runstore.ops.transfer import *  # noqa: F403
from runstore.ops.transfer import __all__ as __all__  # noqa: PLC0414
