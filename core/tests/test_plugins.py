"""The plugin system: one fresh manager per store, typed events, start-up validation."""

from __future__ import annotations

import importlib.metadata
import inspect
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import runstore
from runstore import hookspecs
from runstore.model.errors import BackendNotFoundError, PluginError
from runstore.model.run import ArtifactRef, RunManifest, RunState, RunSummary
from runstore.registry.plugins import Plugins, rescan_entry_points
from runstore.spi.backends import BackendSpec, Target
from runstore.spi.memory import MemoryBackend

_names = itertools.count()


@pytest.fixture
def url() -> str:
    return f"memory://plugins-{os.getpid()}-{next(_names)}"


class Recorder:
    """An observer that records every event it receives."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @runstore.hookimpl
    def runstore_run_created(self, manifest: RunManifest, state: RunState) -> None:
        self.events.append(("run_created", (manifest, state)))

    @runstore.hookimpl
    def runstore_state_changed(self, state: RunState) -> None:
        self.events.append(("state_changed", state))

    @runstore.hookimpl
    def runstore_artifact_stored(self, ref: ArtifactRef) -> None:
        self.events.append(("artifact_stored", ref))

    @runstore.hookimpl
    def runstore_stream_flushed(self, run_id: str, stream: str, record_count: int) -> None:
        self.events.append(("stream_flushed", (run_id, stream, record_count)))

    @runstore.hookimpl
    def runstore_run_finished(self, summary: RunSummary) -> None:
        self.events.append(("run_finished", summary))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


class ReadingObserver:
    """Reads the reported data back through a second store while the event is delivered."""

    def __init__(self, reader: runstore.Store) -> None:
        self.reader = reader
        self.seen: list[str] = []

    @runstore.hookimpl
    def runstore_run_created(self, manifest: RunManifest, state: RunState) -> None:
        view = self.reader.get_run(manifest.run_id)
        assert view.manifest == manifest
        assert view.state == state
        self.seen.append("run_created")

    @runstore.hookimpl
    def runstore_state_changed(self, state: RunState) -> None:
        assert self.reader.get_run(state.run_id).state == state
        self.seen.append(f"state_changed:{state.status}")

    @runstore.hookimpl
    def runstore_artifact_stored(self, ref: ArtifactRef) -> None:
        view = self.reader.get_run(ref.run_id)
        assert view.read_artifact(ref.name, verify=True) == b'{"ok": true}'
        assert ref in view.artifacts()
        self.seen.append("artifact_stored")

    @runstore.hookimpl
    def runstore_stream_flushed(self, run_id: str, stream: str, record_count: int) -> None:
        assert len(list(self.reader.get_run(run_id).read(stream))) == record_count
        self.seen.append(f"stream_flushed:{stream}")

    @runstore.hookimpl
    def runstore_run_finished(self, summary: RunSummary) -> None:
        view = self.reader.get_run(summary.run_id)
        assert view.summary == summary
        assert view.state.status == summary.status
        self.seen.append("run_finished")


class Raising:
    """An observer that fails on every event."""

    @runstore.hookimpl
    def runstore_run_created(self, manifest: RunManifest, state: RunState) -> None:
        raise RuntimeError("observer bug")

    @runstore.hookimpl
    def runstore_artifact_stored(self, ref: ArtifactRef) -> None:
        raise RuntimeError("observer bug")

    @runstore.hookimpl
    def runstore_run_finished(self, summary: RunSummary) -> None:
        raise RuntimeError("observer bug")


class Misspelled:
    @runstore.hookimpl
    def runstore_run_finised(self, summary: RunSummary) -> None:
        """Misspelled on purpose: 'finised'."""


class WrongArgument:
    @runstore.hookimpl
    def runstore_run_finished(self, summry: RunSummary) -> None:
        """Misspelled argument: 'summry'."""


def _write_one_run(store: runstore.Store) -> runstore.Run:
    with store.create_run(run_id="run_1") as run:
        run.append("instances", {"instance_id": "i1", "status": "passed"})
        run.put_artifact("i1/out.json", b'{"ok": true}', kind="phase_output")
    return run


# -- events --------------------------------------------------------------------------


def test_observer_receives_every_event_in_order(url: str) -> None:
    recorder = Recorder()
    with runstore.open(url, plugins=[recorder], heartbeat_interval=0) as store:
        _write_one_run(store)
    assert recorder.kinds() == [
        "run_created",
        "state_changed",
        "artifact_stored",
        "stream_flushed",
        "stream_flushed",
        "state_changed",
        "run_finished",
    ]


def test_events_carry_the_stored_objects(url: str) -> None:
    recorder = Recorder()
    with runstore.open(url, plugins=[recorder], heartbeat_interval=0) as store:
        run = _write_one_run(store)
        view = store.get_run("run_1")
    events = dict(recorder.events[:3])
    manifest, first_state = events["run_created"]
    assert manifest == view.manifest
    assert (first_state.status, first_state.revision) == ("created", 0)
    assert events["state_changed"].status == "running"
    assert events["artifact_stored"] == view.artifacts()[0]
    assert events["artifact_stored"].kind == "phase_output"
    flushed = [payload for kind, payload in recorder.events if kind == "stream_flushed"]
    assert sorted(flushed) == [("run_1", "artifacts", 1), ("run_1", "instances", 1)]
    assert recorder.events[-2] == ("state_changed", view.state)
    assert recorder.events[-1] == ("run_finished", view.summary)
    assert run.summary == view.summary


def test_events_arrive_only_after_the_data_is_readable(url: str) -> None:
    with runstore.open(url) as reader:
        observer = ReadingObserver(reader)
        with runstore.open(url, plugins=[observer], heartbeat_interval=0) as store:
            _write_one_run(store)
    assert observer.seen == [
        "run_created",
        "state_changed:running",
        "artifact_stored",
        "stream_flushed:instances",
        "stream_flushed:artifacts",
        "state_changed:succeeded",
        "run_finished",
    ]


def test_identical_reput_does_not_report_the_artifact_again(url: str) -> None:
    recorder = Recorder()
    with runstore.open(url, plugins=[recorder]) as store, store.create_run() as run:
        run.put_artifact("a.json", b"{}")
        run.put_artifact("a.json", b"{}")
    assert recorder.kinds().count("artifact_stored") == 1


def test_flush_reports_each_stream_with_its_record_count(url: str) -> None:
    recorder = Recorder()
    with runstore.open(url, plugins=[recorder]) as store:
        run = store.create_run(run_id="run_f")
        for n in range(3):
            run.append("steps", {"n": n})
        run.flush()
        assert recorder.events[-1] == ("stream_flushed", ("run_f", "steps", 3))
        run.finish()


def test_heartbeats_are_not_reported_as_state_changes(url: str) -> None:
    recorder = Recorder()
    with runstore.open(url, plugins=[recorder], heartbeat_interval=0.005) as store:
        run = store.create_run(run_id="run_beat")
        run.start()
        time.sleep(0.05)
        assert store.get_run("run_beat").state.revision > 1
        run.finish()
    assert recorder.kinds().count("state_changed") == 2


def test_observer_on_one_store_does_not_see_another_stores_events(url: str) -> None:
    recorder = Recorder()
    with runstore.open(url, plugins=[recorder]), runstore.open(url) as other:
        _write_one_run(other)
    assert recorder.events == []


def test_each_plugins_instance_has_its_own_manager() -> None:
    first, second = Plugins(), Plugins()
    assert first.manager is not second.manager
    first.register(Recorder())
    assert len(first.manager.get_plugins()) == len(second.manager.get_plugins()) + 1


def test_raising_observer_does_not_break_the_writer(url: str) -> None:
    with runstore.open(url, plugins=[Raising()]) as store:
        _write_one_run(store)
        view = store.get_run("run_1")
    assert view.state.status == "succeeded"
    assert view.read_artifact("i1/out.json") == b'{"ok": true}'


def test_raising_observer_is_logged_on_the_plugins_logger(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="runstore.plugins"),
        runstore.open(url, plugins=[Raising()]) as store,
    ):
        _write_one_run(store)
    failures = [r for r in caplog.records if r.name == "runstore.plugins"]
    assert len(failures) == 3
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failures)
    assert "runstore_artifact_stored" in failures[1].getMessage()


def test_raising_observer_does_not_hide_events_from_other_observers(url: str) -> None:
    before, after = Recorder(), Recorder()
    with runstore.open(url, plugins=[before, Raising(), after]) as store:
        _write_one_run(store)
    assert before.kinds() == after.kinds()
    assert "artifact_stored" in before.kinds()


# -- start-up validation -----------------------------------------------------------------


def test_misspelled_hook_fails_at_startup_naming_plugin_and_hook(url: str) -> None:
    with pytest.raises(PluginError) as info:
        runstore.open(url, plugins=[Misspelled()])
    assert info.value.code == "plugin_error"
    assert "Misspelled" in info.value.message
    assert "runstore_run_finised" in info.value.message
    assert info.value.details["plugin"] == "Misspelled"


def test_hook_with_a_misspelled_argument_fails_at_startup_naming_plugin_and_argument(
    url: str,
) -> None:
    with pytest.raises(PluginError) as info:
        runstore.open(url, plugins=[WrongArgument()])
    assert info.value.code == "plugin_error"
    assert "WrongArgument" in info.value.message
    assert "summry" in info.value.message


def test_registering_one_observer_twice_is_a_plugin_error(url: str) -> None:
    recorder = Recorder()
    with pytest.raises(PluginError) as info:
        runstore.open(url, plugins=[recorder, recorder])
    assert info.value.code == "plugin_error"
    assert "Recorder" in info.value.message


def test_misspelled_hook_registered_later_is_refused_and_not_kept() -> None:
    plugins = Plugins()
    count = len(plugins.manager.get_plugins())
    with pytest.raises(PluginError) as info:
        plugins.register(Misspelled())
    assert info.value.code == "plugin_error"
    assert "runstore_run_finised" in info.value.message
    assert len(plugins.manager.get_plugins()) == count


# fsspec and local are blocked too so that only the env var's parsing is under test.
@pytest.mark.parametrize(
    "disabled", ["memory,fsspec,local", " fsspec , memory , local ", "memory,fsspec,local,"]
)
def test_disable_env_blocks_a_named_plugin(
    url: str, disabled: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNSTORE_DISABLE_PLUGINS", disabled)
    assert "memory" not in Plugins().names()
    with pytest.raises(BackendNotFoundError) as info:
        runstore.open(url)
    assert info.value.code == "backend_not_found"


def test_builtin_memory_backend_is_registered_like_a_plugin() -> None:
    plugins = Plugins()
    assert "memory" in plugins.names()
    spec = plugins.backends()["memory"]
    assert (spec.schemes, spec.distribution) == (("memory",), "runstore")


class _Registers:
    def __init__(self, *specs: object) -> None:
        self.specs = specs

    @runstore.hookimpl
    def runstore_register_backends(self, register: Callable[[Any], None]) -> None:
        for spec in self.specs:
            register(spec)


def _memory_factory(target: Target) -> MemoryBackend:
    return MemoryBackend(target.path)


def test_registering_something_other_than_a_backend_spec_is_a_plugin_error(url: str) -> None:
    with pytest.raises(PluginError) as info:
        runstore.open(url, plugins=[_Registers({"name": "dict"})])
    assert info.value.code == "plugin_error"
    assert "BackendSpec" in info.value.message
    assert "dict" in info.value.message


def test_two_backends_with_one_name_is_a_plugin_error(url: str) -> None:
    spec = BackendSpec(name="memory", factory=_memory_factory, schemes=("memory2",))
    with pytest.raises(PluginError) as info:
        runstore.open(url, plugins=[_Registers(spec)])
    assert info.value.code == "plugin_error"
    assert "'memory'" in info.value.message
    assert info.value.details == {"backend": "memory"}


def test_one_plugin_may_register_several_backends(url: str) -> None:
    specs = [
        BackendSpec(name=f"extra{n}", factory=_memory_factory, schemes=(f"extra{n}",))
        for n in range(2)
    ]
    with runstore.open("extra1://x", plugins=[_Registers(*specs)]) as store:
        assert store.backend_names["state"] == "extra1"


# -- hookspecs are documented -------------------------------------------------------------


def _hookspecs() -> Iterator[tuple[str, Callable[..., object]]]:
    for name, function in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("runstore_"):
            yield name, function


def test_every_hook_is_prefixed_with_the_project_name() -> None:
    plugins = Plugins()
    names = [name for name in vars(plugins.manager.hook) if not name.startswith("_")]
    assert names
    assert all(name.startswith("runstore_") for name in names)
    assert sorted(names) == sorted(name for name, _ in _hookspecs())


@pytest.mark.parametrize(("name", "function"), [pytest.param(n, f, id=n) for n, f in _hookspecs()])
def test_every_hookspec_documents_each_parameter_and_its_version(
    name: str, function: Callable[..., object]
) -> None:
    doc = inspect.getdoc(function)
    assert doc, f"{name} has no docstring"
    for parameter in inspect.signature(function).parameters:
        assert f":param {parameter}:" in doc, f"{name} does not document {parameter}"
    assert ".. versionadded::" in doc
    prose = " ".join(doc.split())
    assert "Every implementation is called" in prose or "Stops at first non-None result" in prose


# -- discovery cost and pluggy's own tooling -------------------------------------------


def test_entry_points_are_scanned_once_per_process(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans = 0
    real = importlib.metadata.entry_points

    def counting(**kwargs: Any) -> Any:
        nonlocal scans
        scans += 1
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", counting)
    rescan_entry_points()
    try:
        for _ in range(3):
            runstore.open(url).close()
    finally:
        rescan_entry_points()
    assert scans == 1


def test_each_store_still_gets_its_own_plugin_manager(url: str) -> None:
    recorder = Recorder()
    with runstore.open(url, plugins=[recorder]) as watched, runstore.open(url) as other:
        assert watched.aio.plugins.manager is not other.aio.plugins.manager
        other.create_run(run_id="run_other").finish()
    assert recorder.events == []


def test_observer_events_go_through_pluggy_so_hook_monitoring_sees_them(url: str) -> None:
    seen: list[str] = []
    with runstore.open(url, plugins=[Recorder()]) as store:
        store.aio.plugins.manager.add_hookcall_monitoring(
            before=lambda name, _impls, _kwargs: seen.append(name),
            after=lambda _outcome, _name, _impls, _kwargs: None,
        )
        store.create_run(run_id="run_watched").finish()
    assert "runstore_run_created" in seen
    assert "runstore_run_finished" in seen
