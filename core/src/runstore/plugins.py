"""The plugin manager: one per store, built from entry points, typed.

Built-in implementations (the ``memory`` backend) are registered exactly like
third-party plugins. ``RUNSTORE_DISABLE_PLUGINS=name1,name2`` blocks plugins
by their entry-point name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import pluggy

from runstore import hookspecs
from runstore.backends import BackendSpec
from runstore.errors import PluginError
from runstore.models import ArtifactRef, RunManifest, RunState, RunSummary

__all__ = ["ENTRY_POINT_GROUP", "Plugins"]

ENTRY_POINT_GROUP = "runstore.plugins"
DISABLE_ENV = "RUNSTORE_DISABLE_PLUGINS"

_log = logging.getLogger("runstore.plugins")


class Plugins:
    """A typed wrapper around a fresh :class:`pluggy.PluginManager`.

    :param plugins: extra plugin objects to register (modules or instances
        with hook implementations), e.g. observers created by the caller.
    :param load_entrypoints: load the ``runstore.plugins`` entry points.
    """

    def __init__(self, plugins: Iterable[object] = (), *, load_entrypoints: bool = True) -> None:
        from runstore import memory

        pm = pluggy.PluginManager("runstore")
        pm.add_hookspecs(hookspecs)
        disabled = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
        for name in disabled:
            pm.set_blocked(name)
        if "memory" not in disabled:
            pm.register(memory, name="memory")
        if load_entrypoints:
            try:
                pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
            except Exception as exc:
                raise PluginError(
                    f"a runstore plugin failed to load: {exc}; "
                    f"reinstall it or block it with {DISABLE_ENV}=<name>",
                    details={"error": repr(exc)},
                ) from exc
        for plugin in plugins:
            pm.register(plugin)
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = _display_name(pm, exc.plugin)
            raise PluginError(
                f"plugin {name!r} implements an unknown hook: {exc}; "
                "check the spelling against runstore.hookspecs",
                details={"plugin": name},
            ) from exc
        self._pm = pm
        self._backends: dict[str, BackendSpec] | None = None

    @property
    def manager(self) -> pluggy.PluginManager:
        return self._pm

    def names(self) -> list[str]:
        """Names of the registered plugins (entry-point names for installed ones)."""
        return sorted(n for n, p in self._pm.list_name_plugin() if p is not None)  # not blocked

    def distribution_of(self, plugin_name: str) -> str | None:
        for plugin, dist in self._pm.list_plugin_distinfo():
            if self._pm.get_name(plugin) == plugin_name:
                return str(dist.project_name)
        return None

    def register(self, plugin: object) -> None:
        """Register an observer after start-up (validated immediately)."""
        self._pm.register(plugin)
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = _display_name(self._pm, plugin)
            self._pm.unregister(plugin)
            raise PluginError(
                f"plugin {name!r} implements an unknown hook: {exc}; "
                "check the spelling against runstore.hookspecs",
                details={"plugin": name},
            ) from exc

    def backends(self) -> dict[str, BackendSpec]:
        """Every registered backend by name (collected once)."""
        if self._backends is None:
            found: dict[str, BackendSpec] = {}

            def register(spec: BackendSpec) -> None:
                if not isinstance(spec, BackendSpec):
                    raise PluginError(
                        f"register() takes a runstore.BackendSpec, got {type(spec).__name__}"
                    )
                if spec.name in found:
                    raise PluginError(
                        f"two plugins register a backend named {spec.name!r}; "
                        f"uninstall one or block it with {DISABLE_ENV}",
                        details={"backend": spec.name},
                    )
                found[spec.name] = spec

            self._pm.hook.runstore_register_backends(register=register)
            self._backends = found
        return self._backends

    # -- events: observers never break the writer ---------------------------------

    def _notify(self, hook: str, **kwargs: Any) -> None:
        caller = getattr(self._pm.hook, hook)
        impls = caller.get_hookimpls()
        if any(impl.hookwrapper or impl.wrapper for impl in impls):
            try:
                caller(**kwargs)
            except Exception:
                _log.exception("runstore observer failed in %s; the store is unaffected", hook)
            return
        # One call per observer, in pluggy's order (it calls the list reversed):
        # a failing observer must not hide the event from the others.
        for impl in reversed(impls):
            try:
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception:
                _log.exception(
                    "runstore observer %r failed in %s; the store is unaffected",
                    _display_name(self._pm, impl.plugin),
                    hook,
                )

    def run_created(self, manifest: RunManifest, state: RunState) -> None:
        self._notify("runstore_run_created", manifest=manifest, state=state)

    def state_changed(self, state: RunState) -> None:
        self._notify("runstore_state_changed", state=state)

    def artifact_stored(self, ref: ArtifactRef) -> None:
        self._notify("runstore_artifact_stored", ref=ref)

    def stream_flushed(self, run_id: str, stream: str, record_count: int) -> None:
        self._notify(
            "runstore_stream_flushed", run_id=run_id, stream=stream, record_count=record_count
        )

    def run_finished(self, summary: RunSummary) -> None:
        self._notify("runstore_run_finished", summary=summary)


def _display_name(pm: pluggy.PluginManager, plugin: object) -> str:
    """The plugin's registered name, or its class name for an unnamed object."""
    name = pm.get_name(plugin)
    if name is None or name == str(id(plugin)):
        return type(plugin).__qualname__
    return name
