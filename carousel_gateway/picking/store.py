"""Where jobs are kept: SQLite tables of their own in the journal's database file.

Every write is committed (``synchronous=FULL``) before the engine acknowledges it, so a
SIGKILL loses no acknowledged submission, confirmation or state change. Like the journal,
all database work runs on one dedicated thread (a connection belongs to its thread) so the
event loop never waits on the disk. :class:`JobStore` is the seam: another database (issue
18: PostgreSQL) replaces :class:`SqliteJobStore` without the engine changing.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from carousel_gateway.picking.jobs import Job, Line
from carousel_gateway.picking.workstation import Change
from carousel_gateway.wire.jobs import JobLineState, JobState

__all__ = ["MIGRATIONS", "JobStore", "SqliteJobStore"]

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
)

_JOB_COLUMNS = (
    "job_id, workstation_id, priority, state, paused_reason, content, seq, created_at, "
    "submitted_by, started_at, finished_at, moves, buckets_travelled, operator_wait_s"
)
_LINE_COLUMNS = (
    "job_id, line_id, idx, machine_id, position, quantity, sku, description, order_id, "
    "state, quantity_picked, reason, confirmed_by, confirmed_at"
)


class SqliteJobStore:
    """Jobs in SQLite (``path`` may be ``":memory:"``: kept for this process only)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-store")
        self._db: sqlite3.Connection | None = None

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
        history = [(c.job_id, c.at, c.what, c.by, c.line_id, c.quantity, c.reason) for c in changes]
        await self._run(self._write, rows, lines, history)

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- the store's thread ---------------------------------------------------------------

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
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

    def _write(
        self,
        rows: list[tuple[Any, ...]],
        lines: list[tuple[Any, ...]],
        history: list[tuple[Any, ...]],
    ) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                f"INSERT OR REPLACE INTO pick_jobs ({_JOB_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.executemany(
                f"INSERT OR REPLACE INTO pick_lines ({_LINE_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                lines,
            )
            db.executemany(
                "INSERT INTO pick_history (job_id, at, what, by, line_id, quantity, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                history,
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _known(self, job_id: str) -> bool:
        db = self._conn()
        return (
            db.execute("SELECT 1 FROM pick_jobs WHERE job_id = ?", (job_id,)).fetchone() is not None
        )

    def _load(self, finished_after: float) -> list[Job]:
        db = self._conn()
        lines: dict[str, list[Line]] = {}
        wanted = "(finished_at IS NULL OR finished_at > ?)"
        # Column names come from this module, never from input; values are bound.
        for row in db.execute(
            f"SELECT {_LINE_COLUMNS} FROM pick_lines WHERE job_id IN "  # nosec B608
            f"(SELECT job_id FROM pick_jobs WHERE {wanted}) ORDER BY job_id, idx",
            (finished_after,),
        ):
            lines.setdefault(row[0], []).append(
                Line(
                    line_id=row[1],
                    machine_id=row[3],
                    position=row[4],
                    quantity=row[5],
                    sku=row[6],
                    description=row[7],
                    order_id=row[8],
                    state=JobLineState(row[9]),
                    quantity_picked=row[10],
                    reason=row[11],
                    confirmed_by=row[12],
                    confirmed_at=row[13],
                )
            )
        jobs = []
        for row in db.execute(
            f"SELECT {_JOB_COLUMNS} FROM pick_jobs WHERE {wanted} "  # nosec B608
            "ORDER BY seq, created_at",
            (finished_after,),
        ):
            jobs.append(
                Job(
                    job_id=row[0],
                    workstation_id=row[1],
                    priority=row[2],
                    state=JobState(row[3]),
                    paused_reason=row[4],
                    content=row[5],
                    seq=row[6],
                    created_at=row[7],
                    submitted_by=row[8],
                    started_at=row[9],
                    finished_at=row[10],
                    moves=row[11],
                    buckets_travelled=row[12],
                    operator_wait_s=row[13],
                    lines=lines.get(row[0], []),
                )
            )
        return jobs


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
    )
