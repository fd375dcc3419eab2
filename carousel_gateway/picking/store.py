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
from dataclasses import dataclass
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
    "Committed",
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

    async def committed(self, finished_after: float, after: int | None) -> Committed:
        """Read-only, in one snapshot: the jobs as :meth:`load` gives them, and the history
        lines written after the line ``after`` (None: none, only where it stands now)."""
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
_HISTORY_SINCE = (
    "SELECT id, job_id, at, what, by, line_id, quantity, reason FROM pick_history "
    "WHERE id > ? ORDER BY id LIMIT 1000"
)
_HISTORY_LAST = "SELECT coalesce(max(id), 0) AS last FROM pick_history"

#: PostgreSQL: the same within one cell. Two cells may share one database, so a job id is
#: unique per cell: every key starts with ``cell`` and every read is of the store's cell.
_PG_UPSERT_JOB = (
    "INSERT INTO pick_jobs (cell, job_id, workstation_id, priority, state, paused_reason, "
    "content, seq, created_at, submitted_by, started_at, finished_at, moves, "
    "buckets_travelled, operator_wait_s) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cell, job_id) DO UPDATE "
    "SET workstation_id = excluded.workstation_id, priority = excluded.priority, "
    "state = excluded.state, paused_reason = excluded.paused_reason, "
    "content = excluded.content, seq = excluded.seq, created_at = excluded.created_at, "
    "submitted_by = excluded.submitted_by, started_at = excluded.started_at, "
    "finished_at = excluded.finished_at, moves = excluded.moves, "
    "buckets_travelled = excluded.buckets_travelled, operator_wait_s = excluded.operator_wait_s"
)
_PG_UPSERT_LINE = (
    "INSERT INTO pick_lines (cell, job_id, line_id, idx, machine_id, position, quantity, sku, "
    "description, order_id, state, quantity_picked, reason, confirmed_by, confirmed_at, "
    "confirmation_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (cell, job_id, line_id) DO UPDATE SET "
    "idx = excluded.idx, machine_id = excluded.machine_id, position = excluded.position, "
    "quantity = excluded.quantity, sku = excluded.sku, description = excluded.description, "
    "order_id = excluded.order_id, state = excluded.state, "
    "quantity_picked = excluded.quantity_picked, reason = excluded.reason, "
    "confirmed_by = excluded.confirmed_by, confirmed_at = excluded.confirmed_at, "
    "confirmation_id = excluded.confirmation_id"
)
_PG_INSERT_HISTORY = (
    "INSERT INTO pick_history (cell, job_id, at, what, by, line_id, quantity, reason, "
    "confirmation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (cell, job_id, confirmation_id) WHERE confirmation_id IS NOT NULL DO NOTHING"
)
_PG_SELECT_LINES = (
    "SELECT job_id, line_id, idx, machine_id, position, quantity, sku, description, order_id, "
    "state, quantity_picked, reason, confirmed_by, confirmed_at, confirmation_id "
    "FROM pick_lines "
    "WHERE cell = ? AND job_id IN (SELECT job_id FROM pick_jobs "
    "WHERE cell = ? AND (finished_at IS NULL OR finished_at > ?)) ORDER BY job_id, idx"
)
_PG_SELECT_JOBS = (
    "SELECT job_id, workstation_id, priority, state, paused_reason, content, seq, created_at, "
    "submitted_by, started_at, finished_at, moves, buckets_travelled, operator_wait_s "
    "FROM pick_jobs WHERE cell = ? AND (finished_at IS NULL OR finished_at > ?) "
    "ORDER BY seq, created_at"
)
_PG_KNOWN = "SELECT 1 FROM pick_jobs WHERE cell = ? AND job_id = ?"
_PG_HISTORY_SINCE = (
    "SELECT id, job_id, at, what, by, line_id, quantity, reason FROM pick_history "
    "WHERE cell = ? AND id > ? ORDER BY id LIMIT 1000"
)
_PG_HISTORY_LAST = "SELECT coalesce(max(id), 0) AS last FROM pick_history WHERE cell = ?"
#: A standby reads again only the jobs written since its last read: every write of a job
#: rewrites its row (with its lines), which gives the row a new ``xmin``.
_PG_JOB_VERSIONS = (
    "SELECT job_id, xmin::text AS version FROM pick_jobs "
    "WHERE cell = ? AND (finished_at IS NULL OR finished_at > ?) ORDER BY seq, created_at"
)
_PG_SELECT_SOME_LINES = (
    "SELECT job_id, line_id, idx, machine_id, position, quantity, sku, description, order_id, "
    "state, quantity_picked, reason, confirmed_by, confirmed_at, confirmation_id "
    "FROM pick_lines "
    "WHERE cell = ? AND job_id = ANY(?) ORDER BY job_id, idx"
)
_PG_SELECT_SOME_JOBS = (
    "SELECT job_id, workstation_id, priority, state, paused_reason, content, seq, created_at, "
    "submitted_by, started_at, finished_at, moves, buckets_travelled, operator_wait_s "
    "FROM pick_jobs WHERE cell = ? AND job_id = ANY(?)"
)

