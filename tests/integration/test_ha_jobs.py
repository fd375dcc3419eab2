"""Pick jobs across a takeover, two gateways of one cell in one process on a real
PostgreSQL and a real single-session simulator: a job started on A goes on to completion on
B with the lines confirmed on A; the standby refuses a confirmation naming the active; a
stale epoch's job write is refused by the database; a job whose MOVE was lost in the
takeover pauses (``failover_move_lost``). Lease timings are short, as in
test_ha_gateways.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from carousel_gateway.app import Gateway
from carousel_gateway.database import open_database
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import MoveIntent, Origin, OriginChannel
from carousel_gateway.picking.engine import FAILOVER_MOVE_LOST
from carousel_gateway.picking.jobs import Job, Line
from carousel_gateway.picking.store import JobWriteFenced, PostgresJobStore
from carousel_gateway.wire.jobs import JobEventKind, JobLineState, JobState, JobSubmission

from .conftest import gateway_config
from .test_ha_gateways import CELL, LEASE, until_active
from .test_picking import JobEvents, confirm_stop


def ha_jobs_config(url: str, port: int, instance: str) -> Any:
    return gateway_config(
        [{"id": "m1", "name": "M1", "host": "127.0.0.1", "port": port, "positions": 30}],
        journal={"url": url},
        ha={"enabled": True, "cell": CELL, "instance": instance, **LEASE},
        workstations=[{"id": "station_1", "name": "Puesto 1", "machines": ["m1"]}],
        limits={"commands_per_machine_per_second": 1000.0, "command_burst": 1000},
    )


@pytest.fixture
async def cell(postgres_server, simulator_factory, gateway_factory):
    """A simulator (single session, release cooldown) and a schema of its own."""
    sim = await simulator_factory(release_time_s=0.3, idle_drop_s=1.0)
    url = postgres_server.url_for_new_schema()

    async def start(instance: str) -> Gateway:
        gateway: Gateway = await gateway_factory(
            ha_jobs_config(url, sim.port, instance), wait_connected=False
        )
        return gateway

    return sim, url, start


def submission(job_id: str, positions: list[int]) -> JobSubmission:
    return JobSubmission.model_validate(
        {
            "job_id": job_id,
            "workstation_id": "station_1",
            "lines": [
                {"line_id": f"L{i}", "machine_id": "m1", "position": p, "quantity": 2}
                for i, p in enumerate(positions, start=1)
            ],
        }
    )


def listen_as_active(gateway: Gateway, events: JobEvents) -> None:
    """The gateway's own job events, once active (as the standby it relays the active's,
    read from the database)."""
    engine = gateway._engine
    assert engine is not None
    engine.listen(lambda event: None if engine._standby else events(event))


def presented(events: JobEvents, start: int = 0) -> Any:
    return events.wait_for(lambda e: e.event is JobEventKind.STOP_PRESENTED, start=start)


async def test_a_job_goes_on_after_a_handover_and_the_standby_refuses_confirmations(
    cell,
) -> None:
    sim, _url, start = cell
    a = await start("gw-a")
    await until_active(a)
    b = await start("gw-b")
    assert a.jobs is not None and b.jobs is not None and b.ha is not None
    events_a, events_b = JobEvents(), JobEvents()
    a.jobs.listen(events_a)
    listen_as_active(b, events_b)
    await a.jobs.submit(submission("H1", [5, 5, 9, 12]), "wms")
    first = await presented(events_a)
    assert first.stop is not None and first.stop.position == 5
    await confirm_stop(a, first)  # L1, L2: committed before acknowledged

    # The standby changes no job: NOT_ACTIVE naming the active instance.
    await b.ha.wait_holder("gw-a")
    with pytest.raises(GatewayError) as refused:
        await b.jobs.confirm("H1", "L3", 2, None, "op")
    assert refused.value.code is ErrorCode.NOT_ACTIVE and "gw-a" in refused.value.message

    second = await presented(events_a, start=events_a.events.index(first) + 1)
    assert second.stop is not None and second.stop.position == 9
    await a.stop()  # graceful: the lease is released, B takes over at once
    await until_active(b)

    view = b.jobs.job("H1")
    assert view.state is JobState.ACTIVE
    assert [line.state for line in view.lines] == [
        JobLineState.PICKED,
        JobLineState.PICKED,
        JobLineState.PENDING,
        JobLineState.PENDING,
    ]
    assert view.lines[0].confirmed_by == "op"
    # The carousel was at rest at bucket 9: B presents that stop again, then goes on.
    again = await presented(events_b)
    assert again.stop is not None and again.stop.position == 9
    await confirm_stop(b, again)
    last = await presented(events_b, start=events_b.events.index(again) + 1)
    assert last.stop is not None and last.stop.position == 12
    await confirm_stop(b, last)
    await events_b.wait_for(lambda e: e.event is JobEventKind.JOB_COMPLETED)
    assert b.jobs.job("H1").state is JobState.COMPLETED
    # One MOVE per bucket: 5 and 9 on A's session; B found the carousel at rest at 9 (no
    # MOVE) and sent only the one to 12, on its own session.
    assert [(r.session, r.argument + 1) for r in sim.move_log] == [(1, 5), (1, 9), (2, 12)]


async def test_a_job_write_from_a_stale_epoch_is_refused_by_the_database(cell) -> None:
    _sim, url, start = cell
    a = await start("gw-a")
    await until_active(a)
    assert a.ha is not None and a.ha.epoch is not None
    store = PostgresJobStore(url, fence_cell=CELL)
    await store.open()
    try:
        job = Job(
            job_id="S1",
            workstation_id="station_1",
            priority=0,
            lines=[Line("L1", "m1", 4, 1)],
            content="{}",
            seq=1,
            created_at=time.time(),
        )
        await store.use_epoch(a.ha.epoch - 1)  # an old active that woke up
        with pytest.raises(JobWriteFenced, match="does not hold the lease"):
            await store.write([job], [])
        await store.use_epoch(None)  # a standby: no token at all
        with pytest.raises(JobWriteFenced):
            await store.write([job], [])
        assert store.fenced_writes == 2
        assert not await store.known("S1")
    finally:
        await store.close()

    # The engine's own store with a stale token: the confirmation is refused, not acknowledged.
    assert a.jobs is not None and a._engine is not None
    events = JobEvents()
    a.jobs.listen(events)
    await a.jobs.submit(submission("S2", [5]), "wms")
    await presented(events)
    engine_store = a._engine.store
    assert isinstance(engine_store, PostgresJobStore)
    await engine_store.use_epoch(a.ha.epoch - 1)
    with pytest.raises(GatewayError) as refused:
        await a.jobs.confirm("S2", "L1", 2, None, "op")
    assert refused.value.code is ErrorCode.NOT_ACTIVE
    assert "does not hold the lease" in refused.value.message
    await engine_store.use_epoch(a.ha.epoch)
    stored = {job.job_id: job for job in await engine_store.load(finished_after=0.0)}
    assert stored["S2"].lines[0].state is JobLineState.PRESENTED  # the refused one: not stored


async def test_a_job_whose_move_was_lost_in_the_takeover_pauses(cell) -> None:
    _sim, _url, start = cell
    a = await start("gw-a")
    await until_active(a)
    b = await start("gw-b")
    assert a.jobs is not None and b.jobs is not None and a.journal is not None
    events_a, events_b = JobEvents(), JobEvents()
    a.jobs.listen(events_a)
    listen_as_active(b, events_b)
    await a.jobs.submit(submission("P1", [5, 9]), "wms")
    await presented(events_a)
    # A committed the intent of the job's next MOVE and died before any outcome.
    origin = Origin("job:P1", OriginChannel.JOB)
    await a.journal.commit_intent(MoveIntent(901, "m1", 9, origin))
    await a.stop()
    await until_active(b)
    view = b.jobs.job("P1")
    assert view.state is JobState.PAUSED and view.paused_reason == FAILOVER_MOVE_LOST
    # Nothing moves for it until the operator resumes; then the route goes on.
    await b.jobs.resume("P1", "op")
    stop = await presented(events_b)
    assert stop.stop is not None and stop.stop.position in (5, 9)


async def test_the_job_store_carries_the_lease_token_again_after_a_reconnect(cell) -> None:
    _sim, url, start = cell
    a = await start("gw-a")
    await until_active(a)
    assert a.jobs is not None and a.ha is not None and a._engine is not None
    store = a._engine.store
    assert isinstance(store, PostgresJobStore)
    await a.jobs.submit(submission("R1", [5]), "wms")
    (row,) = await store._run(store._query, "SELECT pg_backend_pid() AS pid", ())

    def terminate() -> None:
        db = open_database(url, sqlite_schema="", postgres_schema="SELECT 1")
        try:
            db.query("SELECT pg_terminate_backend(?)", (row["pid"],))
        finally:
            db.close()

    await asyncio.to_thread(terminate)  # the server drops the store's connection
    with pytest.raises(GatewayError) as lost:
        await a.jobs.submit(submission("R2", [7]), "wms")  # not accepted: the read failed
    assert lost.value.code is ErrorCode.INTERNAL_ERROR
    await a.jobs.submit(submission("R2", [7]), "wms")  # a new connection, A's token again
    rows = await store._run(
        store._query, "SELECT job_id, cell, epoch FROM pick_jobs ORDER BY job_id", ()
    )
    assert [(r["job_id"], r["cell"], r["epoch"]) for r in rows] == [
        ("R1", CELL, a.ha.epoch),
        ("R2", CELL, a.ha.epoch),
    ]
