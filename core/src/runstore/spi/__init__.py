"""What a backend author imports: the storage interfaces, the models and errors they
speak, the layout every backend produces and the hook markers.

``from runstore.spi import StateBackend, LogBackend, ArtifactBackend, BackendSpec, hookimpl``

Modules: :mod:`~.backends` (one abstract class per concern, capabilities,
registration), :mod:`~.hookspecs` (the plugin hooks), :mod:`~.layout` (paths
of the Windtunnel tree) and :mod:`~.memory` (the in-memory reference backend
the conformance kit compares every backend against). Imports only
:mod:`runstore.model`.
"""

from __future__ import annotations

from runstore.model.errors import (
    AlreadyExistsError,
    BackendNotFoundError,
    BackendUnavailableError,
    ConflictError,
    CorruptError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RunstoreError,
    StorageIOError,
    UnsupportedError,
)
from runstore.model.run import RunManifest, RunRecord, RunState, RunStatus, RunSummary
from runstore.spi import layout
from runstore.spi.backends import (
    ALL_CONCERNS,
    ArtifactBackend,
    ArtifactSource,
    BackendSpec,
    Capabilities,
    Concern,
    Durability,
    LogBackend,
    RunQuery,
    StateBackend,
    StoredArtifact,
    StreamWriter,
    Target,
    hash_source,
)
from runstore.spi.hookspecs import hookimpl

__all__ = [
    "ALL_CONCERNS",
    "AlreadyExistsError",
    "ArtifactBackend",
    "ArtifactSource",
    "BackendNotFoundError",
    "BackendSpec",
    "BackendUnavailableError",
    "Capabilities",
    "Concern",
    "ConflictError",
    "CorruptError",
    "Durability",
    "InvalidInputError",
    "LogBackend",
    "NotFoundError",
    "PermissionDeniedError",
    "RunManifest",
    "RunQuery",
    "RunRecord",
    "RunState",
    "RunStatus",
    "RunSummary",
    "RunstoreError",
    "StateBackend",
    "StorageIOError",
    "StoredArtifact",
    "StreamWriter",
    "Target",
    "UnsupportedError",
    "hash_source",
    "hookimpl",
    "layout",
]