#: The same tables on PostgreSQL, with the ``cell``/``epoch`` columns the fence stamps
#: (``lease_store.fence_table``); created if missing (two gateways may start at once:
#: ``open_database`` holds an advisory lock meanwhile).
POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS pick_jobs (
    job_id          TEXT NOT NULL,
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
    cell            TEXT NOT NULL DEFAULT '',
    epoch           BIGINT,
    PRIMARY KEY (cell, job_id)
);
CREATE INDEX IF NOT EXISTS pick_jobs_station ON pick_jobs (workstation_id, state);
CREATE TABLE IF NOT EXISTS pick_lines (
    job_id          TEXT NOT NULL,
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
    cell            TEXT NOT NULL DEFAULT '',
    epoch           BIGINT,
    confirmation_id TEXT,
    PRIMARY KEY (cell, job_id, line_id),
    FOREIGN KEY (cell, job_id) REFERENCES pick_jobs (cell, job_id)
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
    cell      TEXT NOT NULL DEFAULT '',
    epoch     BIGINT,
    confirmation_id TEXT
);
-- Before job ids were per cell (the key was job_id alone): bring the tables to the keys
-- above. Rows written without a cell (no [ha]) belong to the cell ''. The fence's
-- triggers are off meanwhile: this fills a column, it writes no job.
DO $migrate$
DECLARE
    old RECORD;
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
        WHERE i.indrelid = 'pick_jobs'::regclass AND i.indisprimary AND a.attname = 'cell'
    ) THEN
        RETURN;
    END IF;
    ALTER TABLE pick_jobs DISABLE TRIGGER USER;
    ALTER TABLE pick_lines DISABLE TRIGGER USER;
    ALTER TABLE pick_history DISABLE TRIGGER USER;
    UPDATE pick_jobs SET cell = '' WHERE cell IS NULL;
    UPDATE pick_lines SET cell = '' WHERE cell IS NULL;
    UPDATE pick_history SET cell = '' WHERE cell IS NULL;
    ALTER TABLE pick_jobs ENABLE TRIGGER USER;
    ALTER TABLE pick_lines ENABLE TRIGGER USER;
    ALTER TABLE pick_history ENABLE TRIGGER USER;
    FOR old IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = 'pick_lines'::regclass AND contype IN ('f', 'p')
    LOOP
        EXECUTE format('ALTER TABLE pick_lines DROP CONSTRAINT %I', old.conname);
    END LOOP;
    FOR old IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = 'pick_jobs'::regclass AND contype = 'p'
    LOOP
        EXECUTE format('ALTER TABLE pick_jobs DROP CONSTRAINT %I', old.conname);
    END LOOP;
    ALTER TABLE pick_jobs ALTER COLUMN cell SET DEFAULT '', ALTER COLUMN cell SET NOT NULL,
        ADD PRIMARY KEY (cell, job_id);
    ALTER TABLE pick_lines ALTER COLUMN cell SET DEFAULT '', ALTER COLUMN cell SET NOT NULL,
        ADD PRIMARY KEY (cell, job_id, line_id),
        ADD FOREIGN KEY (cell, job_id) REFERENCES pick_jobs (cell, job_id);
    ALTER TABLE pick_history ALTER COLUMN cell SET DEFAULT '',
        ALTER COLUMN cell SET NOT NULL;
    DROP INDEX IF EXISTS pick_history_job;
