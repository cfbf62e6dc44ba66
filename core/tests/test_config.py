"""Config strings: which backend serves a store, with which options, per concern."""

from __future__ import annotations

import asyncio
import importlib.metadata
import itertools
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import runstore
from runstore.model.errors import (
    BackendNotFoundError,
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
)
from runstore.registry.config import DEFAULT_STORE, default_store_url, parse_target
from runstore.spi.backends import BackendSpec, Target
from runstore.spi.memory import MemoryBackend

_names = itertools.count()


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


@pytest.fixture
def only_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the built-in memory backend: installed plugins are blocked."""
    installed = importlib.metadata.entry_points(group="runstore.plugins").names
    monkeypatch.setenv("RUNSTORE_DISABLE_PLUGINS", ",".join(sorted(installed)))


class Probe:
    """A plugin registering backends that remember the targets they were built for."""

    def __init__(self) -> None:
        self.targets: list[Target] = []

    def _factory(self, target: Target) -> MemoryBackend:
        self.targets.append(target)
        return MemoryBackend(_unique("probe"))

    @runstore.hookimpl
    def runstore_register_backends(self, register: Callable[[BackendSpec], None]) -> None:
        register(BackendSpec(name="probe", factory=self._factory, schemes=("probe",)))
        register(
            BackendSpec(
                name="artonly",
                factory=self._factory,
                schemes=("artonly",),
                concerns=frozenset({"artifacts"}),
            )
        )


# -- parsing --------------------------------------------------------------------


@pytest.mark.parametrize("url", ["runs", "./runs"])
def test_relative_path_is_the_local_filesystem_under_the_working_directory(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    forced, target = parse_target(url)
    expected = str(tmp_path / "runs")
    assert forced is None
    assert target == Target(url=expected, scheme="file", path=expected, options={})


def test_absolute_path_is_the_local_filesystem() -> None:
    forced, target = parse_target("/abs/runs")
    assert (forced, target.scheme, target.path) == (None, "file", "/abs/runs")


def test_home_relative_path_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert parse_target("~/runs")[1].path == str(tmp_path / "runs")


def test_bare_path_keeps_a_question_mark_as_part_of_the_name() -> None:
    _, target = parse_target("/abs/runs?n=3")
    assert (target.path, target.options) == ("/abs/runs?n=3", {})


def test_file_url_is_the_local_filesystem() -> None:
    forced, target = parse_target("file:///abs/runs")
    assert forced is None
    assert (target.scheme, target.path, target.url) == ("file", "/abs/runs", "file:///abs/runs")


def test_file_url_with_localhost_is_the_local_filesystem() -> None:
    assert parse_target("file://localhost/abs")[1].path == "/abs"


def test_file_url_percent_escapes_are_decoded_like_path_as_uri() -> None:
    path = Path("/abs/my runs/ü")
    assert parse_target(path.as_uri())[1].path == str(path)


def test_file_url_with_a_remote_host_is_refused() -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_target("file://host/x")
    assert info.value.code == "invalid_input"
    assert "file:///absolute/path" in info.value.message


@pytest.mark.parametrize("url", ["", "   "], ids=["empty", "blank"])
def test_empty_config_string_is_refused(url: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_target(url)
    assert info.value.code == "invalid_input"


def test_memory_url_names_the_store() -> None:
    forced, target = parse_target("memory://name")
    assert (forced, target.scheme, target.path, target.url) == (
        None,
        "memory",
        "name",
        "memory://name",
    )


def test_scheme_is_case_insensitive() -> None:
    assert parse_target("MEMORY://name")[1].scheme == "memory"


def test_backend_prefix_forces_a_backend_by_name() -> None:
    forced, target = parse_target("fsspec+memory://x")
    assert (forced, target.scheme, target.url) == ("fsspec", "memory", "memory://x")


def test_query_parameters_become_typed_options_and_leave_the_url() -> None:
    _, target = parse_target("s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000&anon=true&n=3")
    assert target.options == {"endpoint_url": "http://127.0.0.1:9000", "anon": True, "n": 3}
    assert target.url == "s3://bucket/prefix"
    assert target.path == "bucket/prefix"


def test_false_and_negative_numbers_are_typed() -> None:
    _, target = parse_target("s3://b?anon=FALSE&retries=-1&name=x1")
    assert target.options == {"anon": False, "retries": -1, "name": "x1"}


def test_keyword_options_override_query_parameters() -> None:
    _, target = parse_target("s3://b/p?n=3&anon=true", {"n": 4})
    assert target.options == {"n": 4, "anon": True}


# -- the default store ------------------------------------------------------------


def test_default_store_is_runs_in_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNSTORE_URL", raising=False)
    assert default_store_url() == DEFAULT_STORE == "./runs"


def test_runstore_url_environment_variable_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"memory://{_unique('env')}"
    monkeypatch.setenv("RUNSTORE_URL", url)
    with runstore.open() as store:
        assert store.url == url
        assert store.backend_names == {"state": "memory", "logs": "memory", "artifacts": "memory"}


@pytest.mark.parametrize("url", ["", "  "], ids=["empty", "blank"])
def test_empty_store_string_is_refused_not_taken_as_the_default(url: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        runstore.open(url)
    assert info.value.code == "invalid_input"


@pytest.mark.parametrize("url", [42, b"memory://x"], ids=["int", "bytes"])
def test_store_that_is_not_a_string_is_refused(url: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        runstore.open(url)  # type: ignore[arg-type]
    assert info.value.code == "invalid_input"


# -- backend selection --------------------------------------------------------------


@pytest.mark.usefixtures("only_core")
def test_unknown_scheme_names_the_installed_backends() -> None:
    with pytest.raises(BackendNotFoundError) as info:
        runstore.open("nosuch://x")
    error = info.value
    assert error.code == "backend_not_found"
    assert isinstance(error, LookupError)
    assert "nosuch://" in error.message
    assert "installed: memory (memory)" in error.message
    assert error.details["installed"] == ["memory"]


@pytest.mark.usefixtures("only_core")
def test_s3_without_the_fsspec_plugin_names_the_package_to_install() -> None:
    with pytest.raises(BackendNotFoundError) as info:
        runstore.open("s3://bucket/prefix")
    assert info.value.code == "backend_not_found"
    assert "install runstore-fsspec[s3]" in info.value.message
    assert info.value.details["package"] == "runstore-fsspec[s3]"


@pytest.mark.usefixtures("only_core")
def test_path_without_the_local_plugin_names_runstore_local(tmp_path: Path) -> None:
    with pytest.raises(BackendNotFoundError) as info:
        runstore.open(str(tmp_path / "runs"))
    assert info.value.code == "backend_not_found"
    assert "install runstore-local" in info.value.message


@pytest.mark.usefixtures("only_core")
def test_forcing_an_uninstalled_backend_is_backend_not_found() -> None:
    with pytest.raises(BackendNotFoundError) as info:
        runstore.open("nosuch+memory://x")
    assert info.value.code == "backend_not_found"
    assert "'nosuch'" in info.value.message
    assert "installed: memory" in info.value.message
    assert info.value.details["backend"] == "nosuch"


@pytest.mark.usefixtures("only_core")
def test_forcing_fsspec_when_it_is_not_installed_is_backend_not_found() -> None:
    with pytest.raises(BackendNotFoundError) as info:
        runstore.open("fsspec+memory://x")
    assert info.value.details["backend"] == "fsspec"


def test_forced_backend_receives_the_target_of_the_other_scheme() -> None:
    probe = Probe()
    with runstore.open("probe+memory://x", plugins=[probe]) as store:
        assert store.backend_names["state"] == "probe"
    assert [(t.scheme, t.path) for t in probe.targets] == [("memory", "x")]


def test_scheme_selects_the_backend_claiming_it() -> None:
    probe = Probe()
    with runstore.open("probe://x", plugins=[probe]) as store:
        assert set(store.backend_names.values()) == {"probe"}
    assert probe.targets[0].url == "probe://x"


def test_backend_factory_receives_typed_query_options_overridden_by_keywords() -> None:
    probe = Probe()
    with runstore.open("probe://x?endpoint_url=http://h:9000&anon=true&n=3", n=4, plugins=[probe]):
        pass
    assert probe.targets[0].options == {"endpoint_url": "http://h:9000", "anon": True, "n": 4}


def test_memory_backend_refuses_options() -> None:
    with pytest.raises(InvalidInputError) as info:
        runstore.open("memory://x?anon=true")
    assert info.value.code == "invalid_input"
    assert "anon" in info.value.message


def test_unknown_durability_is_refused() -> None:
    with pytest.raises(InvalidInputError) as info:
        runstore.open("memory://x", durability="sometimes")  # type: ignore[arg-type]
    assert info.value.code == "invalid_input"
    assert "flush" in info.value.message


# -- routing concerns ----------------------------------------------------------------


def _read_artifact(backend: MemoryBackend, run_id: str, name: str) -> bytes:
    async def read() -> bytes:
        return b"".join([chunk async for chunk in backend.read_chunks(run_id, name)])

    return asyncio.run(read())


def test_artifacts_routed_to_another_url_land_in_that_backend() -> None:
    a, b = _unique("a"), _unique("b")
    with runstore.open(f"memory://{a}", artifacts=f"memory://{b}") as store:
        with store.create_run(run_id="run_1") as run:
            run.put_artifact("report.json", b"{}")
        assert _read_artifact(MemoryBackend(b), "run_1", "report.json") == b"{}"
        with pytest.raises(NotFoundError):
            _read_artifact(MemoryBackend(a), "run_1", "report.json")
        assert store.get_run("run_1").read_artifact("report.json") == b"{}"


def test_routed_concern_is_served_by_the_routed_backend() -> None:
    probe = Probe()
    with runstore.open(f"memory://{_unique('m')}", logs="probe://logs", plugins=[probe]) as store:
        assert store.backend_names == {"state": "memory", "logs": "probe", "artifacts": "memory"}
    assert [t.url for t in probe.targets] == ["probe://logs"]


def test_two_concerns_routed_to_one_url_share_one_backend_object() -> None:
    probe = Probe()
    with runstore.open(
        f"memory://{_unique('m')}", logs="probe://x", artifacts="probe://x", plugins=[probe]
    ) as store:
        logs: object = store.aio.log_backend
        assert logs is store.aio.artifact_backend
    assert len(probe.targets) == 1


def test_backend_that_does_not_serve_a_concern_is_unsupported_for_it() -> None:
    with pytest.raises(UnsupportedError) as info:
        runstore.open("artonly://x", plugins=[Probe()])
    assert info.value.code == "unsupported"
    assert info.value.details == {"backend": "artonly", "concern": "state"}


def test_partial_backend_serves_the_concern_it_is_routed_to() -> None:
    with runstore.open(
        f"memory://{_unique('m')}", artifacts="artonly://x", plugins=[Probe()]
    ) as store:
        assert store.backend_names["artifacts"] == "artonly"


@pytest.mark.parametrize("url", ["file:/data/runs", "FILE:runs", "s3:bucket/prefix", "memory:x"])
def test_a_url_missing_its_slashes_is_invalid_input_not_a_folder(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError, match="needs '//' after its scheme"):
        parse_target(url)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_name_with_a_colon_is_still_a_path() -> None:
    _, target = parse_target("runs:2024")
    assert (target.scheme, target.path.endswith("runs:2024")) == ("file", True)
