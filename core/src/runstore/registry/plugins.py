"""The plugin manager: one per store, built from entry points, typed.

Built-in implementations (the ``memory`` backend) are registered exactly like
third-party plugins. ``RUNSTORE_DISABLE_PLUGINS=name1,name2`` blocks plugins
by their entry-point name.

Scanning the installed distributions for entry points is most of what
opening a store costs (it grows with every installed package), so the scan
runs once per process (:func:`entry_points`); each store still gets a fresh
plugin manager. A plugin installed while a process runs is found by the next
process, or after :func:`rescan_entry_points`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import types
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import pluggy

from runstore.model.errors import PluginError
from runstore.model.run import ArtifactRef, RunManifest, RunState, RunSummary
from runstore.spi import hookspecs
from runstore.spi.backends import BackendSpec

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginEntryPoint",
    "Plugins",
    "entry_points",
    "rescan_entry_points",
]

ENTRY_POINT_GROUP = "runstore.plugins"
DISABLE_ENV = "RUNSTORE_DISABLE_PLUGINS"

_log = logging.getLogger("runstore.plugins")


_PARSED: dict[tuple[str, str], pluggy.HookimplOpts | None] = {}
"""Hook options of module-level attributes, parsed once per process (modules do not change)."""
_SPECS: dict[str, pluggy.HookspecOpts | None] = {}
"""The same for the hook specifications (:mod:`runstore.spi.hookspecs`)."""


class _PluginManager(pluggy.PluginManager):
    """Parses each plugin module and the hookspecs once per process: pluggy inspects every
    attribute of a module it registers (``inspect.getattr_static``), most of what opening
    a store cost once entry points were scanned only once."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        if not isinstance(plugin, types.ModuleType):
            return super().parse_hookimpl_opts(plugin, name)
        key = (plugin.__name__, name)
        if key not in _PARSED:
            _PARSED[key] = super().parse_hookimpl_opts(plugin, name)
        return _PARSED[key]

    def parse_hookspec_opts(
        self, module_or_class: types.ModuleType | type, name: str
    ) -> pluggy.HookspecOpts | None:
        if module_or_class is not hookspecs:
            return super().parse_hookspec_opts(module_or_class, name)
        if name not in _SPECS:
            _SPECS[name] = super().parse_hookspec_opts(module_or_class, name)
        return _SPECS[name]


class PluginEntryPoint(NamedTuple):
    """An installed plugin: its entry point and the distribution that provides it."""

    point: importlib.metadata.EntryPoint
    distribution: str | None


@functools.cache
def entry_points() -> tuple[PluginEntryPoint, ...]:
    """The ``runstore.plugins`` entry points, scanned once per process (first one per name)."""
    found: dict[str, PluginEntryPoint] = {}
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = point.dist.name if point.dist is not None else None
        found.setdefault(point.name, PluginEntryPoint(point, dist))
    return tuple(found.values())


def rescan_entry_points() -> None:
    """Forget the scan: the next store sees plugins installed since it ran."""
    entry_points.cache_clear()


class _Installed(NamedTuple):
    """What a store without plugins of its own needs from the installed ones.

    Installed plugins are module-level objects that do not change while the
    process runs, so this is worked out once per process (and entry-point scan).
    """

    names: list[str]
    distributions: dict[str, str]
    backends: dict[str, BackendSpec]
    hooks: frozenset[str]
    """The hooks some installed plugin implements: the others need no plugin manager."""


_INSTALLED: dict[tuple[object, ...], _Installed] = {}


