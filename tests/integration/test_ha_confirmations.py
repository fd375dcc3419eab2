"""Confirmation ids across a takeover, two gateways of one cell in one process on a real
PostgreSQL (as test_ha_jobs.py): a retry of a confirmation the old active committed is
answered by the new active from the shared store, once; the standby refuses even a retry
with ``NOT_ACTIVE``; a confirmation whose write failed is not acknowledged, and its retry
is answered only once it is committed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from carousel_gateway.database import open_database
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.picking.store import PostgresJobStore
from carousel_gateway.wire.jobs import JobLineState

from .test_ha_gateways import until_active
from .test_ha_jobs import cell, presented, submission
from .test_picking import JobEvents

__all__ = ["cell"]  # the fixture, shared with test_ha_jobs.py


def history(url: str, job_id: str) -> list[tuple[Any, ...]]:
    db = open_database(url, sqlite_schema="", postgres_schema="SELECT 1")
    try:
        return [
            (row["line_id"], row["quantity"], row["confirmation_id"], row["epoch"])
            for row in db.query(
                "SELECT line_id, quantity, confirmation_id, epoch FROM pick_history "
                "WHERE job_id = ? AND what = 'line_confirmed' ORDER BY id",
                (job_id,),
            )
        ]
    finally:
        db.close()


async def test_a_retry_after_a_takeover_is_answered_from_the_stored_confirmation(cell) -> None:
    _sim, url, start = cell
    a = await start("gw-a")
    await until_active(a)
    b = await start("gw-b")
    assert a.jobs is not None and b.jobs is not None and a.ha is not None and b.ha is not None
    events = JobEvents()
    a.jobs.listen(events)
    await a.jobs.submit(submission("C1", [5, 5, 9]), "wms")
    await presented(events)
    view = await a.jobs.confirm("C1", "L1", 2, None, "op", confirmation_id="c-1")
    assert view.lines[0].confirmation_id == "c-1"
    epoch_a = a.ha.epoch

    # The standby answers no confirmation, not even a retry of a stored one.
    await b.ha.wait_holder("gw-a")
    with pytest.raises(GatewayError) as refused:
        await b.jobs.confirm("C1", "L1", 2, None, "op", confirmation_id="c-1")
    assert refused.value.code is ErrorCode.NOT_ACTIVE and "gw-a" in refused.value.message

    await a.stop()
    await until_active(b)
    # The answer A committed but (say) never delivered: B answers it from the store.
    again = await b.jobs.confirm("C1", "L1", 2, None, "op2", confirmation_id="c-1")
    line = again.lines[0]
    assert (line.state, line.quantity_picked, line.confirmation_id, line.confirmed_by) == (
        JobLineState.PICKED,
        2,
        "c-1",
        "op",
    )
    with pytest.raises(GatewayError) as conflict:
        await b.jobs.confirm("C1", "L2", 2, None, "op", confirmation_id="c-1")
    assert conflict.value.code is ErrorCode.JOB_CONFLICT
    assert "'L1'" in conflict.value.message
    # Stored once, by A's epoch.
    assert await asyncio.to_thread(history, url, "C1") == [("L1", 2, "c-1", epoch_a)]


async def test_a_confirmation_whose_write_failed_is_acknowledged_only_once_committed(
    cell,
) -> None:
    _sim, url, start = cell
    a = await start("gw-a")
    await until_active(a)
    assert a.jobs is not None and a._engine is not None
    events = JobEvents()
    a.jobs.listen(events)
    await a.jobs.submit(submission("W1", [5, 9]), "wms")
    await presented(events)
    store = a._engine.store
    assert isinstance(store, PostgresJobStore)
    (row,) = await store._run(store._query, "SELECT pg_backend_pid() AS pid", ())

    def terminate() -> None:
        db = open_database(url, sqlite_schema="", postgres_schema="SELECT 1")
        try:
            db.query("SELECT pg_terminate_backend(?)", (row["pid"],))
        finally:
            db.close()

    await asyncio.to_thread(terminate)  # the store's connection is gone: the write fails
    with pytest.raises(GatewayError) as failed:
        await a.jobs.confirm("W1", "L1", 1, "damaged", "op", confirmation_id="w-1")
    assert failed.value.code is ErrorCode.INTERNAL_ERROR
    assert await asyncio.to_thread(history, url, "W1") == []  # not acknowledged, not stored

    # The client's retry: written (on a new connection) before it is answered.
    view = await a.jobs.confirm("W1", "L1", 1, "damaged", "op", confirmation_id="w-1")
    assert (view.lines[0].state, view.lines[0].confirmation_id) == (JobLineState.SHORT, "w-1")
    stored = await asyncio.to_thread(history, url, "W1")
    assert [(line, qty, cid) for line, qty, cid, _ in stored] == [("L1", 1, "w-1")]


async def test_while_a_takeover_loads_the_jobs_a_confirmation_is_not_active(cell) -> None:
    """The lease is taken (the role is active) before the jobs are loaded: a confirmation
    arriving meanwhile is NOT_ACTIVE (the client sends it again), not JOB_NOT_FOUND."""
    _sim, _url, start = cell
    a = await start("gw-a")
    await until_active(a)
    b = await start("gw-b")
    assert b.jobs is not None and b._engine is not None and b.ha is not None
    await b.ha.wait_holder("gw-a")
    b._engine.refusal = lambda: None  # as between the grant and the end of the takeover
    with pytest.raises(GatewayError) as refused:
        await b.jobs.confirm("X1", "L1", 2, None, "op", confirmation_id="x-1")
    assert refused.value.code is ErrorCode.NOT_ACTIVE
    assert "not loaded yet" in refused.value.message
