"""The SQLite job store: migrations, round trips, what a restart loads."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from carousel_gateway.picking.jobs import Job, Line
from carousel_gateway.picking.store import MIGRATIONS, SqliteJobStore
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


async def test_jobs_round_trip_and_a_restart_loads_unfinished_and_recent_ones(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gateway.db"
    store = SqliteJobStore(path)
    await store.open()
    jobs = [
        make_job("old", 1, JobState.COMPLETED, 100.0),
        make_job("recent", 2, JobState.CANCELLED, 900.0),
        make_job("open", 3, JobState.ACTIVE, None),
    ]
    await store.write(jobs, [Change("open", 11.0, "line_confirmed", "ana", "L2", 0, "empty")])
    await store.close()

    again = SqliteJobStore(path)  # opening again applies no migration twice
    await again.open()
    try:
        loaded = await again.load(finished_after=500.0)
        assert [job.job_id for job in loaded] == ["recent", "open"]
        assert await again.known("old") and not await again.known("never")
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
    assert (short.state, short.quantity_picked, short.reason, short.confirmed_by) == (
        JobLineState.SHORT,
        0,
        "empty",
        "ana",
    )
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT MAX(version) FROM pick_schema").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("SELECT COUNT(*) FROM pick_schema").fetchone()[0] == len(MIGRATIONS)
        history = db.execute(
            "SELECT job_id, what, by, quantity, reason FROM pick_history"
        ).fetchall()
    assert history == [("open", "line_confirmed", "ana", 0, "empty")]
