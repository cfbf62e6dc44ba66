"""A throwaway PostgreSQL server for tests: ``initdb`` and ``pg_ctl`` on a temp directory.

:class:`PostgresServer` creates a cluster in a fresh temporary directory and
starts it listening on ``127.0.0.1`` on a free port (and on a Unix socket in
the same directory). Run as root, the cluster belongs to, and the server runs
as, the ``postgres`` user (PostgreSQL refuses to run as root). The server
binaries are found by :func:`find_server_binaries`.

It is what the pytest fixtures of :mod:`runstore_postgres.pytest_plugin` use;
it works outside pytest too::

    with PostgresServer() as server:
        store = runstore.open(server.url(schema="demo"))
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Final

__all__ = ["BIN_ENV", "PostgresServer", "ServerNotFound", "find_server_binaries"]

BIN_ENV: Final = "RUNSTORE_PG_BIN"
"""Environment variable: the folder holding ``initdb`` and ``pg_ctl``, if not found otherwise."""

_SEARCH: Final = ("/usr/lib/postgresql", "/usr/local/pgsql/bin", "/opt/homebrew/bin")


class ServerNotFound(RuntimeError):
    """The PostgreSQL server binaries (``initdb``, ``pg_ctl``) are not on this machine."""


def find_server_binaries() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``.

    Looked up in ``$RUNSTORE_PG_BIN``, on ``PATH``, then in Debian's versioned
    ``/usr/lib/postgresql/<version>/bin`` (the newest version). Raises
    :class:`ServerNotFound` saying where it looked and how to install them.
    """
    candidates: list[Path] = []
    if os.environ.get(BIN_ENV):
        candidates.append(Path(os.environ[BIN_ENV]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    debian = Path(_SEARCH[0])
    if debian.is_dir():
        versions = sorted(
            (p for p in debian.iterdir() if p.name.replace(".", "").isdigit()),
            key=lambda p: [int(part) for part in p.name.split(".")],
            reverse=True,
        )
        candidates += [version / "bin" for version in versions]
    candidates += [Path(p) for p in _SEARCH[1:]]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise ServerNotFound(
        "PostgreSQL server binaries (initdb, pg_ctl) not found "
        f"(looked in ${BIN_ENV}, PATH, /usr/lib/postgresql/*/bin); install them "
        "(Debian: apt-get install postgresql; `make postgres` does it) or set "
        f"{BIN_ENV} to their folder"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """A PostgreSQL cluster on a temporary directory, started on 127.0.0.1.

    :param settings: server settings (``-c name=value``), e.g. ``{"fsync": "off"}``
        for quick tests; the defaults are PostgreSQL's own (durable commits).
    :param bin_dir: where ``initdb`` and ``pg_ctl`` are (default: :func:`find_server_binaries`).

    :meth:`stop` and :meth:`start` simulate an outage: same port, same data.
    """

    superuser: Final = "postgres"

    def __init__(
        self, *, settings: dict[str, str] | None = None, bin_dir: Path | None = None
    ) -> None:
        self.bin_dir = bin_dir or find_server_binaries()
        self.settings = dict(settings or {})
        self.port = _free_port()
        self.host = "127.0.0.1"
        self.root = Path(tempfile.mkdtemp(prefix="runstore-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._names = itertools.count()
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as postgres
            try:
                entry = pwd.getpwnam(self.superuser)
            except KeyError:
                raise ServerNotFound(
                    "running as root needs a 'postgres' user to run the server as "
                    "(Debian's postgresql package creates it)"
                ) from None
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self._initdb()
        self.running = False

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            args, capture_output=True, text=True, check=False, cwd=self.root, **self._as_user
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}\n{log}"
            )

    def _initdb(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            self.superuser,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self) -> None:
        """Start the server (again, after :meth:`stop`), waiting until it accepts connections."""
        if self.running:
            return
        options = [
            f"-p {self.port}",
            f"-k {self.root}",
            f"-c listen_addresses={self.host}",
            *(f"-c {name}={value}" for name, value in self.settings.items()),
        ]
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            "60",
            "start",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients; ``immediate``: as if it crashed)."""
        if not self.running:
            return
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def url(self, database: str = "postgres", **options: str) -> str:
        """A libpq URL of ``database`` (options become query parameters: ``schema=...``)."""
        query = "&".join(f"{key}={value}" for key, value in options.items())
        base = f"postgresql://{self.superuser}@{self.host}:{self.port}/{database}"
        return f"{base}?{query}" if query else base

    def fresh_schema(self) -> str:
        """A schema name not handed out before by this server object (a fresh, empty store)."""
        return f"t{os.getpid()}_{next(self._names)}"

    def create_database(self, name: str) -> None:
        """``CREATE DATABASE name`` (a plain identifier) if it does not exist."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def close(self) -> None:
        """Stop the server and remove its directory."""
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
