"""The package's layers, as docs/architecture.md draws them, checked on every import.

Each module of ``runstore`` belongs to a layer; it may import its own layer
and the layers below, never one above. The viewer also stays off the
terminal toolkit (click, rich): it may use the CLI's plain-text formatting.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import runstore

PACKAGE = Path(runstore.__file__).parent

LAYERS: dict[str, int] = {
    "model": 0,
    "context": 0,  # correlation ids: a leaf the write path needs
    "spi": 1,
    "registry": 2,
    "engine": 3,
    # the public API
    "__init__": 4,
    "__main__": 6,  # python -m runstore: the CLI
    "aio": 4,
    "store": 4,
    "streams": 4,
    "replay": 4,
    "reading": 4,
    "logging": 4,
    # import paths kept for code written before the layout (re-exports only)
    "errors": 4,
    "models": 4,
    "backends": 4,
    "hookspecs": 4,
    "layout": 4,
    "maintenance": 5,
    "transfer": 5,
    "retention": 5,
    "ops": 5,
    "analysis": 5,  # dataframes and SQL across runs, on the public API
    "testing": 6,
    "cli": 6,
    "viewer": 6,
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _unit(path: Path) -> str:
    """The layer key of a file: its top folder, or its module name at the top."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "runstore":
                found += [(node.lineno, f"runstore.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _target_unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "runstore":
        return None
    return "__init__" if len(parts) == 1 or parts[1] == "__version__" else parts[1]


def test_every_module_has_a_layer() -> None:
    assert {_unit(p) for p in _modules()} <= set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_its_layer_and_below(path: Path) -> None:
    own = _unit(path)
    upward = [
        f"line {line}: {module} (layer {LAYERS[target]} above {own}'s {LAYERS[own]})"
        for line, module in _imports(path)
        if (target := _target_unit(module)) is not None
        and target != own
        and LAYERS[target] > LAYERS[own]
    ]
    assert upward == []


def test_viewer_imports_no_terminal_toolkit() -> None:
    for path in (PACKAGE / "viewer").rglob("*.py"):
        for line, module in _imports(path):
            top = module.split(".")[0]
            assert top not in ("click", "rich"), f"{path.name} line {line} imports {module}"
            if module.startswith("runstore.cli"):
                assert module == "runstore.cli.format", f"{path.name} line {line}: {module}"


MOVED = {
    "runstore.errors": "runstore.model.errors",
    "runstore.models": "runstore.model.run",
    "runstore.backends": "runstore.spi.backends",
    "runstore.hookspecs": "runstore.spi.hookspecs",
    "runstore.layout": "runstore.spi.layout",
    "runstore.maintenance": "runstore.ops.maintenance",
    "runstore.retention": "runstore.ops.retention",
    "runstore.transfer": "runstore.ops.transfer",
}


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_import_paths_of_moved_modules_keep_working(old: str, new: str) -> None:
    before, now = importlib.import_module(old), importlib.import_module(new)
    assert before.__all__ == now.__all__
    for name in now.__all__:
        assert getattr(before, name) is getattr(now, name), name


def test_import_runstore_loads_only_what_the_import_needs() -> None:
    """The CLI, viewer, analysis, typed-stream and replay modules load when first used."""
    code = (
        "import sys, runstore; print(' '.join(m for m in sys.modules if m.startswith('runstore')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    lazy = ("runstore.cli", "runstore.viewer", "runstore.analysis", "runstore.replay")
    assert [m for m in loaded if m.startswith(lazy) or m == "runstore.streams"] == []
    assert "runstore.aio" in loaded and "runstore.store" in loaded
