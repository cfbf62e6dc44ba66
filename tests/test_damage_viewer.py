"""The viewer on a store with a damaged run: the run's page says where and why, the rest works."""

from __future__ import annotations

import asyncio
import html
import shutil
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runstore.viewer.app import create_app

if TYPE_CHECKING:
    from conftest import CliStore

Runs = Callable[..., None]


def _get(store_url: str, *paths: str) -> list[tuple[int, str]]:
    """GET each of ``paths`` from the viewer, in process: ``(status, page text)``."""
    app = create_app(store_url)
    pages: list[tuple[int, str]] = []

    async def get(path: str) -> None:
        scope: dict[str, Any] = {
            "type": "http",
            "method": "GET",
            "path": path,
            "query_string": b"",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "headers": [(b"host", b"localhost")],
        }
        status, body = 0, b""

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = message["status"]
            else:
                body += message.get("body", b"")

        await app(scope, receive, send)
        pages.append((status, html.unescape(body.decode())))

    async def main() -> None:
        async with app.router.lifespan_context(app):
            for path in paths:
                await get(path)

    asyncio.run(main())
    return pages


def test_a_run_with_a_garbage_state_gets_a_page_naming_its_path_and_cause(
    local_store: CliStore, small_runs: Runs
) -> None:
    small_runs(local_store, "run_a", "run_b")
    local_store.overwrite("run_b/state.json", b"{not json")
    assert local_store.root is not None
    (listing, listed), (broken, page), (fine, _) = _get(
        local_store.url, "/", "/runs/run_b", "/runs/run_a"
    )
    assert (listing, broken, fine) == (200, 500, 200)
    assert "run_a" in listed
    assert f"run 'run_b' at {local_store.root.resolve() / 'run_b'} is damaged" in page
    assert "state.json" in page


def test_a_run_swapped_for_a_symbolic_link_is_reported_damaged_not_a_bad_request(
    local_store: CliStore, small_runs: Runs, tmp_path: Path
) -> None:
    small_runs(local_store, "run_a", "run_b")
    assert local_store.root is not None
    shutil.move(local_store.root / "run_b", tmp_path / "elsewhere")
    (local_store.root / "run_b").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (broken, page), (fine, _) = _get(local_store.url, "/runs/run_b", "/runs/run_a")
    assert (broken, fine) == (500, 200)
    assert "is damaged" in page
    assert "symbolic link" in page


def test_a_run_that_does_not_exist_is_still_a_404(local_store: CliStore, small_runs: Runs) -> None:
    small_runs(local_store, "run_a")
    ((status, page),) = _get(local_store.url, "/runs/run_nope")
    assert status == 404
    assert "is damaged" not in page
