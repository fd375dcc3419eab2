"""Where jobs are kept: SQLite tables of their own in the journal's database file.

Every write is committed (``synchronous=FULL``) before the engine acknowledges it, so a
SIGKILL loses no acknowledged submission, confirmation or state change. Like the journal,
all database work runs on one dedicated thread (a connection belongs to its thread) so the
event loop never waits on the disk. :class:`JobStore` is the seam: :class:`PostgresJobStore`
(``[journal] url``, issue 18) runs the same SQL and row code on PostgreSQL, where the other
gateway of a cell finds the jobs after a takeover; under ``[ha]`` its tables are fenced.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from carousel_gateway.database import Database, DatabaseError, open_database
from carousel_gateway.ha import lease_store
from carousel_gateway.picking.jobs import Job, Line
from carousel_gateway.picking.workstation import Change
from carousel_gateway.wire.jobs import JobLineState, JobState

__all__ = [
    "FENCED_TABLES",
    "MIGRATIONS",
    "POSTGRES_SCHEMA",
    "JobStore",
    "JobWriteFenced",
    "PostgresJobStore",
    "SqliteJobStore",
]

_T = TypeVar("_T")


class JobStore(Protocol):
    """What the engine needs of a database."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def load(self, finished_after: float) -> list[Job]:
        """Stored jobs with their lines, in submission order: every unfinished one, and
        those that finished after ``finished_after`` (epoch seconds)."""
        ...

    async def known(self, job_id: str) -> bool:
        """True when a job with this id was ever stored (loaded or not)."""
        ...

    async def write(self, jobs: Sequence[Job], changes: Sequence[Change]) -> None:
        """Write ``jobs`` (with their lines) and append ``changes``, in one transaction
        committed before this returns."""
        ...