class Plugins:
    """A typed wrapper around a fresh :class:`pluggy.PluginManager`.

    :param plugins: extra plugin objects to register (modules or instances
        with hook implementations), e.g. observers created by the caller.
    :param load_entrypoints: load the ``runstore.plugins`` entry points.

    A store with no plugins of its own builds its manager only when it first
    needs it (an event some installed plugin observes, :meth:`register`):
    which backends and observers are installed is known once per process.
    """

    def __init__(self, plugins: Iterable[object] = (), *, load_entrypoints: bool = True) -> None:
        self._load_entrypoints = load_entrypoints
        self._disabled = frozenset(
            n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()
        )
        self._callers: dict[str, list[tuple[str, Callable[..., Any]]]] = {}
        self._distributions: dict[str, str] = {}
        self._backends: dict[str, BackendSpec] | None = None
        self._pm: pluggy.PluginManager | None = None
        self._installed: _Installed | None = None
        given = list(plugins)
        if given:
            self._build(given)
            return
        key = (load_entrypoints, self._disabled, entry_points() if load_entrypoints else ())
        installed = _INSTALLED.get(key)
        if installed is None:
            pm = self._build([])
            hooks = frozenset(
                name
                for name in dir(pm.hook)
                if name.startswith("runstore_") and getattr(pm.hook, name).get_hookimpls()
            )
            installed = _INSTALLED[key] = _Installed(
                self.names(), dict(self._distributions), self.backends(), hooks
            )
        self._installed = installed
        self._backends = installed.backends

    def _build(self, plugins: list[object]) -> pluggy.PluginManager:
        """Build and validate the plugin manager: installed plugins, then ``plugins``."""
        from runstore.spi import memory

        pm = self._pm = _PluginManager("runstore")
        pm.add_hookspecs(hookspecs)
        for name in self._disabled:
            pm.set_blocked(name)
        if "memory" not in self._disabled:
            pm.register(memory, name="memory")
        if self._load_entrypoints:
            for point, distribution in entry_points():
                if not pm.has_plugin(point.name) and not pm.is_blocked(point.name):
                    self._load(pm, point, distribution)
        for plugin in plugins:
            self._register(plugin)
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise _mismatch(pm, exc) from exc
        return pm

    @property
    def manager(self) -> pluggy.PluginManager:
        return self._build([]) if self._pm is None else self._pm

    def names(self) -> list[str]:
        """Names of the registered plugins (entry-point names for installed ones)."""
        if self._pm is None and self._installed is not None:
            return list(self._installed.names)
        return sorted(n for n, p in self.manager.list_name_plugin() if p is not None)

    def distribution_of(self, plugin_name: str) -> str | None:
        """The distribution that installed the plugin (``None`` for built-in or given ones)."""
        if self._pm is None and self._installed is not None:
            return self._installed.distributions.get(plugin_name)
        return self._distributions.get(plugin_name)

    def _load(
        self,
        pm: pluggy.PluginManager,
        point: importlib.metadata.EntryPoint,
        distribution: str | None,
    ) -> None:
        try:
            plugin = point.load()
            pm.register(plugin, name=point.name)
        except Exception as exc:
            raise PluginError(
                f"runstore plugin {point.name!r} failed to load: {exc}; "
                f"reinstall it or block it with {DISABLE_ENV}={point.name}",
                details={"plugin": point.name, "error": repr(exc)},
            ) from exc
        if distribution is not None:
            self._distributions[point.name] = distribution

    def _register(self, plugin: object) -> None:
        self._callers.clear()
        pm = self.manager
        try:
            pm.register(plugin)
        except pluggy.PluginValidationError as exc:
            raise _mismatch(pm, exc) from exc
        except ValueError as exc:  # the same object or name registered twice
            name = _display_name(pm, plugin)
            raise PluginError(
                f"plugin {name!r} cannot be registered: {exc}; register each plugin once",
                details={"plugin": name},
            ) from exc

    def register(self, plugin: object) -> None:
        """Register an observer after start-up (validated immediately)."""
        self._register(plugin)
        pm = self.manager
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            error = _mismatch(pm, exc)
            pm.unregister(plugin)
            self._callers.clear()
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

            self.manager.hook.runstore_register_backends(register=register)
            self._backends = found
        return self._backends

    # -- events: observers never break the writer ---------------------------------

    def _observers(self, hook: str) -> list[tuple[str, Callable[..., Any]]]:
        """One hook caller per observer of ``hook``, in pluggy's order.

        Calls go through pluggy (so its hook-call monitoring and tracing see
        them), one observer at a time: a failing observer must not hide the
        event from the others. Wrappers need the whole chain: one caller then.
        """
        callers = self._callers.get(hook)
        if callers is None:
            if (
                self._pm is None
                and self._installed is not None
                and hook not in self._installed.hooks
            ):
                return []  # no installed plugin observes it: no manager to build
            pm = self.manager
            caller = getattr(pm.hook, hook)
            impls = caller.get_hookimpls()
            if any(impl.hookwrapper or impl.wrapper for impl in impls):
                callers = [("observers", caller)]
            else:
                plugins = pm.get_plugins()
                callers = [
                    (
                        _display_name(pm, impl.plugin),
                        pm.subset_hook_caller(hook, plugins - {impl.plugin}),
                    )
                    for impl in reversed(impls)  # pluggy calls the list reversed
                ]
            self._callers[hook] = callers
        return callers

    def _notify(self, hook: str, **kwargs: Any) -> None:
        for name, caller in self._observers(hook):
            try:
                caller(**kwargs)
            except Exception:
                _log.exception(
                    "runstore observer %r failed in %s; the store is unaffected", name, hook
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
        "check the hook names and arguments against runstore.spi.hookspecs",
        details={"plugin": name},
    )
