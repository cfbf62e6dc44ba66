"""The documentation site: every hook is documented, the examples run, the site builds.

Python blocks in the pages listed in ``PAGES`` run, in page order, in a fresh
directory: each page in its own interpreter, its blocks sharing one namespace.
A comment on the line before a block changes that:

* ``<!-- docs-test: skip (why) -->``: not run (it needs S3, say);
* ``<!-- docs-test: write PATH -->``: written to ``PATH`` in the page's
  directory instead of run (the files of the "Write a backend" guide).

A block that leaves a store open fails: the reader who copies it should get
``with runstore.open(...) as store:`` (on S3 an unclosed store's HTTP sessions
warn at exit). The driver counts every ``AsyncStore`` (the sync ``Store``
wraps one) built and not yet closed: after each block, none may be left.
"""

from __future__ import annotations

import html
import inspect
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pluggy
import pytest

from runstore import errors, hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# The pages this test runs; the other pages belong to other suites
# (docs/cli.md is generated, docs/integrations.md is tested with its example).
PAGES = (
    "index.md",
    "quickstart.md",
    "concepts.md",
    "own-data.md",
    "config.md",
    "backends/local.md",
    "backends/fsspec.md",
    "backends/memory.md",
    "write-a-backend.md",
    "guarantees.md",
    "hooks.md",
    "errors.md",
)

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*$")
_MARKER = re.compile(r"^<!-- docs-test: (?P<action>skip|write)\b\s*(?P<arg>.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    code: str
    action: Literal["run", "skip", "write"]
    path: str = ""


def blocks(page: str) -> list[Block]:
    """The fenced code blocks of ``page`` with what the test does with each."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        start, indent = index, fence["indent"]
        end = start + 1
        while end < len(lines) and lines[end] != f"{indent}```":
            end += 1
        assert end < len(lines), f"{page}:{start + 1}: unclosed code block"
        marker = _MARKER.match(lines[start - 1].strip()) if start else None
        action: Literal["run", "skip", "write"] = "run"
        path = ""
        if marker is not None:
            action = "skip" if marker["action"] == "skip" else "write"
            path = marker["arg"] if action == "write" else ""
            assert marker["arg"], (
                f"{page}:{start}: say why the block is skipped, or where to write it"
            )
        lang = fence["lang"]
        if action == "run" and lang not in ("python", "py"):
            action = "skip"  # shell sessions, TOML, trees: shown, not run
        code = "".join(f"{line.removeprefix(indent)}\n" for line in lines[start + 1 : end])
        found.append(Block(page, start + 2, lang, code, action, path))
        index = end + 1
    return found


_DRIVER = textwrap.dedent(
    """
    import pathlib, sys, traceback

    from runstore.aio import AsyncStore

    OPEN_STORES = {}  # id -> every store built and not yet closed (kept alive to be seen)
    _built, _aclose = AsyncStore.__init__, AsyncStore.aclose


    def _tracked_init(self, *args, **kwargs):
        _built(self, *args, **kwargs)
        OPEN_STORES[id(self)] = self


    async def _tracked_aclose(self):
        await _aclose(self)
        OPEN_STORES.pop(id(self), None)


    AsyncStore.__init__, AsyncStore.aclose = _tracked_init, _tracked_aclose

    namespace = {"__name__": "__main__"}
    for page, line, action, path, code in ACTIONS:
        if action == "write":
            target = pathlib.Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(code, encoding="utf-8")
            continue
        try:
            exec(compile(code, f"{page}:{line}", "exec"), namespace)
        except BaseException:
            traceback.print_exc()
            sys.exit(f"FAILED: the python block at docs/{page} line {line}")
        if OPEN_STORES:
            left = ", ".join(sorted(repr(store) for store in OPEN_STORES.values()))
            sys.exit(
                f"FAILED: the python block at docs/{page} line {line} leaves a store open "
                f"({left}): write 'with runstore.open(...) as store:' "
                f"('async with runstore.aio.open(...)'), or close it"
            )
    """
)

Action = tuple[str, int, str, str, str]
"""What the driver does with one block: (page, line, action, path, code)."""


def run_page(page: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Write and run ``page``'s blocks in ``workdir``, in a fresh interpreter."""
    actions = [
        (b.page, b.line, b.action, b.path, b.code) for b in blocks(page) if b.action != "skip"
    ]
    return run_actions(actions, workdir)


def run_actions(actions: Sequence[Action], workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``actions`` in ``workdir`` through the driver, in a fresh interpreter."""
    script = workdir.parent / f"{workdir.name}-driver.py"
    script.write_text(f"ACTIONS = {actions!r}\n{_DRIVER}", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "RUNSTORE_URL"}
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


# -- (a) every hook is documented -----------------------------------------------------


def _hooks() -> list[tuple[str, list[str], bool]]:
    """(name, argument names, firstresult) of every hook, from the plugin manager."""
    pm = pluggy.PluginManager("runstore")
    pm.add_hookspecs(hookspecs)
    hooks = []
    for name, caller in sorted(vars(pm.hook).items()):
        if name.startswith("_") or caller.spec is None:
            continue
        hooks.append((name, list(caller.spec.argnames), bool(caller.spec.opts.get("firstresult"))))
    return hooks


HOOKS = _hooks()
HOOKS_PAGE = DOCS / "hooks.md"


def test_there_are_hooks_to_document() -> None:
    assert len(HOOKS) >= 6


@pytest.mark.parametrize(("name", "args", "firstresult"), HOOKS, ids=[h[0] for h in HOOKS])
def test_hook_is_documented(name: str, args: list[str], firstresult: bool) -> None:
    text = HOOKS_PAGE.read_text(encoding="utf-8")
    signature = f"{name}({', '.join(args)})"
    heading = f"### {signature} {{ #{name} }}"
    assert heading in text.splitlines(), (
        f"docs/hooks.md does not document {signature}: add a section headed\n"
        f"{heading}\n\n::: runstore.spi.hookspecs.{name}\n"
        "    options:\n      show_root_heading: false"
    )
    section = text.split(heading, 1)[1].split("\n### ", 1)[0]
    assert f"::: runstore.spi.hookspecs.{name}\n" in section, (
        f"the {name} section of docs/hooks.md must render its hookspec docstring"
    )
    table_row = next((r for r in text.splitlines() if r.startswith(f"| [`{name}`]")), None)
    assert table_row is not None, f"the summary table of docs/hooks.md has no row for {name}"
    assert table_row.rstrip(" |").endswith("first non-None" if firstresult else "all")


@pytest.mark.parametrize(("name", "args", "firstresult"), HOOKS, ids=[h[0] for h in HOOKS])
def test_hookspec_docstring_reads_like_pytests(
    name: str, args: list[str], firstresult: bool
) -> None:
    """What, when, parameters, first result or not, version: the page renders it."""
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    for arg in args:
        assert f":param {arg}:" in doc, f"{name} does not document parameter {arg}"
    prose = " ".join(doc.split())
    assert "Called " in prose, f"{name} does not say when it is called"
    if firstresult:
        assert "Stops at first non-None result" in prose
    else:
        assert "Every implementation is called" in prose
    assert re.search(r"^\.\. versionadded:: \S+", doc, re.MULTILINE), f"{name} has no versionadded"


def test_hooks_page_documents_no_hook_that_does_not_exist() -> None:
    names = {name for name, _, _ in HOOKS}
    documented = re.findall(r"^### (runstore_\w+)\(", HOOKS_PAGE.read_text(), re.MULTILINE)
    assert sorted(documented) == sorted(names)


# -- reference tables match the code ------------------------------------------------------


@pytest.mark.parametrize("name", errors.__all__)
def test_errors_page_lists_the_error_with_its_code_and_builtin(name: str) -> None:
    error = getattr(errors, name)
    rows = (DOCS / "errors.md").read_text(encoding="utf-8").splitlines()
    row = next((r for r in rows if r.startswith(f"| `{name}` |")), None)
    assert row is not None, f"the table in docs/errors.md has no row for {name}"
    cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
    builtin = ", ".join(f"`{b.__name__}`" for b in error.__bases__ if b.__module__ == "builtins")
    assert cells[1:3] == [f"`{error.code}`", builtin]


def test_every_page_is_in_the_nav() -> None:
    """A page missing from the nav of mkdocs.yml is built but cannot be found."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r"^\s+- (?:[^:\n]+: )?([\w./-]+\.md)$", config, re.MULTILINE))
    pages = {
        str(path.relative_to(DOCS))
        for path in DOCS.rglob("*.md")
        if path.relative_to(DOCS).parts[0] != "examples"
    }
    assert sorted(pages - nav) == [], "add these pages to the nav in mkdocs.yml"


# -- (b) the examples run ---------------------------------------------------------------


def test_every_page_with_examples_exists() -> None:
    assert [p for p in PAGES if not (DOCS / p).is_file()] == []


@pytest.mark.parametrize("page", [p for p in PAGES if (DOCS / p).is_file()])
def test_python_blocks_run(page: str, tmp_path: Path) -> None:
    workdir = tmp_path / "page"
    workdir.mkdir()
    result = run_page(page, workdir)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"


# A store each way a reader might leave one open, and each way of closing one.
_LEFT_OPEN = {
    "sync": 'import runstore\n\nstore = runstore.open("memory://left")\nstore.list_runs()\n',
    "async": 'import runstore\n\nstore = runstore.aio.open("memory://left")\n',
    "dropped": 'import runstore\n\nprint(runstore.open("memory://left").list_runs())\n',
}
_CLOSED = {
    "with": 'import runstore\n\nwith runstore.open("memory://c") as store:\n    print(store)\n',
    "close": 'import runstore\n\nstore = runstore.open("memory://c")\nstore.close()\n',
    "async with": (
        "import asyncio\n\nimport runstore\n\n\nasync def main() -> None:\n"
        '    async with runstore.aio.open("memory://c") as store:\n'
        "        await store.list_runs()\n\n\nasyncio.run(main())\n"
    ),
    "aclose": (
        'import asyncio\n\nimport runstore\n\nstore = runstore.aio.open("memory://c")\n'
        "asyncio.run(store.aclose())\n"
    ),
    "failed to open": (
        "import runstore\n\ntry:\n"
        '    runstore.open("nosuchbackend+memory://x")\n'
        "except runstore.BackendNotFoundError:\n    pass\n"
    ),
}


@pytest.mark.parametrize("code", list(_LEFT_OPEN.values()), ids=list(_LEFT_OPEN))
def test_a_block_that_leaves_a_store_open_fails(code: str, tmp_path: Path) -> None:
    workdir = tmp_path / "page"
    workdir.mkdir()
    closes = ("example.md", 3, "run", "", _CLOSED["with"])
    result = run_actions([closes, ("example.md", 12, "run", "", code)], workdir)
    assert result.returncode != 0
    assert (
        "the python block at docs/example.md line 12 leaves a store open "
        "(<AsyncStore 'memory://left'>)"
    ) in result.stderr


def test_blocks_that_close_their_stores_pass(tmp_path: Path) -> None:
    workdir = tmp_path / "page"
    workdir.mkdir()
    actions: list[Action] = [
        ("example.md", line, "run", "", code) for line, code in enumerate(_CLOSED.values())
    ]
    result = run_actions(actions, workdir)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"


_BOUND_STORE = re.compile(r"^[ \t]*(?P<name>\w+) = (?:await )?runstore(?:\.aio)?\.open\(.*$", re.M)
_ANY_PYTHON = re.compile(r"^[ \t]*```py(?:thon)?[^\n]*\n(.*?)^[ \t]*```$", re.M | re.S)


def stores_left_open(code: str) -> list[str]:
    """The ``name = runstore.open(...)`` lines of ``code`` whose ``name`` is never closed."""
    return [
        match[0].strip()
        for match in _BOUND_STORE.finditer(code)
        if not re.search(rf"\b{match['name']}\.a?close\(\)", code[match.end() :])
    ]


def test_stores_left_open_finds_a_store_bound_and_never_closed() -> None:
    assert stores_left_open(_LEFT_OPEN["sync"]) == ['store = runstore.open("memory://left")']
    assert stores_left_open(_LEFT_OPEN["async"]) == ['store = runstore.aio.open("memory://left")']
    assert [stores_left_open(code) for code in _CLOSED.values()] == [[]] * len(_CLOSED)


def test_no_page_binds_a_store_it_never_closes() -> None:
    """Every page and the README, blocks not run here included (S3, PostgreSQL, the
    pages other suites run): a store given a name is closed on its page."""
    left = [
        f"{path.relative_to(ROOT)}: {line}"
        for path in sorted([*DOCS.rglob("*.md"), ROOT / "README.md"])
        for line in stores_left_open("".join(_ANY_PYTHON.findall(path.read_text("utf-8"))))
    ]
    assert left == [], "use 'with runstore.open(...) as store:'"


def test_the_write_a_backend_guide_goes_from_an_empty_folder_to_a_passing_kit(
    tmp_path: Path,
) -> None:
    """The guide's files are lint-clean and typed and, installed, pass their conformance tests."""
    folder = tmp_path / "folder"
    folder.mkdir()
    written = run_page("write-a-backend.md", folder)
    assert written.returncode == 0, f"{written.stdout}\n{written.stderr}"
    (project,) = {Path(b.path).parts[0] for b in blocks("write-a-backend.md") if b.path}
    for check in (
        ["ruff", "check", "--config", str(ROOT / "pyproject.toml"), "."],
        ["ruff", "format", "--check", "--config", str(ROOT / "pyproject.toml"), "."],
        ["mypy", "--strict", "--no-incremental", "src", "tests"],
    ):
        linted = subprocess.run(
            [sys.executable, "-m", *check],
            cwd=folder / project,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert linted.returncode == 0, f"{' '.join(check)}:\n{linted.stdout}{linted.stderr}"
    site = tmp_path / "site-packages"
    install = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--target", str(site), str(folder / project)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    env = {k: v for k, v in os.environ.items() if k != "RUNSTORE_URL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    kit = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=folder / project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert kit.returncode == 0, f"{kit.stdout}\n{kit.stderr}"
    assert " passed" in kit.stdout and " failed" not in kit.stdout


# -- (c) the site builds strictly ---------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once with ``mkdocs build --strict`` (warnings are errors)."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet"),
            *("--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)),
        ],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, (
        f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    )
    return out


def test_docs_build_strictly(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "hooks" / "index.html").is_file()


@pytest.mark.parametrize(("name", "args", "firstresult"), HOOKS, ids=[h[0] for h in HOOKS])
def test_hooks_page_shows_each_hookspec_docstring(
    site: Path, name: str, args: list[str], firstresult: bool
) -> None:
    page = html.unescape(re.sub(r"<[^>]+>", "", (site / "hooks" / "index.html").read_text()))
    summary = (inspect.getdoc(getattr(hookspecs, name)) or "").splitlines()[0]
    summary = summary.replace("``", "")
    assert " ".join(summary.split()) in " ".join(page.split()), f"{name}: {summary!r} not rendered"
