"""Every first-party backend's test suite runs the conformance kit.

First-party: the built-in ``memory`` backend, and every package in this
repository (``plugins/*``, ``docs/examples/*``) whose ``runstore.plugins``
entry point registers backends. Each needs a pytest-collected class (named
``Test...``) in its ``tests/`` folder that subclasses ``StoreConformance``,
directly or through other classes of the same module.
"""

from __future__ import annotations

import ast
import importlib
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = sorted(
    [*REPO.glob("plugins/*/pyproject.toml"), *REPO.glob("docs/examples/*/pyproject.toml")]
)
KIT = "StoreConformance"


def backend_plugins() -> dict[str, Path]:
    """Entry-point name -> the tests folder of the repository package providing it."""
    found = {"memory": REPO / "core" / "tests"}
    for pyproject in PACKAGES:
        project = tomllib.loads(pyproject.read_text())["project"]
        points = project.get("entry-points", {}).get("runstore.plugins", {})
        for name, target in points.items():
            module = importlib.import_module(target.partition(":")[0])
            if hasattr(module, "runstore_register_backends"):  # observers need no kit
                found[name] = pyproject.parent / "tests"
    return found


def _base_name(base: ast.expr) -> str:
    if isinstance(base, ast.Name):
        return base.id
    if isinstance(base, ast.Attribute):
        return base.attr
    return ""


def conformance_test_classes(tests: Path) -> list[str]:
    """``file::Class`` for each collected test class under ``tests`` that runs the kit."""
    found = []
    for path in sorted(tests.rglob("test_*.py")):
        runs_kit = {KIT}
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            if isinstance(node, ast.ClassDef) and runs_kit & {_base_name(b) for b in node.bases}:
                runs_kit.add(node.name)
                if node.name.startswith("Test"):
                    found.append(f"{path.relative_to(tests)}::{node.name}")
    return found


def test_the_first_party_backends_are_found() -> None:
    assert {"memory", "local", "fsspec"} <= set(backend_plugins())


@pytest.mark.parametrize(("plugin", "tests"), sorted(backend_plugins().items()))
def test_backend_test_suite_subclasses_store_conformance(plugin: str, tests: Path) -> None:
    assert conformance_test_classes(tests), (
        f"backend plugin {plugin!r} has no test class subclassing runstore.testing.{KIT} "
        f"in {tests.relative_to(REPO)}: add one (class TestX({KIT}) with a store fixture)"
    )


def test_a_folder_without_a_kit_subclass_is_reported(tmp_path: Path) -> None:
    (tmp_path / "test_other.py").write_text(
        "from runstore.testing import StateConformance\n"
        "class TestState(StateConformance): ...\n"
        "class Helper(StoreConformance): ...  # not collected: not named Test*\n"
    )
    assert conformance_test_classes(tmp_path) == []


def test_a_subclass_through_a_module_base_class_counts(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "test_kit.py").write_text(
        "import runstore.testing\n"
        "class Base(runstore.testing.StoreConformance): ...\n"
        "class TestMine(Base): ...\n"
    )
    assert conformance_test_classes(tmp_path) == ["sub/test_kit.py::TestMine"]
