"""The stream writer for stores without append: buffered records become segment objects.

See :mod:`runstore_fsspec.backend` for the durability policies and their window;
the buffering is :class:`runstore.spi.BufferedStreamWriter`'s.
"""

from __future__ import annotations

import logging

from runstore.spi.buffered import BatchPolicy, BufferedStreamWriter

__all__ = ["BatchPolicy", "SegmentWriter"]


class SegmentWriter(BufferedStreamWriter):
    """Writes each commit as one immutable segment object: ``put_segment(start, data)``."""

    log = logging.getLogger("runstore_fsspec")
