"""nox sessions: each package's tests in its own environment, plus lint, typecheck, docs, bench.

``make test`` is the everyday command (one shared .venv); nox proves each
package installs and passes on its own, the way users install them.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typecheck", "core", "local", "fsspec", "integration", "docs"]

PYTHON = "3.11"
TEST_DEPS = ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100"]


def _install_dev(session: nox.Session) -> None:
    # The venv's bundled pip cannot resolve s3fs/aiobotocore/fsspec together;
    # a current pip can (the Makefile upgrades it the same way).
    session.install("--upgrade", "pip")
    session.install("-r", "requirements-dev.txt")


@nox.session(python=PYTHON)
def core(session: nox.Session) -> None:
    """The core package alone: its tests against the memory backend."""
    session.install("-e", "./core[testing]", *TEST_DEPS)
    session.run("pytest", "core/tests", *session.posargs, env={"RUNSTORE_DISABLE_PLUGINS": ""})


@nox.session(python=PYTHON)
def local(session: nox.Session) -> None:
    """runstore-local with the core it depends on."""
    session.install("-e", "./core[testing]", "-e", "./plugins/runstore-local", *TEST_DEPS)
    session.run("pytest", "plugins/runstore-local", *session.posargs)


@nox.session(python=PYTHON)
def fsspec(session: nox.Session) -> None:
    """runstore-fsspec against a local moto S3 server, fsspec memory and file."""
    session.install(
        "-e",
        "./core[testing]",
        "-e",
        "./plugins/runstore-fsspec[s3,testing]",
        *TEST_DEPS,
    )
    session.run("pytest", "plugins/runstore-fsspec", *session.posargs)


@nox.session(python=PYTHON)
def conformance(session: nox.Session) -> None:
    """The conformance kit's long form on every backend: the ``thorough`` profile (500 new
    random operation sequences per backend, failures kept in the temporary folder).
    ``make test`` runs the derandomised ``ci`` profile."""
    _install_dev(session)
    session.run(
        "pytest",
        "core/tests/test_memory_conformance.py",
        "core/tests/test_kit_kv.py",
        "plugins",
        "docs/examples",
        "-k",
        "random_operations",
        *session.posargs,
        env={"RUNSTORE_CONFORMANCE_PROFILE": "thorough"},
    )


@nox.session(python=PYTHON)
def integration(session: nox.Session) -> None:
    """Cross-package tests: discovery, config selection, CLI, crash and fault tests."""
    _install_dev(session)
    session.run("pytest", "tests", *session.posargs)


@nox.session(python=PYTHON)
def reliability(session: nox.Session) -> None:
    """Crash, torn-tail, fault-injection, concurrency, recover, hostile-input and S3 fault
    suites (docs/reliability.md). Without arguments: the quick subset ``make test`` runs.
    The long form: ``nox -s reliability -- --trials 500 --figures reliability.json``.
    """
    _install_dev(session)
    session.run("pytest", "tests/reliability", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "format", "--check", ".")
    session.run("ruff", "check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    _install_dev(session)
    session.run("make", "typecheck", external=True)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """The documentation site, built strictly into site/, and its tests (examples run)."""
    _install_dev(session)
    env = {"NO_MKDOCS_2_WARNING": "1"}
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", env=env)
    session.run("pytest", "tests/test_docs.py", *session.posargs, env=env)


# benchmarks/<name>.py run by `nox -s bench`, with their fixed arguments.
BENCHMARKS = {
    "append": ["--fsync"],
    "read": [],
    "index": [],
    "memory": [],
}


def _bench_args(session: nox.Session, available: list[str]) -> tuple[list[str], list[str]]:
    """Split posargs into benchmark names (default: all) and options for each script."""
    names = [arg for arg in session.posargs if arg in available]
    options = [arg for arg in session.posargs if arg not in available]
    return names or available, options


def _run_bench(session: nox.Session, name: str, fixed: list[str], options: list[str]) -> None:
    # --profile FILE with several scripts: one report each, FILE.<name>.
    if "--profile" in options:
        at = options.index("--profile") + 1
        if len(options) > at:
            options = [*options[:at], f"{options[at]}.{name}", *options[at + 1 :]]
    session.run("python", f"benchmarks/{name}.py", *fixed, *options)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks: each prints ratios against a raw baseline measured in the same run.

    ``nox -s bench`` runs every script at its default size; ``nox -s bench --
    read index --json`` runs the named ones, each with the options given (name
    one script to pass its own, e.g. ``-- read --records 100000``; ``--profile
    FILE`` writes FILE.<name> per script). The peers comparison is ``nox -s peers``.
    """
    # What the scripts import, no more (requirements-dev.txt also pulls s3fs/moto/mkdocs).
    session.install("-e", "./core", "-e", "./plugins/runstore-local")
    names, options = _bench_args(session, list(BENCHMARKS))
    for name in names:
        _run_bench(session, name, BENCHMARKS[name], options)


# The peers are installed here only, never as project dependencies.
PEERS = ["mlflow-skinny", "sacred"]


@nox.session(python=PYTHON)
def peers(session: nox.Session) -> None:
    """runstore against MLflow's file store and Sacred's FileStorageObserver, side by side."""
    session.install("-e", "./core", "-e", "./plugins/runstore-local", *PEERS)
    session.run("python", "benchmarks/peers.py", *session.posargs)


@nox.session(python=PYTHON)
def postgres(session: nox.Session) -> None:
    """runstore-postgres against a real PostgreSQL server its fixtures start (initdb and
    pg_ctl on a temp directory, 127.0.0.1); ``make postgres`` installs the server binaries.
    More state-machine examples: ``RUNSTORE_CONFORMANCE_EXAMPLES=500 nox -s postgres``."""
    session.install(
        "-e", "./core[testing]", "-e", "./plugins/runstore-postgres[testing]", *TEST_DEPS
    )
    # `runstore cp` between local, postgres and S3 (moto) is tested there too.
    session.install("-e", "./plugins/runstore-local", "-e", "./plugins/runstore-fsspec[s3,testing]")
    session.run("pytest", "plugins/runstore-postgres", *session.posargs)


@nox.session(python=PYTHON)
def own_suite(session: nox.Session) -> None:
    """The whole test suite recorded by pytest-runstore in a process of its own, checked
    against pytest's own account and shown by ``runstore view`` in Chromium (~15 min;
    ``make test`` runs the same checks on core/tests)."""
    _install_dev(session)
    session.run(
        "pytest",
        "plugins/pytest-runstore/tests/test_own_suite_browser.py",
        *session.posargs,
        env={"RUNSTORE_OWN_SUITE": "whole"},
    )


@nox.session(python=PYTHON)
def pytest_plugin(session: nox.Session) -> None:
    """pytest-runstore alone with the core and the local backend, xdist included;
    ``-- --overhead`` also runs its overhead benchmark (2,000 trivial tests)."""
    session.install(
        "-e",
        "./core",
        "-e",
        "./plugins/runstore-local",
        "-e",
        "./plugins/pytest-runstore[testing]",
        *TEST_DEPS,
    )
    overhead = "--overhead" in session.posargs
    args = [arg for arg in session.posargs if arg != "--overhead"]
    session.run("pytest", "plugins/pytest-runstore/tests", *args)
    if overhead:
        session.install("pytest-reportlog")  # the benchmark's third comparison
        session.run("python", "benchmarks/pytest_overhead.py")
