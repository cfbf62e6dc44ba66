"""The machinery under the public API; internal, its names may change between releases.

:mod:`~.core` holds :class:`~.core.RunCore`, the one owner of a run's write
path (stream writers, counters, state revision, heartbeat) that the sync and
async runs and the logging handler are faces of, and :class:`~.core.StoreCore`,
a store's backends and plugins. :mod:`~.portal` runs coroutines for the sync
API on a private event loop: in the caller's thread for backends that allow it,
else on a thread of its own.
"""
