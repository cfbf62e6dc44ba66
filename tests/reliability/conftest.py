"""Fixtures of the reliability suites and their two knobs.

``--trials N`` (or ``RUNSTORE_RELIABILITY_TRIALS=N``) switches to the long
form: N crash trials per backend, 32 racing processes, the full fault matrix
and more fuzzing. Without it the suites run their quick subset, small enough
for ``make test``. ``--figures PATH`` (or ``RUNSTORE_RELIABILITY_FIGURES``)
writes the counters this run reached (trials, kills, records, names, ...) as
JSON: they are the figures ``docs/reliability.md`` publishes.

The S3 fixtures (``s3_server``, ``s3``) come from runstore-fsspec's pytest
plugin (``runstore_fsspec.pytest_plugin``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DEFAULT_TRIALS, Figures, Scale

_FIGURES = Figures()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reliability")
    group.addoption(
        "--trials",
        type=int,
        default=None,
        help="long form of the reliability suites: crash trials per backend "
        "(also $RUNSTORE_RELIABILITY_TRIALS)",
    )
    group.addoption(
        "--figures",
        default=None,
        help="write the reliability figures of this run as JSON to this path "
        "(also $RUNSTORE_RELIABILITY_FIGURES)",
    )


def _scale(config: pytest.Config) -> Scale:
    given = config.getoption("--trials", default=None) or os.environ.get(
        "RUNSTORE_RELIABILITY_TRIALS"
    )
    if given:
        return Scale(trials=int(given), long=True)
    return Scale(trials=DEFAULT_TRIALS, long=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _scale(config).long:  # the long form runs as long as its trials take
        here = Path(__file__).resolve().parent
        for item in items:
            if here in Path(item.path).resolve().parents:
                item.add_marker(pytest.mark.timeout(0))


@pytest.fixture(scope="session")
def scale(pytestconfig: pytest.Config) -> Scale:
    return _scale(pytestconfig)


@pytest.fixture(scope="session")
def figures() -> Figures:
    return _FIGURES


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = session.config.getoption("--figures", default=None) or os.environ.get(
        "RUNSTORE_RELIABILITY_FIGURES"
    )
    if target and _FIGURES.counts:
        _FIGURES.write(target)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES.counts:
        scale = _scale(terminalreporter.config)
        form = f"long form, --trials {scale.trials}" if scale.long else "quick subset"
        terminalreporter.section(f"reliability figures ({form})")
        for key, value in _FIGURES.as_dict().items():
            terminalreporter.write_line(f"{key:48} {value:>10}")


# -- stores --------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A local store's directory, two levels below the test's own directory."""
    return tmp_path / "area" / "runs"
