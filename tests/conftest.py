"""Fixtures every test group may use: a real PostgreSQL server, and the journal engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgresql.server import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Debian's PostgreSQL in a temporary directory, started once per test session (and
    only when a test asks for it)."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a journal lives, on each engine: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return tmp_path / "j.db"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.url_for_new_schema()