#: Schema versions in order; a database is brought from its version to the last.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE pick_jobs (
        job_id          TEXT PRIMARY KEY,
        workstation_id  TEXT NOT NULL,
        priority        INTEGER NOT NULL,
        state           TEXT NOT NULL,
        paused_reason   TEXT,
        content         TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        created_at      REAL NOT NULL,
        submitted_by    TEXT,
        started_at      REAL,
        finished_at     REAL,
        moves           INTEGER NOT NULL DEFAULT 0,
        buckets_travelled INTEGER NOT NULL DEFAULT 0,
        operator_wait_s REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX pick_jobs_station ON pick_jobs (workstation_id, state);
    CREATE TABLE pick_lines (
        job_id          TEXT NOT NULL REFERENCES pick_jobs (job_id),
        line_id         TEXT NOT NULL,
        idx             INTEGER NOT NULL,
        machine_id      TEXT NOT NULL,
        position        INTEGER NOT NULL,
        quantity        INTEGER NOT NULL,
        sku             TEXT,
        description     TEXT,
        order_id        TEXT,
        state           TEXT NOT NULL,
        quantity_picked INTEGER,
        reason          TEXT,
        confirmed_by    TEXT,
        confirmed_at    REAL,
        PRIMARY KEY (job_id, line_id)
    );
    CREATE TABLE pick_history (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id    TEXT NOT NULL,
        at        REAL NOT NULL,
        what      TEXT NOT NULL,
        by        TEXT,
        line_id   TEXT,
        quantity  INTEGER,
        reason    TEXT
    );
    CREATE INDEX pick_history_job ON pick_history (job_id, id);
    """,
    # A confirmation's id as its client gave it: a retry is answered from the store.
    """
    ALTER TABLE pick_lines ADD COLUMN confirmation_id TEXT;
    ALTER TABLE pick_history ADD COLUMN confirmation_id TEXT;
    CREATE UNIQUE INDEX pick_history_confirmation ON pick_history (job_id, confirmation_id)
        WHERE confirmation_id IS NOT NULL;
    """,
)

#: Shared by both engines (an SQLite upsert is the same statement since 3.24): the job
#: and line rows are written whole each time; ``cell``/``epoch`` are the fence's to stamp.
_UPSERT_JOB = (
    "INSERT INTO pick_jobs (job_id, workstation_id, priority, state, paused_reason, content, "
    "seq, created_at, submitted_by, started_at, finished_at, moves, buckets_travelled, "
    "operator_wait_s) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET "
    "workstation_id = excluded.workstation_id, priority = excluded.priority, "
    "state = excluded.state, paused_reason = excluded.paused_reason, "
    "content = excluded.content, seq = excluded.seq, created_at = excluded.created_at, "
    "submitted_by = excluded.submitted_by, started_at = excluded.started_at, "
    "finished_at = excluded.finished_at, moves = excluded.moves, "
    "buckets_travelled = excluded.buckets_travelled, operator_wait_s = excluded.operator_wait_s"
)
_UPSERT_LINE = (
    "INSERT INTO pick_lines (job_id, line_id, idx, machine_id, position, quantity, sku, "
    "description, order_id, state, quantity_picked, reason, confirmed_by, confirmed_at, "
    "confirmation_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (job_id, line_id) DO UPDATE SET "
    "idx = excluded.idx, machine_id = excluded.machine_id, position = excluded.position, "
    "quantity = excluded.quantity, sku = excluded.sku, description = excluded.description, "
    "order_id = excluded.order_id, state = excluded.state, "
    "quantity_picked = excluded.quantity_picked, reason = excluded.reason, "
    "confirmed_by = excluded.confirmed_by, confirmed_at = excluded.confirmed_at, "
    "confirmation_id = excluded.confirmation_id"
)
#: A confirmation's record is written once: a batch written again after a commit whose
#: answer was lost (the engine keeps a failed batch for the next write) adds no second one.
_INSERT_HISTORY = (
    "INSERT INTO pick_history (job_id, at, what, by, line_id, quantity, reason, "
    "confirmation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, confirmation_id) "
    "WHERE confirmation_id IS NOT NULL DO NOTHING"
)
# Literals (bandit: no SQL built from strings); the values are bound.
_SELECT_LINES = (
    "SELECT job_id, line_id, idx, machine_id, position, quantity, sku, description, order_id, "
    "state, quantity_picked, reason, confirmed_by, confirmed_at, confirmation_id "
    "FROM pick_lines WHERE job_id IN "
    "(SELECT job_id FROM pick_jobs WHERE finished_at IS NULL OR finished_at > ?) "
    "ORDER BY job_id, idx"
)
_SELECT_JOBS = (
    "SELECT job_id, workstation_id, priority, state, paused_reason, content, seq, created_at, "
    "submitted_by, started_at, finished_at, moves, buckets_travelled, operator_wait_s "
    "FROM pick_jobs WHERE finished_at IS NULL OR finished_at > ? ORDER BY seq, created_at"
)
_KNOWN = "SELECT 1 FROM pick_jobs WHERE job_id = ?"

#: The same tables on PostgreSQL, with the ``cell``/``epoch`` columns the fence stamps
#: (``lease_store.fence_table``); created if missing (two gateways may start at once:
#: ``open_database`` holds an advisory lock meanwhile).
POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS pick_jobs (
    job_id          TEXT PRIMARY KEY,
    workstation_id  TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    state           TEXT NOT NULL,
    paused_reason   TEXT,
    content         TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    submitted_by    TEXT,
    started_at      DOUBLE PRECISION,
    finished_at     DOUBLE PRECISION,
    moves           INTEGER NOT NULL DEFAULT 0,
    buckets_travelled INTEGER NOT NULL DEFAULT 0,
    operator_wait_s DOUBLE PRECISION NOT NULL DEFAULT 0,
    cell            TEXT,
    epoch           BIGINT
);
CREATE INDEX IF NOT EXISTS pick_jobs_station ON pick_jobs (workstation_id, state);
CREATE TABLE IF NOT EXISTS pick_lines (
    job_id          TEXT NOT NULL REFERENCES pick_jobs (job_id),
    line_id         TEXT NOT NULL,
    idx             INTEGER NOT NULL,
    machine_id      TEXT NOT NULL,
    position        INTEGER NOT NULL,
    quantity        INTEGER NOT NULL,
    sku             TEXT,
    description     TEXT,
    order_id        TEXT,
    state           TEXT NOT NULL,
    quantity_picked INTEGER,
    reason          TEXT,
    confirmed_by    TEXT,
    confirmed_at    DOUBLE PRECISION,
    cell            TEXT,
    epoch           BIGINT,
    confirmation_id TEXT,
    PRIMARY KEY (job_id, line_id)
);
CREATE TABLE IF NOT EXISTS pick_history (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id    TEXT NOT NULL,
    at        DOUBLE PRECISION NOT NULL,
    what      TEXT NOT NULL,
    by        TEXT,
    line_id   TEXT,
    quantity  INTEGER,
    reason    TEXT,
    cell      TEXT,
    epoch     BIGINT,
    confirmation_id TEXT
);
CREATE INDEX IF NOT EXISTS pick_history_job ON pick_history (job_id, id);
DO $$
BEGIN
    -- Tables made before confirmation ids: the column added once (no lock taken after).
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema =
            current_schema() AND table_name = 'pick_lines' AND column_name = 'confirmation_id')
    THEN
        ALTER TABLE pick_lines ADD COLUMN confirmation_id TEXT;
        ALTER TABLE pick_history ADD COLUMN confirmation_id TEXT;
    END IF;
END $$;
CREATE UNIQUE INDEX IF NOT EXISTS pick_history_confirmation
    ON pick_history (job_id, confirmation_id) WHERE confirmation_id IS NOT NULL;
"""
#: The job tables a cell's lease fences.
FENCED_TABLES = ("pick_jobs", "pick_lines", "pick_history")


