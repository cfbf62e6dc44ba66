"""The plugin manager: one per store, built from entry points, typed.

Built-in implementations (the ``memory`` backend) are registered exactly like
third-party plugins. ``RUNSTORE_DISABLE_PLUGINS=name1,name2`` blocks plugins
by their entry-point name.
"""

from __future__ import annotations

import importlib.metadata
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
                name = _failing_entry_point(pm, exc) or "<name>"
                raise PluginError(
                    f"runstore plugin {name!r} failed to load: {exc}; "
                    f"reinstall it or block it with {DISABLE_ENV}={name}",
                    details={"plugin": name, "error": repr(exc)},
                ) from exc
        self._pm = pm
        for plugin in plugins:
            self._register(plugin)
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise _mismatch(pm, exc) from exc
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

    def _register(self, plugin: object) -> None:
        try:
            self._pm.register(plugin)
        except pluggy.PluginValidationError as exc:
            raise _mismatch(self._pm, exc) from exc
        except ValueError as exc:  # the same object or name registered twice
            name = _display_name(self._pm, plugin)
            raise PluginError(
                f"plugin {name!r} cannot be registered: {exc}; register each plugin once",
                details={"plugin": name},
            ) from exc

    def register(self, plugin: object) -> None:
        """Register an observer after start-up (validated immediately)."""
        self._register(plugin)
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as exc:
            error = _mismatch(self._pm, exc)
            self._pm.unregister(plugin)
            raise error from exc

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
    """The plugin's registered name, else its module or class name (never an id)."""
    name = pm.get_name(plugin)
    if name is None or name == str(id(plugin)):
        return str(getattr(plugin, "__name__", None) or type(plugin).__qualname__)
    return name


def _mismatch(pm: pluggy.PluginManager, exc: pluggy.PluginValidationError) -> PluginError:
    """A hook implementation that matches no hookspec (misspelled name or arguments)."""
    name = _display_name(pm, exc.plugin)
    return PluginError(
        f"plugin {name!r} does not match runstore's hooks: {exc}; "
        "check the hook names and arguments against runstore.hookspecs",
        details={"plugin": name},
    )


def _failing_entry_point(pm: pluggy.PluginManager, exc: Exception) -> str | None:
    """Which entry point failed to load (asked only after loading them failed)."""
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.is_blocked(point.name):
            continue
        try:
            loaded = point.load()
        except Exception:
            return point.name
        if isinstance(exc, pluggy.PluginValidationError) and loaded is exc.plugin:
            return point.name
    return None