END
$migrate$;
CREATE INDEX IF NOT EXISTS pick_history_cell_job ON pick_history (cell, job_id, id);
-- What a load reads (a standby, every renew_s): the cell's open and recently ended jobs.
CREATE INDEX IF NOT EXISTS pick_jobs_cell_finished ON pick_jobs (cell, finished_at);
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
CREATE UNIQUE INDEX IF NOT EXISTS pick_history_cell_confirmation
    ON pick_history (cell, job_id, confirmation_id) WHERE confirmation_id IS NOT NULL;
"""
#: The job tables a cell's lease fences.
FENCED_TABLES = ("pick_jobs", "pick_lines", "pick_history")



def _change_row(change: Change) -> tuple[Any, ...]:
    """A history line's columns after the scope (``cell`` on PostgreSQL)."""
    return (
        change.job_id,
        change.at,
        change.what,
        change.by,
        change.line_id,
        change.quantity,
        change.reason,
        change.confirmation_id,
    )

class JobWriteFenced(Exception):
    """The database refused a job write: this instance's epoch does not hold the cell's
    lease (or it holds none). Nothing of that write was committed."""


@dataclass(frozen=True, slots=True)
class Committed:
    """The jobs as the last committed write left them, and the history lines written since
    the ``after`` asked for (what a standby of the cell shows, read in one snapshot)."""

    jobs: list[Job]
    changes: list[Change]
    #: The id of the last history line there is: pass it as ``after`` next time.
    last: int


