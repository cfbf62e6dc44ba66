"""runstore-sqlite: an example third-party runstore backend (``sqlite:///path/to/runs.db``)."""

__version__ = "0.1.0"
