"""The SQLite job store: migrations, round trips, what a restart loads."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from carousel_gateway.picking.jobs import Job, Line
from carousel_gateway.picking.store import (
    MIGRATIONS,
    POSTGRES_SCHEMA,
    PostgresJobStore,
    SqliteJobStore,
)
from carousel_gateway.picking.workstation import Change
from carousel_gateway.wire.jobs import JobLineState, JobState


def make_job(job_id: str, seq: int, state: JobState, finished_at: float | None) -> Job:
    return Job(
        job_id=job_id,
        workstation_id="s1",
        priority=3,
        lines=[
            Line("L1", "m1", 4, 2, sku="A", order_id="O1"),
            Line(
                "L2",
                "m1",
                9,
                1,
                state=JobLineState.SHORT,
                quantity_picked=0,
                reason="empty",
                confirmed_by="ana",
                confirmed_at=12.5,
                confirmation_id="c-2",
            ),
        ],
        content=json.dumps({"job_id": job_id}),
        seq=seq,
        created_at=10.0 + seq,
        submitted_by="wms",
        state=state,
        finished_at=finished_at,
        moves=2,
        buckets_travelled=7,
        operator_wait_s=1.5,
    )


def open_store(target: str | Path) -> SqliteJobStore | PostgresJobStore:
    """A job store on a ``journal_target``: a SQLite file, or a fresh PostgreSQL schema."""
    return PostgresJobStore(target) if isinstance(target, str) else SqliteJobStore(target)


async def test_jobs_round_trip_and_a_restart_loads_unfinished_and_recent_ones(
    journal_target: str | Path,
) -> None:
    store = open_store(journal_target)
    await store.open()
    jobs = [
        make_job("old", 1, JobState.COMPLETED, 100.0),
        make_job("recent", 2, JobState.CANCELLED, 900.0),
        make_job("open", 3, JobState.QUEUED, None),
    ]
    await store.write(jobs, [])
    jobs[2].state = JobState.ACTIVE  # written again whole: an update of the same rows
    await store.write(
        jobs[2:], [Change("open", 11.0, "line_confirmed", "ana", "L2", 0, "empty", "c-2")]
    )
    await store.close()

    again = open_store(journal_target)  # opening again applies no migration twice
    await again.open()
    try:
        loaded = await again.load(finished_after=500.0)
        assert [job.job_id for job in loaded] == ["recent", "open"]
        assert await again.known("old") and not await again.known("never")
        history = [
            (row["job_id"], row["what"], row["by"], row["quantity"], row["reason"], row["cid"])
            for row in await again._run(
                again._query,
                "SELECT job_id, what, by, quantity, reason, confirmation_id AS cid "
                "FROM pick_history",
                (),
            )
        ]
    finally:
        await again.close()
    restored = loaded[1]
    assert (restored.state, restored.priority, restored.moves, restored.operator_wait_s) == (
        JobState.ACTIVE,
        3,
        2,
        1.5,
    )
    short = restored.by_id["L2"]
    assert (
        short.state,
        short.quantity_picked,
        short.reason,
        short.confirmed_by,
        short.confirmation_id,
    ) == (JobLineState.SHORT, 0, "empty", "ana", "c-2")
    assert restored.by_id["L1"].confirmation_id is None
    assert history == [("open", "line_confirmed", "ana", 0, "empty", "c-2")]
    if isinstance(journal_target, Path):
        with sqlite3.connect(journal_target) as db:
            assert db.execute("SELECT MAX(version) FROM pick_schema").fetchone()[0] == len(
                MIGRATIONS
            )
            assert db.execute("SELECT COUNT(*) FROM pick_schema").fetchone()[0] == len(MIGRATIONS)


async def test_committed_reads_the_jobs_and_the_history_written_since(
    journal_target: str | Path,
) -> None:
    """What a standby reads each tick: the jobs as committed, the history lines since the
    last read (none on the first: it only learns where the history stands)."""
    store = open_store(journal_target)
    await store.open()
    try:
        first, second = (
            make_job("a", 1, JobState.QUEUED, None),
            make_job("b", 2, JobState.QUEUED, None),
        )
        await store.write([first, second], [Change("a", 1.0, "job_queued", "wms")])
        start = await store.committed(0.0, None)
        assert [job.job_id for job in start.jobs] == ["a", "b"] and start.changes == []
        second.state = JobState.ACTIVE
        second.lines[0].state = JobLineState.PRESENTED
        await store.write([second], [Change("b", 2.0, "job_started")])
        later = await store.committed(0.0, start.last)
        assert [(c.job_id, c.what) for c in later.changes] == [("b", "job_started")]
        assert later.last > start.last
        by_id = {job.job_id: job for job in later.jobs}
        assert by_id["b"].state is JobState.ACTIVE
        assert by_id["b"].lines[0].state is JobLineState.PRESENTED
        assert by_id["a"].state is JobState.QUEUED
        same = await store.committed(0.0, later.last)
        assert same.changes == [] and same.last == later.last
        assert [job.job_id for job in same.jobs] == ["a", "b"]
    finally:
        await store.close()


async def test_tables_made_before_confirmation_ids_get_the_column(
    journal_target: str | Path,
) -> None:
    """A database of the first job schema: opening adds ``confirmation_id``, rows kept."""
    from carousel_gateway.database import open_database

    # PostgreSQL's tables as they were before confirmation ids (per-cell keys already).
    legacy = re.sub(
        r",\s*confirmation_id TEXT|confirmation_id TEXT,\s*",
        "",
        POSTGRES_SCHEMA.split("DO $$")[0],
    )
    if isinstance(journal_target, Path):
        with sqlite3.connect(journal_target) as db:
            db.executescript(MIGRATIONS[0])
            db.execute("CREATE TABLE pick_schema (version INTEGER NOT NULL)")
            db.execute("INSERT INTO pick_schema (version) VALUES (1)")
    else:
        open_database(journal_target, sqlite_schema="", postgres_schema=legacy).close()
    old = make_job("old", 1, JobState.QUEUED, None)
    db = open_database(journal_target, sqlite_schema="", postgres_schema="SELECT 1")
    try:
        db.execute(
            "INSERT INTO pick_jobs (job_id, workstation_id, priority, state, content, seq, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (old.job_id, "s1", 0, "queued", old.content, 1, 1.0),
        )
        db.execute(
            "INSERT INTO pick_lines (job_id, line_id, idx, machine_id, position, quantity, state) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            ("old", "L1", 0, "m1", 4, 2, "pending"),
        )
    finally:
        db.close()
    store = open_store(journal_target)
    await store.open()
    try:
        (loaded,) = await store.load(finished_after=0.0)
        assert loaded.lines[0].confirmation_id is None
        loaded.lines[0].confirmation_id = "c-1"
        await store.write([loaded], [Change("old", 2.0, "line_confirmed", line_id="L1")])
        (again,) = await store.load(finished_after=0.0)
        assert again.lines[0].confirmation_id == "c-1"
    finally:
        await store.close()


async def test_a_confirmation_is_recorded_once_when_its_batch_is_written_again(
    journal_target: str | Path,
) -> None:
    """A commit whose answer was lost: the engine writes the same batch again."""
    store = open_store(journal_target)
    await store.open()
    try:
        job = make_job("J", 1, JobState.ACTIVE, None)
        batch = [
            Change("J", 11.0, "line_confirmed", "ana", "L2", 0, "empty", "c-2"),
            Change("J", 11.0, "job_paused", "ana", reason="tote missing"),
        ]
        await store.write([job], batch)
        await store.write([job], batch)
        rows = await store._run(
            store._query, "SELECT what, confirmation_id FROM pick_history ORDER BY id", ()
        )
    finally:
        await store.close()
    confirmed = [row["confirmation_id"] for row in rows if row["what"] == "line_confirmed"]
    assert confirmed == ["c-2"]
