import pluggy

hookimpl = pluggy.HookimplMarker("runstore")
"""Marker for hook implementations: ``@runstore.hookimpl``."""
