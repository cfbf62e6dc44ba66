"""``runstore view``: serve the read-only run viewer on 127.0.0.1.

This module imports only click and runstore, so ``runstore view --help`` and
the docs work without the ``view`` extra; the web stack (Starlette, uvicorn,
Jinja2) is imported when the command runs, and a missing piece is a one-line
error naming the package to install.
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import sys
import threading
import webbrowser
from datetime import timedelta
from typing import Final

import click

from runstore.aio import open as open_async
from runstore.cli.app import CliContext, emit_json_line, json_option, pass_cli
from runstore.cli.hints import install_hint, require_store
from runstore.cli.maintenance import AgeParam
from runstore.model.errors import UnsupportedError

__all__ = ["HOST", "view"]

HOST: Final = "127.0.0.1"
"""The viewer only ever listens on the loopback interface."""

_REQUIRED: Final = (("starlette", "starlette"), ("uvicorn", "uvicorn"), ("jinja2", "Jinja2"))


def _require_web_stack() -> None:
    missing = [dist for module, dist in _REQUIRED if _missing(module)]
    if missing:
        hint = install_hint("runstore[view]")
        raise UnsupportedError(
            f"runstore view needs {', '.join(missing)}: {hint}",
            details={"missing": missing, "install": hint},
        )


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ValueError:  # sys.modules[module] is None: imports of it are blocked
        return True


def _check_store(url: str) -> None:
    """Open and close the store once, so a bad URL fails before anything is served."""

    async def probe() -> None:
        store = open_async(url)
        try:
            await store.list_runs(limit=1)
        finally:
            await store.aclose()

    asyncio.run(probe())


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise click.UsageError(f"cannot listen on {HOST}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@click.command()
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=0,
    show_default=True,
    help="Port on 127.0.0.1 (0: any free port).",
)
@click.option("--no-browser", is_flag=True, help="Do not open a browser; just print the URL.")
@click.option(
    "--stale-after",
    type=AgeParam(),
    default="90s",
    show_default=True,
    help="Show a live run whose heartbeat is older as 'writer not seen since ...'.",
)
@json_option(help='Print {"url": ..., "store": ...} as one JSON line once serving.')
@pass_cli
def view(
    cli_ctx: CliContext,
    port: int,
    no_browser: bool,
    stale_after: timedelta,
) -> None:
    """Browse runs in a local, read-only web page (until Ctrl-C).

    Lists the runs (search, a 'where' filter as in 'runstore ls --where',
    status, system under test and tag, with their pass rates), charts pass
    rate, duration and a metric across them, and compares two runs instance
    by instance; for one run shows its summary, a pass/fail chart, its
    instances, the log stream and every stream's records; for one instance
    its steps (with a timeline), assertions and artifacts, and the previous
    and next failed instance. Pages of a live run refresh themselves.
    Nothing in the page changes the store. Served on
    127.0.0.1 only; needs the view extra: pip install 'runstore[view]' (or,
    from a checkout of runstore: pip install -e 'core[view]').

    \b
    Examples:
      runstore view
      runstore view --store s3://bucket/runs --port 8080 --no-browser
      runstore --store /data/runs view --json
    """
    _require_web_stack()
    import uvicorn

    from runstore.viewer.app import create_app

    url_of_store = cli_ctx.store_url
    require_store(url_of_store)
    _check_store(url_of_store)
    sock = _listen(port)
    url = f"http://{HOST}:{sock.getsockname()[1]}/"
    app = create_app(url_of_store, stale_after=stale_after)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    )
    if cli_ctx.json:
        emit_json_line({"url": url, "store": url_of_store})
    else:
        click.echo(f"runstore viewer for {url_of_store} at {url}  (Ctrl-C stops it)")
    sys.stdout.flush()  # a script waiting for the URL reads it now, not at exit
    if not no_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
