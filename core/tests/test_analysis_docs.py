"""docs/analysis.md: its Python examples run, in page order, sharing one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("pyarrow", reason="the analysis extra (pyarrow, duckdb) is not installed")
pytest.importorskip("duckdb", reason="the analysis extra (pyarrow, duckdb) is not installed")
pytest.importorskip("pandas", reason="the page's examples use pandas")

PAGE = Path(__file__).resolve().parents[2] / "docs" / "analysis.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def test_the_analysis_page_has_examples() -> None:
    assert len(_BLOCK.findall(PAGE.read_text())) >= 4


def test_the_analysis_page_examples_run() -> None:
    namespace: dict[str, object] = {"__name__": "analysis_page"}
    for number, code in enumerate(_BLOCK.findall(PAGE.read_text()), start=1):
        exec(compile(code, f"{PAGE.name} block {number}", "exec"), namespace)
