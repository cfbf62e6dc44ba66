"""runstore backend for any fsspec filesystem: S3 (s3fs), GCS, Azure, memory, ...

Installed as the ``fsspec`` plugin; open a store with ``runstore.open("s3://bucket/prefix")``
or force it with ``fsspec+<protocol>://``. See :mod:`runstore_fsspec.backend`.
"""

from __future__ import annotations

__version__ = "0.1.0"
