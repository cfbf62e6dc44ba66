"""Loading the entry point leaves the backend unimported until a store is opened.

Each check runs in a fresh interpreter: this test process has long since
imported the backend, so its ``sys.modules`` proves nothing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import orjson

_BACKEND_MODULES = (
    "runstore_local.backend",
    "runstore_local.fs",
    "runstore_local.index",
    "runstore_local.streams",
)


def _loaded_after(code: str) -> dict[str, bool]:
    """Which backend modules are in ``sys.modules`` after ``code`` ran in a new interpreter."""
    report = f"""
        import sys
        import orjson
        print(orjson.dumps({{name: name in sys.modules for name in {_BACKEND_MODULES!r}}}).decode())
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + textwrap.dedent(report)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded: dict[str, bool] = orjson.loads(done.stdout.splitlines()[-1])
    return loaded


def test_importing_the_entry_point_does_not_import_the_backend() -> None:
    loaded = _loaded_after("import runstore_local.plugin")
    assert loaded == dict.fromkeys(_BACKEND_MODULES, False)


def test_registering_the_backend_does_not_import_it() -> None:
    loaded = _loaded_after(
        """
        import runstore_local.plugin
        specs = []
        runstore_local.plugin.runstore_register_backends(register=specs.append)
        assert [spec.name for spec in specs] == ["local"]
        """
    )
    assert loaded == dict.fromkeys(_BACKEND_MODULES, False)


def test_the_factory_imports_the_backend(tmp_path: Path) -> None:
    loaded = _loaded_after(
        f"""
        import runstore_local.plugin
        from runstore.spi.backends import Target
        specs = []
        runstore_local.plugin.runstore_register_backends(register=specs.append)
        root = {str(tmp_path / "runs")!r}
        backend = specs[0].factory(Target(url=root, scheme="file", path=root))
        assert type(backend).__name__ == "LocalBackend"
        """
    )
    assert loaded == dict.fromkeys(_BACKEND_MODULES, True)


def test_the_package_still_exports_local_backend() -> None:
    loaded = _loaded_after(
        """
        import runstore_local
        assert "LocalBackend" in runstore_local.__all__
        from runstore_local import LocalBackend
        from runstore_local.backend import LocalBackend as Defined
        assert LocalBackend is Defined
        try:
            runstore_local.NoSuchName
        except AttributeError:
            pass
        else:
            raise AssertionError("unknown names must raise AttributeError")
        """
    )
    assert loaded["runstore_local.backend"]
