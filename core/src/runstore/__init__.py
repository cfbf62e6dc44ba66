"""runstore: durable, pluggable storage for runs (state, logs, artifacts).

>>> import runstore
>>> store = runstore.open("memory://doctest")
>>> with store.create_run(run_id="run_1", sut_name="demo") as run:
...     run.append("instances", {"instance_id": "i1", "status": "passed"})
>>> run.summary.pass_count
1
"""

from __future__ import annotations

__version__ = "0.1.0"

from runstore import aio
from runstore.model.errors import (
    AlreadyExistsError,
    BackendNotFoundError,
    BackendUnavailableError,
    ConflictError,
    CorruptError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PluginError,
    RunstoreError,
    StorageIOError,
    UnsupportedError,
)
from runstore.model.run import (
    ArtifactKind,
    ArtifactRef,
    LogRef,
    PhaseProgress,
    RunManifest,
    RunRecord,
    RunState,
    RunStatus,
    RunSummary,
)
from runstore.spi.backends import (
    ArtifactBackend,
    BackendSpec,
    Capabilities,
    LogBackend,
    RunQuery,
    StateBackend,
    StoredArtifact,
    StreamWriter,
    Target,
)
from runstore.spi.hookspecs import hookimpl
from runstore.store import Run, RunView, Store, open

__all__ = [
    "AlreadyExistsError",
    "ArtifactBackend",
    "ArtifactKind",
    "ArtifactRef",
    "BackendNotFoundError",
    "BackendSpec",
    "BackendUnavailableError",
    "Capabilities",
    "ConflictError",
    "CorruptError",
    "InstanceBundle",
    "InvalidInputError",
    "LogBackend",
    "LogRef",
    "NotFoundError",
    "PermissionDeniedError",
    "PhaseProgress",
    "PluginError",
    "Run",
    "RunManifest",
    "RunQuery",
    "RunRecord",
    "RunState",
    "RunStatus",
    "RunSummary",
    "RunView",
    "RunstoreError",
    "StateBackend",
    "StorageIOError",
    "Store",
    "StoredArtifact",
    "StreamWriter",
    "Target",
    "UnsupportedError",
    "__version__",
    "aio",
    "hookimpl",
    "open",
]


def __getattr__(name: str) -> object:
    # Replay (and typed streams) load when first used: ``import runstore`` stays lean.
    if name == "InstanceBundle":
        from runstore.replay import InstanceBundle

        return InstanceBundle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
