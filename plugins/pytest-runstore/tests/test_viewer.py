"""runstore's viewer shows a recorded session: test names, outcomes and failure text."""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from pytest_runstore import encode_nodeid

import runstore

pytest_plugins = ["pytester"]

pytest.importorskip("starlette")
pytest.importorskip("jinja2")


def _get(app: Any, path: str) -> tuple[int, str]:
    """GET ``path`` from the ASGI app, lifespan included (no HTTP client needed)."""
    status: list[int] = []
    body: list[bytes] = []
    scope = {
        "type": "http",
        "method": "GET",
        "path": unquote(path),
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
        "asgi": {"version": "3.0", "spec_version": "2.4"},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    async def main() -> None:
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    asyncio.run(main())
    return status[0], b"".join(body).decode()


def test_the_run_page_lists_tests_and_the_instance_page_shows_the_failure(
    pytester: pytest.Pytester, store_path: Path, only_run: Callable[[], runstore.RunView]
) -> None:
    from runstore.viewer.app import create_app

    pytester.makepyfile(
        test_shop="""
        import pytest

        @pytest.mark.parametrize("pair", ["eur/usd", "jpy"])
        def test_total(pair):
            assert pair != "jpy", "no yen prices"
        """
    )
    pytester.runpytest(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", f"--runstore={store_path}"
    ).assert_outcomes(passed=1, failed=1)
    run_id = only_run().run_id
    app = create_app(str(store_path))
    status, page = _get(app, f"/runs/{run_id}")
    assert status == 200
    text = html.unescape(page)
    for nodeid in ("test_shop.py::test_total[eur/usd]", "test_shop.py::test_total[jpy]"):
        assert encode_nodeid(nodeid) in text
    failed = encode_nodeid("test_shop.py::test_total[jpy]")
    status, page = _get(app, f"/runs/{run_id}/instances/{quote(failed, safe='')}")
    assert status == 200
    assert "no yen prices" in html.unescape(page)
    assert "longrepr-call.txt" in html.unescape(page)
    passed = encode_nodeid("test_shop.py::test_total[eur/usd]")
    assert _get(app, f"/runs/{run_id}/instances/{quote(passed, safe='')}")[0] == 200
