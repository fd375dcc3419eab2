"""One SQL connection, to SQLite or to PostgreSQL, behind the few calls the journal makes.

SQLite is the embedded default (a file beside the gateway); PostgreSQL serves sites that
run more than one gateway against shared state (``[journal] url = "postgresql://…"``).
The journal writes its SQL once, with ``?`` placeholders and rows read by column name, and
runs it on its own thread on either engine: the event loop never waits on a database.
PostgreSQL is reached with psycopg 3 (libpq: multi-host URLs, ``target_session_attrs``,
``PGPASSWORD`` and ``~/.pgpass`` work as everywhere else).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

__all__ = [
    "Database",
    "DatabaseError",
    "Row",
    "is_database_error",
    "open_database",
    "redact_url",
]

Row = Mapping[str, Any]

#: Seconds to wait for a PostgreSQL server to accept a connection.
CONNECT_TIMEOUT_S = 5


class DatabaseError(Exception):
    """A database could not be opened (its readable cause is the message)."""


class Database(Protocol):
    """What the journal needs of a connection, on whichever engine."""

    engine: Literal["sqlite", "postgresql"]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement (autocommitted unless inside :meth:`transaction`); the number
        of rows it changed."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one query; its rows, read by column name."""
        ...

    def transaction(self) -> Any:
        """A context manager: everything inside commits together, or none of it."""
        ...

    @property
    def usable(self) -> bool:
        """False once the connection is lost (the journal then opens a new one)."""
        ...

    def close(self) -> None: ...


def open_database(
    target: str | Path,
    *,
    sqlite_schema: str,
    postgres_schema: str,
    timeout_s: float | None = None,
) -> Database:
    """Open ``target`` (a SQLite path, or a ``postgresql://`` URL) and create the schema.

    ``timeout_s`` (PostgreSQL): no statement and no unacknowledged send waits longer than
    this (``statement_timeout`` at the server, ``tcp_user_timeout`` and keepalives at the
    client), so a silent network fails a call instead of hanging its thread."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        return _Postgres(text, postgres_schema, timeout_s)
    return _SQLite(Path(target), sqlite_schema)


def is_database_error(exc: BaseException) -> bool:
    """True for an engine's own error (its text reads well alone)."""
    if isinstance(exc, sqlite3.Error | DatabaseError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - installed with the gateway
        return False
    return isinstance(exc, psycopg.Error)


_PASSWORD = re.compile(r"(?P<head>://[^/:@]*:)[^@/]*@")


def redact_url(url: str) -> str:
    """A database URL fit for a log: the password, if any, replaced by ``***``."""
    return _PASSWORD.sub(r"\g<head>***@", url)


class _SQLite:
    engine: Literal["sqlite", "postgresql"] = "sqlite"

    def __init__(self, path: Path, schema: str) -> None:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a committed command survives power loss
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(schema)
        self.connection = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.connection.execute(sql, params).rowcount

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        rows: list[Row] = self.connection.execute(sql, params).fetchall()
        return rows

    @contextmanager
    def transaction(self) -> Iterator[None]:
        # The connection autocommits; BEGIN makes the statements inside one transaction.
        self.connection.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.connection.rollback()
            raise
        self.connection.commit()

    @property
    def usable(self) -> bool:
        return True

    def close(self) -> None:
        self.connection.close()


class _Postgres:
    engine: Literal["sqlite", "postgresql"] = "postgresql"

    def __init__(self, url: str, schema: str, timeout_s: float | None = None) -> None:
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict
            from psycopg.rows import dict_row
        except ImportError:
            raise DatabaseError(
                "a PostgreSQL journal needs psycopg: pip install 'carousel-gateway[postgresql]'"
            ) from None

        bounds: dict[str, Any] = {}
        if timeout_s is not None:
            ms = max(1, round(timeout_s * 1000))
            idle = max(1, round(timeout_s / 2))
            # Added to the URL's own options (a schema's search_path, say), not instead.
            given = str(conninfo_to_dict(url).get("options") or "")
            bounds = {
                "options": f"{given} -c statement_timeout={ms}".strip(),
                "tcp_user_timeout": ms,
                "keepalives": 1,
                "keepalives_idle": idle,
                "keepalives_interval": idle,
                "keepalives_count": 2,
            }
        try:
            self.connection = psycopg.connect(
                url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=CONNECT_TIMEOUT_S,
                **bounds,
            )
        except psycopg.OperationalError as exc:
            raise DatabaseError(f"cannot connect to {redact_url(url)}: {exc}") from None
        with self.connection.transaction():
            # Two gateways starting at once must not both create the tables.
            self.connection.execute("SELECT pg_advisory_xact_lock(7412803)")
            self.connection.execute(schema)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        changed: int = self.connection.execute(*_prepared(sql, params)).rowcount
        return changed

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self.connection.execute(*_prepared(sql, params)).fetchall())

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.connection.transaction():
            yield

    @property
    def usable(self) -> bool:
        return not (self.connection.closed or self.connection.broken)

    def close(self) -> None:
        self.connection.close()


def _prepared(sql: str, params: Sequence[Any]) -> tuple[str, Sequence[Any] | None]:
    """Our ``?`` placeholders as psycopg's ``%s``, a ``%`` of the SQL (modulo) as ``%%``.
    Statements with parameters hold no ``?`` but their placeholders; one without
    parameters is sent as written (a function body may hold ``%``)."""
    if not params:
        return sql, None
    return sql.replace("%", "%%").replace("?", "%s"), params
