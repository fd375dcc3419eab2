"""The journal: every command and machine event in SQL, plus maintenance counters.

SQLite by default (a file), PostgreSQL when ``[journal] url`` names one
(:mod:`carousel_gateway.database`); the same SQL runs on both. All database work runs on
one dedicated thread (SQLite connections belong to the thread that opened them), so the
event loop never blocks on disk or network. Machine events are queued and
written in batches; a command is written and committed *before* its result is sent (the
machine awaits :meth:`Journal.record_command`), so a client never holds a result that the
journal lost. If the disk fails, the gateway goes on running the machines: the journal
reports itself degraded, logs once a minute, and counts what it had to drop: any write
that fails, whatever the exception, is counted (``dropped``, shown in health).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from carousel_gateway.database import (
    Database,
    DatabaseError,
    Row,
    is_database_error,
    open_database,
    redact_url,
)
from carousel_gateway.fleet.events import (
    CommandAccepted,
    CommandRefused,
    ConnectionChanged,
    Event,
    FaultCleared,
    FaultRaised,
    MoveCompleted,
    MoveFailed,
    MoveIntent,
    StatusChanged,
)
from carousel_gateway.ha import lease_store
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.plc.supervisor import CLOSED_BY_GATEWAY

# The row kinds a history query can filter on are the wire's (``get_history`` names them);
# re-exported for the APIs that validate against them.
from carousel_gateway.wire import KINDS as KINDS
from carousel_gateway.wire import HistoryKind as HistoryKind

__all__ = [
    "INTENTS_SCHEMA",
    "KINDS",
    "MEASURED_COUNTERS",
    "POSTGRES_SCHEMA",
    "RAW_TEXT_LIMIT",
    "SCHEMA",
    "FencedWrite",
    "HistoryKind",
    "HistoryPage",
    "Journal",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          REAL    NOT NULL,
    machine_id  TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    boot        TEXT,
    command_id  INTEGER,
    client      TEXT,
    channel     TEXT,
    command     INTEGER,
    argument    INTEGER,
    code        TEXT,
    skipped     INTEGER,
    latency_s   REAL,
    outcome     TEXT,
    reasons     TEXT,
    duration_s  REAL,
    completed_at REAL,
    data        TEXT
);
CREATE INDEX IF NOT EXISTS journal_machine ON journal (machine_id, id);
CREATE INDEX IF NOT EXISTS journal_at ON journal (at);
CREATE UNIQUE INDEX IF NOT EXISTS journal_command ON journal (boot, command_id)
    WHERE command_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters (
    machine_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (machine_id, name)
);
CREATE TABLE IF NOT EXISTS mqtt_node (
    node        TEXT    PRIMARY KEY,
    bd_seq      INTEGER NOT NULL
);
"""

#: The same tables on PostgreSQL (the same columns, names and meanings).
POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          DOUBLE PRECISION NOT NULL,
    machine_id  TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    boot        TEXT,
    command_id  BIGINT,
    client      TEXT,
    channel     TEXT,
    command     BIGINT,
    argument    BIGINT,
    code        TEXT,
    skipped     INTEGER,
    latency_s   DOUBLE PRECISION,
    outcome     TEXT,
    reasons     TEXT,
    duration_s  DOUBLE PRECISION,
    completed_at DOUBLE PRECISION,
    data        TEXT
);
CREATE INDEX IF NOT EXISTS journal_machine ON journal (machine_id, id);
CREATE INDEX IF NOT EXISTS journal_at ON journal (at);
CREATE UNIQUE INDEX IF NOT EXISTS journal_command ON journal (boot, command_id)
    WHERE command_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters (
    machine_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (machine_id, name)
);
CREATE TABLE IF NOT EXISTS mqtt_node (
    node        TEXT    PRIMARY KEY,
    bd_seq      INTEGER NOT NULL
);
"""

#: Two gateways per cell (PostgreSQL only): every MOVE's intent, committed under the
#: writer's lease epoch before the MOVE is written (fenced: ``lease_store.fence_table``).
#: The trigger stamps ``cell`` and ``epoch`` on every write, so ``epoch`` is the epoch of
#: the last write (an outcome's); ``intent_epoch`` keeps the epoch the MOVE was sent under.
INTENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS move_intents (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    boot            TEXT NOT NULL,
    command_id      BIGINT NOT NULL,
    machine_id      TEXT NOT NULL,
    target          INTEGER NOT NULL,
    origin_channel  TEXT NOT NULL,
    origin_client   TEXT NOT NULL,
    intent_epoch    BIGINT NOT NULL,
    cell            TEXT,
    epoch           BIGINT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    outcome         TEXT CHECK (outcome IN ('completed', 'failed', 'lost', 'refused')),
    outcome_at      TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS move_intents_open ON move_intents (cell) WHERE outcome IS NULL;
CREATE INDEX IF NOT EXISTS move_intents_command ON move_intents (boot, command_id);
CREATE TABLE IF NOT EXISTS machine_snapshots (
    cell        TEXT NOT NULL,
    machine_id  TEXT NOT NULL,
    position    INTEGER,
    raw_status  INTEGER,
    updated_at  DOUBLE PRECISION,
    epoch       BIGINT,
    PRIMARY KEY (cell, machine_id)
);
"""


