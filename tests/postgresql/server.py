"""A real PostgreSQL server for the tests: Debian's, in a temporary directory, on loopback.

``initdb`` refuses to run as root, so under root (CI) the cluster belongs to the
``postgres`` system user the Debian package creates. fsync stays on: the tests exercise
the same durability a site gets. Each test gets a schema of its own (``search_path`` in
its URL), so tests never see each other's rows and need no new database.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

__all__ = ["PostgresServer"]

SUPERUSER = "gateway"


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(
            f"PostgreSQL's {name} not found: `make test` installs Debian's postgresql "
            "(tests/postgresql/deps.mk)"
        )
    return found[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One cluster for a test session; ``url_for_new_schema()`` for each test."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="carousel-pg-"))
        self.data = self.directory / "data"
        self.port = _free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def start(self) -> None:
        self._initdb()
        self.start_again()

    def _initdb(self) -> None:
        self._run(
            _bin("initdb"),
            "-D", str(self.data),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )  # fmt: skip

    def start_again(self) -> None:
        """Start the server on its existing data (the same port)."""
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.directory} -c fsync=on -c max_connections=200"
        )
        # -w: pg_ctl itself waits until the server accepts connections.
        self._run(
            _bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l",
            str(self.directory / "server.log"), "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop_keeping_data(self) -> None:
        """Stop the server at once (as a crash would), keeping its data for start_again()."""
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop_keeping_data()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url_for_new_schema(self) -> str:
        """A URL whose tables land in a fresh, empty schema."""
        import psycopg

        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        return f"{self.url}?options=-csearch_path%3D{schema}"

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            [*self._as_user, *command], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            log = self.directory / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{tail}"
            )
