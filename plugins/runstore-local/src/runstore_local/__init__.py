"""runstore's local filesystem backend: bare paths and ``file://`` URLs."""

from runstore_local.backend import LocalBackend

__all__ = ["LocalBackend"]
