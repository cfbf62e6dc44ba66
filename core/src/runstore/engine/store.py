"""A store's backends (one per concern), plugins and policies, and the runs it has open."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, get_args

from runstore.engine.core import LIVE_OWNERS, RunCore
from runstore.model.errors import ConflictError, InvalidInputError, UnsupportedError
from runstore.model.run import RunState
from runstore.registry.config import parse_target, select_backend
from runstore.registry.plugins import Plugins
from runstore.spi.backends import (
    ArtifactBackend,
    BackendSpec,
    Concern,
    Durability,
    LogBackend,
    StateBackend,
)

__all__ = [
    "DEFAULT_HEARTBEAT_SECONDS",
    "MISSED_BEATS",
    "StoreCore",
    "new_owner_token",
    "owner_stale_after",
    "released_here",
]

DEFAULT_HEARTBEAT_SECONDS = 30.0
"""How often a live run refreshes ``heartbeat_at`` (``heartbeat_interval`` option)."""

MISSED_BEATS = 3
"""Heartbeats a live writer may miss before ``resume_run`` takes its run over."""

NO_HEARTBEAT_STALE_AFTER = timedelta(minutes=5)
"""When a writer is taken for dead if it sends no heartbeat (``heartbeat_interval=0``)."""


def owner_stale_after(state: RunState) -> timedelta:
    """How old the heartbeat of ``state``'s owner may be while it counts as alive."""
    interval = state.heartbeat_seconds
    if not interval:
        return NO_HEARTBEAT_STALE_AFTER
    return timedelta(seconds=MISSED_BEATS * interval)


def new_owner_token() -> str:
    """A fresh ownership token: ``host:pid:random``, readable in a conflict message."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"


def released_here(token: str) -> bool:
    """The writer that holds ``token`` is known to be gone: it is this process's and
    holds the run no more (its release could not be stored, say), or it is another
    process of this host that no longer exists (killed). A reused pid counts as
    alive: the heartbeat decides then."""
    host, _, rest = token.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return token not in LIVE_OWNERS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


_RELABEL_TRIES = 20


_INTERFACES: dict[Concern, type] = {
    "state": StateBackend,
    "logs": LogBackend,
    "artifacts": ArtifactBackend,
}


@dataclass
class _Chosen:
    spec: BackendSpec
    backend: object


class StoreCore:
    """A store's backends (one per concern), plugins and policies, and its open runs."""

    def __init__(
        self,
        url: str,
        *,
        routes: dict[Concern, str | None],
        durability: Durability | None,
        heartbeat_interval: float,
        plugins: Iterable[object],
        options: dict[str, Any],
    ) -> None:
        if durability is not None and durability not in get_args(Durability):
            raise InvalidInputError(
                f"unknown durability {durability!r}; "
                f"choose one of {', '.join(get_args(Durability))}",
                details={"durability": durability},
            )
        self.url = url
        self.plugins = Plugins(plugins)
        chosen, self._objects = _build_backends(self.plugins, url, routes, options, durability)
        self.specs: dict[Concern, BackendSpec] = {c: ch.spec for c, ch in chosen.items()}
        self.state: StateBackend = chosen["state"].backend  # type: ignore[assignment]
        self.logs: LogBackend = chosen["logs"].backend  # type: ignore[assignment]
        self.artifacts: ArtifactBackend = chosen["artifacts"].backend  # type: ignore[assignment]
        self.durability = durability
        self.heartbeat_interval = heartbeat_interval
        self.loop_bound = not all(
            getattr(getattr(b, "capabilities", None), "any_event_loop", True) for b in self._objects
        )
        """Some backend's clients belong to one event loop (see :meth:`check_loop`)."""
        self.inline = all(
            getattr(getattr(b, "capabilities", None), "inline", False) for b in self._objects
        )
        """Every backend may run in the caller's thread (the sync API's portal runs inline)."""
        self.home: asyncio.AbstractEventLoop | None = None
        self.closed = False
        # Strong references: a run the caller dropped unfinished still holds open
        # streams (and their locks) until aclose() releases it.
        self.live: set[RunCore] = set()

    def check_loop(self, *, closing: bool = False) -> None:
        """Refuse a call from another event loop than the one that first used a store
        whose backend is bound to its loop (it would fail deep in the client, or hang).
        ``closing``: that loop has ended, so closing from another one is all that is left."""
        if not self.loop_bound or (closing and self.closed):
            return
        loop = asyncio.get_running_loop()
        if self.home is None or (closing and self.home.is_closed()):
            self.home = loop
        elif loop is not self.home:
            raise InvalidInputError(
                "this store was first used on another event loop, and its "
                "backend's clients belong to that loop: open a store in each loop (inside "
                "each asyncio.run()), or use the sync runstore.open(), which works from "
                "any thread",
                details={"url": self.url},
            )

    async def aclose(self) -> None:
        """Release open runs (their records stay durable; they stay unfinished) and backends.
        Idempotent."""
        if self.closed:
            return
        self.closed = True
        for run in list(self.live):
            await run.release()
        for obj in self._objects:
            close = getattr(obj, "aclose", None)
            if close is not None:
                await close()

    async def relabel(
        self,
        run_id: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> RunState:
        """Change a run's metadata and tags, whoever writes it and whether it finished.

        The change is made on the stored state, compare-and-swap, retried on a
        newer state when a writer (a heartbeat, say) got there first. The run's
        writers, in this process or another, rebuild their next write on the new
        labels (see :meth:`RunCore.write_state`).
        """
        for _ in range(_RELABEL_TRIES):
            manifest = await self.state.read_manifest(run_id)
            detached = RunCore(self, manifest, await self.state.read_state(run_id), live=False)
            detached.summary = await self.state.read_summary(run_id)
            try:
                return await detached.relabel(metadata, add=add, remove=remove, beat=False)
            except ConflictError:
                continue  # written meanwhile: try again on the newer state
        raise ConflictError(
            f"run {run_id!r} kept changing while its labels were written "
            f"({_RELABEL_TRIES} tries); try again",
            details={"run_id": run_id},
        )


def _build_backends(
    plugins: Plugins,
    url: str,
    routes: dict[Concern, str | None],
    options: dict[str, Any],
    durability: Durability | None,
) -> tuple[dict[Concern, _Chosen], list[object]]:
    built: dict[str, _Chosen] = {}
    chosen: dict[Concern, _Chosen] = {}
    specs = plugins.backends()
    for concern in ("state", "logs", "artifacts"):
        concern_url = routes.get(concern) or url
        if concern_url not in built:
            forced, target = parse_target(concern_url, options if concern_url == url else None)
            target = dataclasses.replace(target, durability=durability)
            spec = select_backend(forced, target, specs)
            built[concern_url] = _Chosen(spec, spec.factory(target))
        this = built[concern_url]
        if concern not in this.spec.concerns or not isinstance(this.backend, _INTERFACES[concern]):
            raise UnsupportedError(
                f"backend {this.spec.name!r} does not store {concern}; route it to another "
                f"backend, e.g. runstore.open({url!r}, {concern}='./runs')",
                details={"backend": this.spec.name, "concern": concern},
            )
        chosen[concern] = this
    return chosen, [ch.backend for ch in built.values()]
