"""Hook specifications: how plugins extend runstore.

Plugins are modules (or objects) with functions marked ``@runstore.hookimpl``
and are found through the ``runstore.plugins`` entry-point group; the entry
point's name is the plugin's name. Storage operations are *not* hooks (one
configured backend serves each call); hooks are for discovery and for events
that observers react to.

Event hooks are called after the data they report is durable. An exception
raised by an observer is logged on the ``runstore.plugins`` logger and never
reaches the writer or corrupts the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from runstore.model.run import ArtifactRef, RunManifest, RunState, RunSummary
    from runstore.spi.backends import BackendSpec

__all__ = [
    "hookimpl",
    "hookspec",
    "runstore_artifact_stored",
    "runstore_register_backends",
    "runstore_run_created",
    "runstore_run_finished",
    "runstore_state_changed",
    "runstore_stream_flushed",
]

hookspec = pluggy.HookspecMarker("runstore")
"""Marker for hook specifications (this module's functions)."""

hookimpl = pluggy.HookimplMarker("runstore")
"""Marker for hook implementations: ``@runstore.hookimpl``."""


@hookspec
def runstore_register_backends(register: Callable[[BackendSpec], None]) -> None:
    """Register storage backends.

    :param register: call it once per backend with a
        :class:`~runstore.spi.backends.BackendSpec`; one plugin may register several.

    Called once per store, when the store opens and picks a backend for each
    concern (and by tools that list backends, such as ``runstore backends``).
    Registering a name twice, or passing anything but a ``BackendSpec``, is a
    :class:`~runstore.model.errors.PluginError`. Every implementation is called.

    .. versionadded:: 0.1
    """


@hookspec
def runstore_run_created(manifest: RunManifest, state: RunState) -> None:
    """A run was created and its manifest and first state are durable.

    :param manifest: the run's immutable manifest.
    :param state: its first state snapshot (status ``created``).

    Called by ``create_run`` before it returns. Every implementation is called.

    .. versionadded:: 0.1
    """


@hookspec
def runstore_state_changed(state: RunState) -> None:
    """A run's state snapshot was replaced (status, phase progress, heartbeat excluded).

    :param state: the new, durable state.

    Called after every state write of a run being written: when it starts
    running (or ``resume_run`` restarts it), on ``set_phase`` and when it
    finishes (just before :func:`runstore_run_finished`). Heartbeats only
    refresh ``heartbeat_at`` and are not reported. Every implementation is
    called.

    .. versionadded:: 0.1
    """


@hookspec
def runstore_artifact_stored(ref: ArtifactRef) -> None:
    """An artifact and its metadata line are durable.

    :param ref: the artifact reference (name, kind, sha256, size, media type),
        what an orchestrator records as a phase output.

    Called by ``put_artifact`` before it returns, only when bytes were
    stored, not for an identical re-put. Every implementation is called.

    .. versionadded:: 0.1
    """


@hookspec
def runstore_stream_flushed(run_id: str, stream: str, record_count: int) -> None:
    """A stream of a run was closed or flushed; ``record_count`` records are durable.

    :param run_id: the run.
    :param stream: the stream name.
    :param record_count: records this writer appended so far.

    Called for each stream a run has open (``artifacts`` included) by
    ``run.flush()``, and when the streams are closed: when the run finishes or
    the store is closed. Every implementation is called.

    .. versionadded:: 0.1
    """


@hookspec
def runstore_run_finished(summary: RunSummary) -> None:
    """A run finished; its summary and final state are durable.

    :param summary: the run's final aggregates (status, pass/fail counts, ...).

    Called once per run by ``finish`` (also when ``with run:`` exits, and when
    recovery marks a dead run ``crashed``), after the streams are closed.
    Every implementation is called.

    .. versionadded:: 0.1
    """