class JobWriteFenced(Exception):
    """The database refused a job write: this instance's epoch does not hold the cell's
    lease (or it holds none). Nothing of that write was committed."""


class _ThreadedJobStore:
    """The part both engines share: one connection on one thread, the same SQL, the same
    row <-> job code. Subclasses open the connection and say how a batch is written."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-store")

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        try:
            await self._run(self._close)
        finally:
            self._executor.shutdown(wait=True)

    async def load(self, finished_after: float) -> list[Job]:
        return await self._run(self._load, finished_after)

    async def known(self, job_id: str) -> bool:
        return await self._run(self._known, job_id)

    async def write(self, jobs: Sequence[Job], changes: Sequence[Change]) -> None:
        if not jobs and not changes:
            return
        rows = [_job_row(job) for job in jobs]
        lines = [
            _line_row(job, index, line) for job in jobs for index, line in enumerate(job.lines)
        ]
        history = [
            (c.job_id, c.at, c.what, c.by, c.line_id, c.quantity, c.reason, c.confirmation_id)
            for c in changes
        ]
        await self._run(self._write, rows, lines, history)

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- the store's thread ---------------------------------------------------------------

    def _open(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Rows readable by column name."""
        raise NotImplementedError

    def _write(
        self,
        rows: list[tuple[Any, ...]],
        lines: list[tuple[Any, ...]],
        history: list[tuple[Any, ...]],
    ) -> None:
        raise NotImplementedError

    def _known(self, job_id: str) -> bool:
        return bool(self._query(_KNOWN, (job_id,)))

    def _load(self, finished_after: float) -> list[Job]:
        lines: dict[str, list[Line]] = {}
        for row in self._query(_SELECT_LINES, (finished_after,)):
            lines.setdefault(row["job_id"], []).append(_line(row))
        return [
            _job(row, lines.get(row["job_id"], []))
            for row in self._query(_SELECT_JOBS, (finished_after,))
        ]