class FencedWrite(Exception):
    """The database refused a write: this instance's epoch does not hold the cell's lease
    (SQLSTATE ``CGF01``), or it has no epoch at all."""


#: The range of an SQLite INTEGER (a larger Python int makes an insert fail).
SQLITE_INT_MIN, SQLITE_INT_MAX = -(2**63), 2**63 - 1
#: Counters that measure an amount (a float); every other counter counts (an int).
MEASURED_COUNTERS = frozenset({"seconds_in_motion"})
#: Longest text kept for a refused command's value that no integer column can hold.
RAW_TEXT_LIMIT = 64


@dataclass(frozen=True, slots=True)
class HistoryPage:
    rows: list[dict[str, Any]]
    next_cursor: int | None  # pass back as ``cursor`` for the next (older) page


class Journal:
    """SQL journal fed by the EventBus; reads are async and never block the loop.

    ``target`` is a SQLite file path or a ``postgresql://`` URL."""

    def __init__(
        self,
        target: str | Path,
        *,
        retention_days: float = 90.0,
        queue_limit: int = 100_000,
        prune_interval_s: float = 3600.0,
        reopen_interval_s: float = 2.0,
        fence_cell: str | None = None,
        fence_idle_limit_s: float | None = None,
    ) -> None:
        #: Where the journal is, fit for a log (a URL's password hidden).
        self.target = target if isinstance(target, Path) else _target(target)
        self.where = redact_url(str(target))
        self.retention_days = retention_days
        self.queue_limit = queue_limit
        self.prune_interval_s = prune_interval_s
        self.boot = uuid.uuid4().hex[:12]  # command ids restart with the process
        self.dropped = 0
        self.last_error: str | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._db: Database | None = None
        self._open_wanted = False  # between start() and stop(): reopen a lost connection
        #: A lost server is tried again at most this often; writes meanwhile fail at once
        #: (dropped, counted) instead of each waiting out a connect timeout.
        self.reopen_interval_s = reopen_interval_s
        self._next_reopen = 0.0
        self._lost_because = "connection lost"
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._last_complaint = 0.0
        self._writing = 0
        #: Two gateways per cell (PostgreSQL): the cell whose lease fences the intents,
        #: and the epoch this instance holds (its connection's token; None: standby).
        self.fence_cell = fence_cell
        #: A transaction of this session left idle this long is ended by the server (a
        #: frozen instance must not hold the lease row's lock: ``lease_store.use_epoch``).
        self.fence_idle_limit_s = fence_idle_limit_s
        self.epoch: int | None = None
        #: Writes the database refused because this instance's epoch was stale.
        self.fenced_writes = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self._run(self._open)
        loop = asyncio.get_running_loop()
        self._writer = loop.create_task(self._write_forever(), name="journal-writer")
        self._pruner = loop.create_task(self._prune_forever(), name="journal-pruner")

    async def stop(self) -> None:
        """Write what is queued, then close."""
        for task in (self._pruner,):
            if task is not None:
                task.cancel()
        if self._writer is not None:
            await self._queue.join()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        with contextlib.suppress(Exception):
            await self._run(self._close)
        self._executor.shutdown(wait=True)

    @property
    def healthy(self) -> bool:
        return self.last_error is None

    @property
    def pending(self) -> int:
        """Records queued or being written."""
        return self._queue.qsize() + self._writing

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or dropped)."""
        await self._queue.join()

    # -- writing --------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """EventBus handler: queue everything worth keeping (commands are written by
        :meth:`record_command` instead, before their result goes out)."""
        if isinstance(event, CommandAccepted | CommandRefused):
            return
        if isinstance(event, StatusChanged):
            # Two gateways per cell: the active keeps each machine's latest state in the
            # database, where the standby reads it (fenced like every shared write).
            if self.fence_cell is None or self.epoch is None:
                return
        elif not isinstance(
            event, MoveCompleted | MoveFailed | ConnectionChanged | FaultRaised | FaultCleared
        ) and not _is_extra_event(event):
            return
        if self._queue.qsize() >= self.queue_limit:
            self._drop(1, "journal queue full")
            return
        self._queue.put_nowait(event)

    async def record_command(self, event: CommandAccepted | CommandRefused, **extra: Any) -> None:
        """Write and commit one command row; returns once it is on disk (or failed)."""
        try:
            await self._run(self._insert_command, event, extra)
        except Exception as exc:  # any failure is a dropped row, never a crashed command
            self._failed(exc)
            self._drop(1, "command row not written")
        else:
            self._recovered()

    # -- two gateways per cell: the lease epoch and the MOVE intents ---------------------

    async def use_epoch(self, epoch: int | None) -> None:
        """Write as ``epoch`` of the cell from now on (None: as nobody, i.e. every fenced
        write is refused); set again by itself after a reconnect."""
        self.epoch = epoch
        await self._run(self._apply_epoch)

    async def commit_intent(self, intent: MoveIntent) -> int:
        """Commit ``intent`` under this instance's epoch before its MOVE is written; its id.
        Raises :class:`FencedWrite` when the database refuses the epoch, and the engine's
        error when the database cannot be reached: either way the MOVE must not be sent."""
        try:
            return await self._run(self._insert_intent, intent)
        except Exception as exc:
            if _fenced(exc):
                self.fenced_writes += 1
                raise FencedWrite(str(exc).strip()) from None
            raise

    async def settle_intent(self, intent: MoveIntent, outcome: str) -> None:
        """Record an intent's outcome now (``refused``: admitted, but never written)."""
        try:
            await self._run(self._settle_intent, intent.command_id, outcome)
        except Exception as exc:
            if _fenced(exc):
                self.fenced_writes += 1
            self._failed(exc)

    async def mark_lost(self) -> list[dict[str, Any]]:
        """Every intent of the cell left without an outcome becomes ``lost``, in one
        statement (each exactly once, whoever else tries); the rows marked."""
        try:
            return await self._run(self._mark_lost)
        except Exception as exc:
            if _fenced(exc):
                self.fenced_writes += 1
                raise FencedWrite(str(exc).strip()) from None
            raise

    async def orphaned_intents(self) -> list[dict[str, Any]]:
        """The cell's intents with no outcome (read-only)."""
        return await self._run(self._orphaned_intents)

    async def intents(self) -> list[dict[str, Any]]:
        """Every intent of the cell, oldest first (tests, diagnostics)."""
        return await self._run(self._all_intents)

    def _apply_epoch(self) -> None:
        db = self._conn()
        if self.fence_cell is None or db.engine != "postgresql":
            return
        lease_store.use_epoch(db, self.fence_cell, self.epoch, self.fence_idle_limit_s)

    def _insert_intent(self, intent: MoveIntent) -> int:
        db = self._conn()
        (row,) = db.query(
            "INSERT INTO move_intents (boot, command_id, machine_id, target, origin_channel,"
            " origin_client, intent_epoch) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                self.boot,
                intent.command_id,
                intent.machine_id,
                intent.target,
                intent.origin.channel.value,
                intent.origin.client,
                -1 if self.epoch is None else self.epoch,
            ),
        )
        return int(row["id"])

    def _settle_intent(self, command_id: int, outcome: str) -> int:
        return self._conn().execute(
            "UPDATE move_intents SET outcome = ?, outcome_at = now()"
            " WHERE boot = ? AND command_id = ? AND outcome IS NULL",
            (outcome, self.boot, command_id),
        )

    def _mark_lost(self) -> list[dict[str, Any]]:
        rows = self._conn().query(
            "UPDATE move_intents SET outcome = 'lost', outcome_at = now()"
            " WHERE cell = ? AND outcome IS NULL RETURNING *",
            (self.fence_cell,),
        )
        return [dict(row) for row in rows]

    def _orphaned_intents(self) -> list[dict[str, Any]]:
        rows = self._conn().query(
            "SELECT * FROM move_intents WHERE cell = ? AND outcome IS NULL ORDER BY id",
            (self.fence_cell,),
        )
        return [dict(row) for row in rows]

    def _all_intents(self) -> list[dict[str, Any]]:
        rows = self._conn().query(
            "SELECT * FROM move_intents WHERE cell = ? ORDER BY id", (self.fence_cell,)
        )
        return [dict(row) for row in rows]

    async def _write_forever(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while not self._queue.empty() and len(batch) < 500:
                batch.append(self._queue.get_nowait())
            self._writing = len(batch)
            try:
                await self._run(self._insert_events, batch)
            except Exception as exc:  # the writer must outlive any bad batch
                self._failed(exc)
                self._drop(len(batch), "events not written")
            else:
                self._recovered()
            finally:
                self._writing = 0
                for _ in batch:
                    self._queue.task_done()

    async def _prune_forever(self) -> None:
        while True:
            try:
                removed = await self._run(self._prune)
                if removed:
                    log.info(
                        "journal: pruned %d rows older than %g days", removed, self.retention_days
                    )
            except Exception as exc:
                self._failed(exc)
            await asyncio.sleep(self.prune_interval_s)

    def _failed(self, exc: Exception) -> None:
        # The engines' own errors read well alone; anything else is named (a bug to fix).
        self.last_error = (
            str(exc).strip() if is_database_error(exc) else f"{type(exc).__name__}: {exc}"
        )
        now = time.monotonic()
        if now - self._last_complaint >= 60:
            self._last_complaint = now
            log.error(
                "journal degraded (%s): %d records dropped so far; machines keep running",
                exc,
                self.dropped,
            )

    def _recovered(self) -> None:
        if self.last_error is not None:
            log.warning("journal writable again (%d records were dropped)", self.dropped)
            self.last_error = None

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        log.debug("journal dropped %d record(s): %s", count, why)

    # -- reading --------------------------------------------------------------------------

    async def history(
        self,
        machine_id: str | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
        kinds: Iterable[str] | None = None,
        limit: int = 100,
        cursor: int | None = None,
    ) -> HistoryPage:
        """Newest first; ``cursor`` continues from a previous page."""
        limit = max(1, min(limit, 1000))
        return await self._run(
            self._query, machine_id, since, until, list(kinds) if kinds else None, limit, cursor
        )

    async def next_bd_seq(self, node: str) -> int:
        """The Sparkplug ``bdSeq`` for ``node``'s next MQTT connection (0..255), committed
        before it is used, so a gateway killed and restarted announces the next one."""
        return await self._run(self._next_bd_seq, node)

    async def counters(
        self, machine_id: str | None = None
    ) -> dict[str, dict[str, int | float]]:
        """Counters per machine: ints for counts, floats only for measured amounts."""
        return await self._run(self._read_counters, machine_id)

    # -- the journal thread -----------------------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on the journal's one thread (SQLite never blocks the loop)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> None:
        db = open_database(self.target, sqlite_schema=SCHEMA, postgres_schema=POSTGRES_SCHEMA)
        try:
            if self.fence_cell is not None:
                if db.engine != "postgresql":
                    raise DatabaseError("two gateways per cell need the journal on PostgreSQL")
                lease_store.ensure_schema(db)
                with db.transaction():
                    db.execute("SELECT pg_advisory_xact_lock(7412805)")
                    db.execute(INTENTS_SCHEMA)
                lease_store.fence_table(db, "move_intents")
                lease_store.fence_table(db, "machine_snapshots")
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
            # A PostgreSQL connection lost (a server restart, a network cut): reopen it.
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None
        if self._db is None:
            if not self._open_wanted:
                raise DatabaseError("journal is not open")
            now = time.monotonic()
            if now < self._next_reopen:
                raise DatabaseError(
                    f"{self._lost_because} (next attempt within {self.reopen_interval_s:g} s)"
                )
            self._next_reopen = now + self.reopen_interval_s
            try:
                self._open()
            except Exception as exc:  # the server is still away: this write is dropped
                self._lost_because = str(exc).strip() or type(exc).__name__
                raise
        assert self._db is not None
        return self._db

    def _insert_command(
        self, event: CommandAccepted | CommandRefused, extra: dict[str, Any]
    ) -> None:
        db = self._conn()
        with db.transaction():
            if isinstance(event, CommandAccepted):
                db.execute(
                    "INSERT INTO journal (at, machine_id, kind, boot, command_id, client, channel,"
                    " command, argument, code, skipped, latency_s, outcome, data)"
                    " VALUES (?, ?, 'command', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        event.at,
                        event.machine_id,
                        self.boot,
                        event.command_id,
                        event.origin.client,
                        event.origin.channel.value,
                        event.command,
                        event.argument,
                        # Sent either way; a MOVE with no trustworthy reply says so.
                        "MOVE_OUTCOME_UNKNOWN" if event.outcome_unknown else "OK",
                        int(event.skipped),
                        event.latency_s,
                        "skipped"
                        if event.skipped
                        else ("pending" if event.command == 1 else "done"),
                        json.dumps({"result": event.result, **extra}),
                    ),
                )
            else:
                # A refused command may carry anything a client sent: values no INTEGER
                # column holds are null there and kept as text (raw_command/raw_argument).
                raw = {
                    f"raw_{name}": _raw_text(value)
                    for name, value in (("command", event.command), ("argument", event.argument))
                    if value is not None and _int_column(value) is None
                }
                db.execute(
                    "INSERT INTO journal (at, machine_id, kind, boot, command_id, client, channel,"
                    " command, argument, code, reasons, data)"
                    " VALUES (?, ?, 'command_refused', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        event.at,
                        event.machine_id,
                        self.boot,
                        event.command_id,
                        event.origin.client,
                        event.origin.channel.value,
                        _int_column(event.command),
                        _int_column(event.argument),
                        event.code,
                        ",".join(event.reasons) or None,  # none: [] when read, never [""]
                        json.dumps({"message": event.message, **raw, **extra}),
                    ),
                )

    def _insert_events(self, events: list[Event]) -> None:
        db = self._conn()
        # One transaction per batch: all of it is written, or none of it (and all of it is
        # counted as dropped).
        with db.transaction():
            for event in events:
                self._insert_event(db, event)

    def _insert_event(self, db: Database, event: Event) -> None:
        def bump(name: str, amount: float = 1) -> None:
            db.execute(
                "INSERT INTO counters (machine_id, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT (machine_id, name)"
                " DO UPDATE SET value = counters.value + excluded.value",
                (event.machine_id, name, amount),
            )

        def row(kind: str, data: dict[str, Any] | None = None, **columns: Any) -> None:
            names = ["at", "machine_id", "kind", *columns, "data"]
            values = [event.at, event.machine_id, kind, *columns.values(), json.dumps(data or {})]
            # Column names come from this code, never from input; values are bound.
            db.execute(
                f"INSERT INTO journal ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",  # nosec B608
                values,
            )

        match event:
            case StatusChanged(snapshot=snapshot):
                self._store_snapshot(db, snapshot.machine_id, snapshot)
            case MoveCompleted():
                row(
                    "move_completed",
                    {"position": event.position},
                    boot=self.boot,
                    command_id=None,
                    duration_s=event.duration_s,
                    client=event.origin.client,
                )
                self._complete_command(
                    db, event.command_id, "arrived", "", event.duration_s, event.at
                )
                self._intent_outcome(db, event.command_id, "completed")
                bump("moves_completed")
                bump("seconds_in_motion", event.duration_s)
                travelled = getattr(event, "travelled", None)
                if travelled:
                    bump("positions_travelled", travelled)
            case MoveFailed():
                reasons = ",".join(event.reasons)
                row(
                    "move_failed",
                    {"target": event.target, "position": event.position},
                    reasons=reasons,
                    duration_s=event.duration_s,
                    client=event.origin.client,
                )
                self._complete_command(
                    db, event.command_id, "failed", reasons, event.duration_s, event.at
                )
                self._intent_outcome(db, event.command_id, "failed")
                bump("moves_failed")
                bump("seconds_in_motion", event.duration_s)
                travelled = getattr(event, "travelled", None)
                if travelled:
                    bump("positions_travelled", travelled)
            case ConnectionChanged(state=state, reason=reason):
                kind = state.value
                row(kind, {"reason": reason})
                # The gateway closing its own links (shutdown) is no disconnection.
                if state is not ConnectionState.CONNECTED and reason != CLOSED_BY_GATEWAY:
                    bump("disconnections")
            case FaultRaised(keys=keys):
                row("fault_raised", {"keys": list(keys)}, reasons=",".join(keys))
                for key in keys:
                    bump(f"faults.{key}")
            case FaultCleared(keys=keys):
                row("fault_cleared", {"keys": list(keys)}, reasons=",".join(keys))
            case _:
                row(_extra_kind(event), _event_data(event))

    def _store_snapshot(self, db: Database, machine_id: str, snapshot: Any) -> None:
        """The active's latest reading of a machine, for the standby (fenced, savepoint)."""
        try:
            with db.transaction():
                db.execute(
                    "INSERT INTO machine_snapshots (cell, machine_id, position, raw_status,"
                    " updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (cell, machine_id) DO UPDATE"
                    " SET position = excluded.position, raw_status = excluded.raw_status,"
                    " updated_at = excluded.updated_at",
                    (
                        self.fence_cell,
                        machine_id,
                        snapshot.position,
                        snapshot.raw_status,
                        snapshot.updated_at,
                    ),
                )
        except Exception as exc:
            if not _fenced(exc):
                raise
            self.fenced_writes += 1

    async def snapshots(self) -> list[dict[str, Any]]:
        """The cell's machines as the active last read them (what a standby shows)."""
        return await self._run(self._read_snapshots)

    def _read_snapshots(self) -> list[dict[str, Any]]:
        rows = self._conn().query(
            "SELECT machine_id, position, raw_status, updated_at, epoch"
            " FROM machine_snapshots WHERE cell = ?",
            (self.fence_cell,),
        )
        return [dict(row) for row in rows]

    def _intent_outcome(self, db: Database, command_id: int, outcome: str) -> None:
        """A move's outcome on its intent (fenced, in a savepoint: a stale epoch's refusal
        is counted and must not cost the rest of the batch)."""
        if self.fence_cell is None:
            return
        try:
            with db.transaction():
                db.execute(
                    "UPDATE move_intents SET outcome = ?, outcome_at = now()"
                    " WHERE boot = ? AND command_id = ? AND outcome IS NULL",
                    (outcome, self.boot, command_id),
                )
        except Exception as exc:
            if not _fenced(exc):
                raise
            self.fenced_writes += 1
            log.warning("journal: outcome of command %d refused by the fence", command_id)

    def _complete_command(
        self,
        db: Database,
        command_id: int,
        outcome: str,
        reasons: str,
        duration: float,
        at: float,
    ) -> None:
        db.execute(
            "UPDATE journal SET outcome = ?, reasons = ?, duration_s = ?, completed_at = ?"
            " WHERE boot = ? AND command_id = ?",
            (outcome, reasons or None, duration, at, self.boot, command_id),
        )

    def _prune(self) -> int:
        cutoff = time.time() - self.retention_days * 86400
        return self._conn().execute("DELETE FROM journal WHERE at < ?", (cutoff,))

    def _query(
        self,
        machine_id: str | None,
        since: float | None,
        until: float | None,
        kinds: list[str] | None,
        limit: int,
        cursor: int | None,
    ) -> HistoryPage:
        clauses, values = [], []
        for clause, value in (
            ("machine_id = ?", machine_id),
            ("at >= ?", since),
            ("at <= ?", until),
            ("id < ?", cursor),
        ):
            if value is not None:
                clauses.append(clause)
                values.append(value)
        if kinds:
            clauses.append(f"kind IN ({', '.join('?' * len(kinds))})")
            values.extend(kinds)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._conn().query(
            # The clauses are fixed text; every value is bound.
            f"SELECT * FROM journal {where} ORDER BY id DESC LIMIT ?",  # nosec B608
            (*values, limit + 1),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        result = [_row_dict(r) for r in rows]
        return HistoryPage(result, result[-1]["id"] if more and result else None)

    def _next_bd_seq(self, node: str) -> int:
        # One statement, atomic on SQLite and PostgreSQL alike (instances sharing a node
        # identity and a database never draw the same number).
        (row,) = self._conn().query(
            "INSERT INTO mqtt_node (node, bd_seq) VALUES (?, 0)"
            " ON CONFLICT (node) DO UPDATE SET bd_seq = (mqtt_node.bd_seq + 1) % 256"
            " RETURNING bd_seq",
            (node,),
        )
        return int(row["bd_seq"])

    def _read_counters(self, machine_id: str | None) -> dict[str, dict[str, int | float]]:
        query = "SELECT machine_id, name, value FROM counters"
        args: tuple[Any, ...] = ()
        if machine_id is not None:
            query += " WHERE machine_id = ?"
            args = (machine_id,)
        counters: dict[str, dict[str, int | float]] = {}
        for row in self._conn().query(query, args):
            name, value = row["name"], row["value"]
            # The column is REAL (seconds add up there too); a count reads back as an int.
            counters.setdefault(row["machine_id"], {})[name] = (
                value if name in MEASURED_COUNTERS else round(value)
            )
        return counters


def _fenced(exc: BaseException) -> bool:
    """True for the fence trigger's refusal (SQLSTATE ``CGF01``)."""
    return getattr(exc, "sqlstate", None) == lease_store.FENCED_SQLSTATE


def _target(text: str) -> str | Path:
    """A URL stays text; anything else is a SQLite path."""
    return text if text.startswith(("postgresql://", "postgres://")) else Path(text)


def _row_dict(row: Row) -> dict[str, Any]:
    data = {key: row[key] for key in row.keys() if row[key] is not None}  # noqa: SIM118
    extra = json.loads(data.pop("data", "{}") or "{}")
    data.pop("boot", None)
    if "skipped" in data:
        data["skipped"] = bool(data["skipped"])
    if "reasons" in data:
        # Rows written before refusals stored no reasons as NULL hold "": that is [] too.
        data["reasons"] = [reason for reason in data["reasons"].split(",") if reason]
    elif data.get("kind") == "command_refused":
        data["reasons"] = []
    return {**data, **{k: v for k, v in extra.items() if k not in data}}


def _int_column(value: object) -> int | None:
    """``value`` if an INTEGER column can hold it, else None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if SQLITE_INT_MIN <= value <= SQLITE_INT_MAX else None
    return None


def _raw_text(value: object) -> str:
    """A client's value as JSON text, cut to ``RAW_TEXT_LIMIT`` characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):  # not JSON, or an int past Python's digit limit
        text = f"<{type(value).__name__}>"
    return text if len(text) <= RAW_TEXT_LIMIT else text[: RAW_TEXT_LIMIT - 1] + "…"


def _is_extra_event(event: Event) -> bool:
    """Events added by later features (telemetry source changes, desync warnings)."""
    return type(event).__name__ in (
        "TelemetrySourceChanged",
        "PositionDesync",
        "PositionDesyncCleared",
    )


def _extra_kind(event: Event) -> str:
    name = type(event).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _event_data(event: Event) -> dict[str, Any]:
    fields = getattr(event, "__dataclass_fields__", {})
    return {
        name: getattr(event, name)
        for name in fields
        if name not in ("machine_id", "at") and _json_safe(getattr(event, name))
    }


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
