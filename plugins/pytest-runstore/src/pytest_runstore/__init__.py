"""pytest-runstore: record a pytest session as a runstore run.

The pytest hooks are in :mod:`pytest_runstore.plugin`; the history queries
(flaky and slowing tests) in :mod:`pytest_runstore.history`.
Importing this package does not import runstore.
"""

from __future__ import annotations

from pytest_runstore.capture import TestRun
from pytest_runstore.nodeids import decode_instance_id, encode_nodeid

__version__ = "0.1.0"

__all__ = ["TestRun", "__version__", "decode_instance_id", "encode_nodeid"]