class _ThreadedJobStore:
    """The part both engines share: one connection on one thread, the same SQL, the same
    row <-> job code. Subclasses open the connection and say how a batch is written."""

    _upsert_job = _UPSERT_JOB
    _upsert_line = _UPSERT_LINE
    _insert_history = _INSERT_HISTORY
    _select_lines = _SELECT_LINES
    _select_jobs = _SELECT_JOBS
    _select_known = _KNOWN
    _history_since = _HISTORY_SINCE
    _history_last = _HISTORY_LAST

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-store")
        #: What every key and every read starts with (PostgreSQL: the cell).
        self._scope: tuple[Any, ...] = ()

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

    async def committed(self, finished_after: float, after: int | None) -> Committed:
        return await self._run(self._committed, finished_after, after)

    async def write(self, jobs: Sequence[Job], changes: Sequence[Change]) -> None:
        if not jobs and not changes:
            return
        scope = self._scope
        rows = [(*scope, *_job_row(job)) for job in jobs]
        lines = [
            (*scope, *_line_row(job, index, line))
            for job in jobs
            for index, line in enumerate(job.lines)
        ]
        history = [
            (*scope, *_change_row(change)) for change in changes
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

    def _snapshot(self, fn: Callable[[], _T]) -> _T:
        """``fn``'s reads, all of one committed state (read-only)."""
        return fn()

    def _known(self, job_id: str) -> bool:
        return bool(self._query(self._select_known, (*self._scope, job_id)))

    def _load(self, finished_after: float) -> list[Job]:
        lines: dict[str, list[Line]] = {}
        scope = self._scope
        for row in self._query(self._select_lines, (*scope, *scope, finished_after)):
            lines.setdefault(row["job_id"], []).append(_line(row))
        return [
            _job(row, lines.get(row["job_id"], []))
            for row in self._query(self._select_jobs, (*scope, finished_after))
        ]

    def _committed(self, finished_after: float, after: int | None) -> Committed:
        def read() -> Committed:
            changes: list[Change] = []
            if after is None:  # the first read: only where the history stands
                (row,) = self._query(self._history_last, self._scope)
                last = int(row["last"])
            else:
                last = after
                for row in self._query(self._history_since, (*self._scope, after)):
                    last = int(row["id"])
                    changes.append(
                        Change(
                            row["job_id"],
                            row["at"],
                            row["what"],
                            row["by"],
                            row["line_id"],
                            row["quantity"],
                            row["reason"],
                        )
                    )
            return Committed(self._load_committed(finished_after), changes, last)

        return self._snapshot(read)

    def _load_committed(self, finished_after: float) -> list[Job]:
        return self._load(finished_after)


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
            db.executemany(self._upsert_job, rows)
            db.executemany(self._upsert_line, lines)
            db.executemany(self._insert_history, history)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


class PostgresJobStore(_ThreadedJobStore):
    """Jobs in PostgreSQL (``[journal] url``), where the other gateway of the cell finds
    them after a takeover. With ``fence_cell`` (``[ha]``) the tables are fenced by the
    cell's lease: only a connection carrying the holder's epoch (:meth:`use_epoch`) may
    write, so a stale instance's confirmation is refused by the database itself. Job ids
    are unique per cell (``fence_cell``; '' without ``[ha]``): two cells may share one
    database and never see each other's jobs."""

    _upsert_job = _PG_UPSERT_JOB
    _upsert_line = _PG_UPSERT_LINE
    _insert_history = _PG_INSERT_HISTORY
    _select_lines = _PG_SELECT_LINES
    _select_jobs = _PG_SELECT_JOBS
    _select_known = _PG_KNOWN
    _history_since = _PG_HISTORY_SINCE
    _history_last = _PG_HISTORY_LAST

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
        #: The cell whose jobs these are (the fence stamps the same on every write).
        self.cell = fence_cell or ""
        self._scope = (self.cell,)
        #: A transaction of this session left idle this long is ended by the server (a
        #: frozen instance must not hold the lease row's lock: ``lease_store.use_epoch``).
        self.fence_idle_limit_s = fence_idle_limit_s
        #: The epoch this store writes as (None: as nobody; every fenced write refused).
        self.epoch: int | None = None
        #: Writes the database refused because this instance's epoch was stale.
        self.fenced_writes = 0
        self._db: Database | None = None
        self._open_wanted = False
        #: What :meth:`committed` read last: job id -> (row version, job). Its jobs are
        #: never changed (a takeover loads its own with :meth:`load`).
        self._followed: dict[str, tuple[str, Job]] = {}

    async def use_epoch(self, epoch: int | None) -> None:
        """Write as ``epoch`` of the cell from now on; set again after a reconnect."""
        self.epoch = epoch
        await self._run(self._apply_epoch)

    def _apply_epoch(self) -> None:
        self._followed = {}  # what a standby read: of no more use to an active one
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

    def _load_committed(self, finished_after: float) -> list[Job]:
        """As :meth:`_load`, reading again only the jobs written since the last call."""
        order = [
            (row["job_id"], row["version"])
            for row in self._query(_PG_JOB_VERSIONS, (self.cell, finished_after))
        ]
        known = self._followed
        wanted = [job_id for job_id, version in order if known.get(job_id, ("",))[0] != version]
        fresh: dict[str, Job] = {}
        if wanted:
            lines: dict[str, list[Line]] = {}
            for row in self._query(_PG_SELECT_SOME_LINES, (self.cell, wanted)):
                lines.setdefault(row["job_id"], []).append(_line(row))
            for row in self._query(_PG_SELECT_SOME_JOBS, (self.cell, wanted)):
                fresh[row["job_id"]] = _job(row, lines.get(row["job_id"], []))
        self._followed = {
            job_id: (version, fresh[job_id] if job_id in fresh else known[job_id][1])
            for job_id, version in order
            if job_id in fresh or job_id in known
        }
        return [self._followed[job_id][1] for job_id, _ in order if job_id in self._followed]

    def _snapshot(self, fn: Callable[[], _T]) -> _T:
        db = self._conn()
        with db.transaction():
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return fn()

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
                    (self._upsert_job, rows),
                    (self._upsert_line, lines),
                    (self._insert_history, history),
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
