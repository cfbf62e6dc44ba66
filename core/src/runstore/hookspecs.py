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
    from runstore.backends import BackendSpec
    from runstore.models import ArtifactRef, RunManifest, RunState, RunSummary

hookspec = pluggy.HookspecMarker("runstore")


@hookspec
def runstore_register_backends(register: Callable[[BackendSpec], None]) -> None:
    """Register storage backends.

    :param register: call it once per backend with a
        :class:`~runstore.backends.BackendSpec`; one plugin may register several.

    Called once when a store's plugin manager is built. Every implementation
    is called.

    .. versionadded:: 0.1
    """


@hookspec
def runstore_run_created(manifest: RunManifest, state: RunState) -> None:
    """A run was created and its manifest and first state are durable.

    :param manifest: the run's immutable manifest.
    :param state: its first state snapshot (status ``created``).

    Every implementation is called.

    .. versionadded:: 0.1
    """


@hookspec
def runstore_state_changed(state: RunState) -> None:
    """A run's state snapshot was replaced (status, phase progress, heartbeat excluded).

    :param state: the new, durable state.

    Every implementation is called.

    .. versionadded:: 0.1
    """


@hookspec
def runstore_artifact_stored(ref: ArtifactRef) -> None:
    """An artifact and its metadata line are durable.

    :param ref: the artifact reference (name, kind, sha256, size, media type),
        what an orchestrator records as a phase output.

    Called only when bytes were stored, not for an identical re-put. Every
    implementation is called.

    .. versionadded:: 0.1
    """


@hookspec
def runstore_stream_flushed(run_id: str, stream: str, record_count: int) -> None:
    """A stream of a run was closed or flushed; ``record_count`` records are durable.

    :param run_id: the run.
    :param stream: the stream name.
    :param record_count: records this writer appended so far.

    Every implementation is called.

    .. versionadded:: 0.1
    """


@hookspec
def runstore_run_finished(summary: RunSummary) -> None:
    """A run finished; its summary and final state are durable.

    :param summary: the run's final aggregates (status, pass/fail counts, ...).

    Every implementation is called.

    .. versionadded:: 0.1
    """
