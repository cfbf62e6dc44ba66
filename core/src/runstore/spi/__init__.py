"""What a backend author imports: the storage interfaces, the models and errors they
speak, the layout every backend produces and the hook markers.

``from runstore.spi import StateBackend, LogBackend, ArtifactBackend, BackendSpec, hookimpl``

Modules: :mod:`~.backends` (one abstract class per concern, capabilities,
registration), :mod:`~.kv` (a key-value store's five primitives, built into a
backend for all three concerns), :mod:`~.buffered` (a stream writer that
buffers lines and stores each commit as one segment), :mod:`~.hookspecs` (the
plugin hooks), :mod:`~.layout` (paths of the Windtunnel tree) and
:mod:`~.memory` (the in-memory reference backend the conformance kit compares
every backend against). Imports only :mod:`runstore.model`.

The run-index query language (:mod:`runstore.model.query`) and its reference
semantics (:mod:`runstore.model.selection`) are here for backends that push
``where``, ``order_by`` and page tokens down; a backend whose run index is a SQL
table compiles them with a dialect of :class:`~.sql.SQLCompiler` (:mod:`~.sql`).
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
from runstore.model.query import (
    DEFAULT_ORDER,
    And,
    Compare,
    Contains,
    Expr,
    Field,
    In,
    IsNull,
    Like,
    Not,
    Or,
    OrderKey,
    complete_order,
    parse_order_by,
    parse_where,
    render,
    render_order,
)
from runstore.model.run import RunManifest, RunRecord, RunState, RunStatus, RunSummary
from runstore.model.selection import (
    Page,
    decode_page_token,
    encode_page_token,
    field_value,
    matches,
    paginate,
    query_fingerprint,
    select,
    sort_values,
)
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
from runstore.spi.buffered import BatchPolicy, BufferedStreamWriter
from runstore.spi.hookspecs import hookimpl
from runstore.spi.kv import KeyValueStore, KVBackend, MemoryKV
from runstore.spi.sql import SQLCompiler

__all__ = [
    "ALL_CONCERNS",
    "DEFAULT_ORDER",
    "AlreadyExistsError",
    "And",
    "ArtifactBackend",
    "ArtifactSource",
    "BackendNotFoundError",
    "BackendSpec",
    "BackendUnavailableError",
    "BatchPolicy",
    "BufferedStreamWriter",
    "Capabilities",
    "Compare",
    "Concern",
    "ConflictError",
    "Contains",
    "CorruptError",
    "Durability",
    "Expr",
    "Field",
    "In",
    "InvalidInputError",
    "IsNull",
    "KVBackend",
    "KeyValueStore",
    "Like",
    "LogBackend",
    "MemoryKV",
    "Not",
    "NotFoundError",
    "Or",
    "OrderKey",
    "Page",
    "PermissionDeniedError",
    "RunManifest",
    "RunQuery",
    "RunRecord",
    "RunState",
    "RunStatus",
    "RunSummary",
    "RunstoreError",
    "SQLCompiler",
    "StateBackend",
    "StorageIOError",
    "StoredArtifact",
    "StreamWriter",
    "Target",
    "UnsupportedError",
    "complete_order",
    "decode_page_token",
    "encode_page_token",
    "field_value",
    "hash_source",
    "hookimpl",
    "layout",
    "matches",
    "paginate",
    "parse_order_by",
    "parse_where",
    "query_fingerprint",
    "render",
    "render_order",
    "select",
    "sort_values",
]