class SqliteJobStore(_ThreadedJobStore):
    """Jobs in SQLite (``path`` may be ``":memory:"``: kept for this process only)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        self._db: sqlite3.Connection | None = None

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a committed confirmation survives power loss
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("CREATE TABLE IF NOT EXISTS pick_schema (version INTEGER NOT NULL)")
        row = db.execute("SELECT MAX(version) FROM pick_schema").fetchone()
        version = row[0] or 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO pick_schema (version) VALUES (?)", (number,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.OperationalError("the job store is not open")
        return self._db

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return self._conn().execute(sql, params).fetchall()

    def _write(
        self,
        rows: list[tuple[Any, ...]],
        lines: list[tuple[Any, ...]],
        history: list[tuple[Any, ...]],
    ) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(_UPSERT_JOB, rows)
            db.executemany(_UPSERT_LINE, lines)
            db.executemany(_INSERT_HISTORY, history)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


class PostgresJobStore(_ThreadedJobStore):
    """Jobs in PostgreSQL (``[journal] url``), where the other gateway of the cell finds
    them after a takeover. With ``fence_cell`` (``[ha]``) the tables are fenced by the
    cell's lease: only a connection carrying the holder's epoch (:meth:`use_epoch`) may
    write, so a stale instance's confirmation is refused by the database itself."""

    def __init__(
        self,
        url: str,
        *,
        fence_cell: str | None = None,
        fence_idle_limit_s: float | None = None,
    ) -> None:
        super().__init__()
        self.url = url
        self.fence_cell = fence_cell
        #: A transaction of this session left idle this long is ended by the server (a
        #: frozen instance must not hold the lease row's lock: ``lease_store.use_epoch``).
        self.fence_idle_limit_s = fence_idle_limit_s
        #: The epoch this store writes as (None: as nobody; every fenced write refused).
        self.epoch: int | None = None
        #: Writes the database refused because this instance's epoch was stale.
        self.fenced_writes = 0
        self._db: Database | None = None
        self._open_wanted = False

    async def use_epoch(self, epoch: int | None) -> None:
        """Write as ``epoch`` of the cell from now on; set again after a reconnect."""
        self.epoch = epoch
        await self._run(self._apply_epoch)

    def _apply_epoch(self) -> None:
        if self.fence_cell is None:
            return
        db = self._conn()
        lease_store.use_epoch(db, self.fence_cell, self.epoch, self.fence_idle_limit_s)

    def _open(self) -> None:
        db = open_database(self.url, sqlite_schema="", postgres_schema=POSTGRES_SCHEMA)
        try:
            if self.fence_cell is not None:
                lease_store.ensure_schema(db)
                for table in FENCED_TABLES:
                    lease_store.fence_table(db, table)
        except BaseException:
            db.close()
            raise
        self._db = db
        self._open_wanted = True
        if self.epoch is not None:
            self._apply_epoch()  # a new connection holds no token: give it ours again

    def _close(self) -> None:
        self._open_wanted = False
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> Database:
        if self._db is not None and not self._db.usable:
            # The connection was lost (a server restart, a network cut): open a new one.
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None
        if self._db is None:
            if not self._open_wanted:
                raise DatabaseError("the job store is not open")
            self._open()
        assert self._db is not None
        return self._db

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return self._conn().query(sql, params)

    def _write(
        self,
        rows: list[tuple[Any, ...]],
        lines: list[tuple[Any, ...]],
        history: list[tuple[Any, ...]],
    ) -> None:
        db = self._conn()
        try:
            with db.transaction():
                for statement, batch in (
                    (_UPSERT_JOB, rows),
                    (_UPSERT_LINE, lines),
                    (_INSERT_HISTORY, history),
                ):
                    for params in batch:
                        db.execute(statement, params)
        except Exception as exc:
            if getattr(exc, "sqlstate", None) == lease_store.FENCED_SQLSTATE:
                self.fenced_writes += 1
                raise JobWriteFenced(
                    f"the database refused the job write: {str(exc).strip()} "
                    "(this gateway does not hold the cell's lease)"
                ) from None
            raise


def _line(row: Any) -> Line:
    return Line(
        line_id=row["line_id"],
        machine_id=row["machine_id"],
        position=row["position"],
        quantity=row["quantity"],
        sku=row["sku"],
        description=row["description"],
        order_id=row["order_id"],
        state=JobLineState(row["state"]),
        quantity_picked=row["quantity_picked"],
        reason=row["reason"],
        confirmed_by=row["confirmed_by"],
        confirmed_at=row["confirmed_at"],
        confirmation_id=row["confirmation_id"],
    )


def _job(row: Any, lines: list[Line]) -> Job:
    return Job(
        job_id=row["job_id"],
        workstation_id=row["workstation_id"],
        priority=row["priority"],
        state=JobState(row["state"]),
        paused_reason=row["paused_reason"],
        content=row["content"],
        seq=row["seq"],
        created_at=row["created_at"],
        submitted_by=row["submitted_by"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        moves=row["moves"],
        buckets_travelled=row["buckets_travelled"],
        operator_wait_s=row["operator_wait_s"],
        lines=lines,
    )


def _job_row(job: Job) -> tuple[Any, ...]:
    return (
        job.job_id,
        job.workstation_id,
        job.priority,
        job.state.value,
        job.paused_reason,
        job.content,
        job.seq,
        job.created_at,
        job.submitted_by,
        job.started_at,
        job.finished_at,
        job.moves,
        job.buckets_travelled,
        job.operator_wait_s,
    )


def _line_row(job: Job, index: int, line: Line) -> tuple[Any, ...]:
    return (
        job.job_id,
        line.line_id,
        index,
        line.machine_id,
        line.position,
        line.quantity,
        line.sku,
        line.description,
        line.order_id,
        line.state.value,
        line.quantity_picked,
        line.reason,
        line.confirmed_by,
        line.confirmed_at,
        line.confirmation_id,
    )
