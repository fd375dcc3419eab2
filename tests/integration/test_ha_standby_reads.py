"""What the standby of a cell serves, two gateways in one process on a real PostgreSQL and
a real single-session simulator: the active's jobs, their history and their changes read
from the database (REST and WebSocket, with job events); every write refused with
NOT_ACTIVE naming the active and its URL; two cells on one database keep their jobs
apart (and an old database's job tables are brought to per-cell keys); a job write the
fence refuses counts in health and in the metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from carousel_gateway.app import Gateway
from carousel_gateway.database import open_database
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.ha import lease_store
from carousel_gateway.picking.jobs import Job, Line
from carousel_gateway.picking.store import PostgresJobStore
from carousel_gateway.wire.jobs import JobEventKind, JobLineState, JobState

from .conftest import FAST_SECONDS_PER_POSITION, gateway_config
from .test_ha_gateways import CELL, LEASE, until_active
from .test_ha_jobs import presented, submission
from .test_picking import JobEvents, confirm_stop
from .wsclient import TestClient

STATION = {"id": "station_1", "name": "Puesto 1", "machines": ["m1"]}


def cell_config(
    url: str, port: int, instance: str, *, cell: str = CELL, extra: list[dict[str, Any]] = ()
) -> Any:
    machines = [
        {"id": "m1", "name": "M1", "host": "127.0.0.1", "port": port, "positions": 30},
        *extra,
    ]
    return gateway_config(
        machines,
        journal={"url": url},
        ha={"enabled": True, "cell": cell, "instance": instance, **LEASE},
        workstations=[STATION],
        limits={"commands_per_machine_per_second": 1000.0, "command_burst": 1000},
    )


#: A simulator embedded in the standby (its faults are writes like any other).
EMBEDDED = {
    "id": "s9",
    "name": "S9",
    "kind": "simulator",
    "port": 0,
    "positions": 30,
    "simulator": {"embedded": True, "seconds_per_position": FAST_SECONDS_PER_POSITION},
}


@pytest.fixture
async def pair(postgres_server, simulator_factory, gateway_factory):
    """A simulator and a schema of its own; ``start(instance, **options)`` one gateway."""
    sim = await simulator_factory(release_time_s=0.3, idle_drop_s=1.0)
    url = postgres_server.url_for_new_schema()

    async def start(instance: str, **options: Any) -> Gateway:
        port = options.pop("port", sim.port)
        gateway: Gateway = await gateway_factory(
            cell_config(url, port, instance, **options), wait_connected=False
        )
        return gateway

    return sim, url, start


async def eventually(
    standby: Gateway, check: Callable[[], Awaitable[bool]], timeout: float = 10.0
) -> None:
    """Until ``check()`` holds, tried again after each of the standby's reads of the
    database (one per lease tick)."""
    assert standby._engine is not None
    async with asyncio.timeout(timeout):
        while not await check():
            await standby._engine.wait_followed()


def http(gateway: Gateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}", timeout=10)


async def test_the_standby_shows_the_active_jobs_and_follows_their_changes(pair) -> None:
    _sim, _url, start = pair
    a = await start("gw-a")
    await until_active(a)
    b = await start("gw-b")
    assert a.jobs is not None and b.jobs is not None and b.websocket is not None
    events_a, events_b = JobEvents(), JobEvents()
    a.jobs.listen(events_a)
    b.jobs.listen(events_b)
    await a.jobs.submit(submission("V1", [5, 5, 9]), "wms")
    first = await presented(events_a)
    assert first.stop is not None and first.stop.position == 5

    async with http(b) as rest:

        async def shows_the_first_stop() -> bool:
            reply = await rest.get("/v1/workstations/station_1")
            current = reply.json()["data"]["current"]
            return current is not None and current["position"] == 5

        await eventually(b, shows_the_first_stop)
        jobs = (await rest.get("/v1/jobs")).json()["data"]
        assert [job["job_id"] for job in jobs] == ["V1"]
        assert jobs[0]["state"] == "active"
        assert [line["state"] for line in jobs[0]["lines"]] == ["presented", "presented", "pending"]
        assert (await rest.get("/v1/jobs/V1")).json()["data"] == a.jobs.job("V1").model_dump(
            mode="json"
        )
        station = (await rest.get("/v1/workstations")).json()["data"][0]
        assert station["active_jobs"] == ["V1"] and station["route"] == {"m1": [9]}
        # The journal is the active's: its MOVE to 5 is in the standby's history.
        assert a.journal is not None
        await a.journal.flush()

        async def has_the_move() -> bool:
            page = (await rest.get("/v1/machines/m1/history")).json()["data"]["entries"]
            return any(entry["kind"] == "move_completed" for entry in page)

        await eventually(b, has_the_move)
        events = (await rest.get("/v1/events", params={"kinds": "move_completed"})).json()
        assert events["data"]["entries"]
        counters = (await rest.get("/v1/machines/m1/diagnostics")).json()["data"]
        assert counters["counters"]["moves_completed"] >= 1

        # A change on the active shows up on the standby: over REST, as job events (the
        # history lines the active wrote, the stop it presented next) and over WebSocket.
        ws = await TestClient.open(f"ws://127.0.0.1:{b.websocket.port}")
        try:
            await ws.wait_for(lambda m: m["type"] == "welcome")
            await ws.send(
                {"type": "subscribe", "subscription_type": "job_events", "request_id": "s"}
            )
            await ws.wait_for(lambda m: m["type"] == "subscription_confirmed")
            await confirm_stop(a, first)

            async def confirmed() -> bool:
                job = (await rest.get("/v1/jobs/V1")).json()["data"]
                return [line["state"] for line in job["lines"]][:2] == ["picked", "picked"]

            await eventually(b, confirmed)
            pushed = await ws.wait_for(
                lambda m: m["type"] == "job_event" and m["event"] == "line_confirmed"
            )
            assert pushed["job"]["job_id"] == "V1" and pushed["workstation_id"] == "station_1"
            arrived = await events_b.wait_for(
                lambda e: (
                    e.event is JobEventKind.STOP_PRESENTED
                    and e.stop is not None
                    and e.stop.position == 9
                )
            )
            assert arrived.job.lines[2].state is JobLineState.PRESENTED
            await ws.send({"type": "get_jobs", "job_id": "V1", "request_id": "j"})
            reply = await ws.wait_for(lambda m: m.get("request_id") == "j")
        finally:
            await ws.close()
        assert reply["type"] == "jobs" and reply["jobs"][0]["lines"][2]["state"] == "presented"

        last = await presented(events_a, start=events_a.events.index(first) + 1)
        await confirm_stop(a, last)
        await events_b.wait_for(lambda e: e.event is JobEventKind.JOB_COMPLETED)
        done = (await rest.get("/v1/jobs/V1")).json()["data"]
    assert done["state"] == "completed"
    assert b.jobs.job("V1") == a.jobs.job("V1")
    # Nothing of it was the standby's doing: its store never wrote as any epoch.
    assert b._engine is not None and isinstance(b._engine.store, PostgresJobStore)
    assert b._engine.store.epoch is None and b._engine.store.fenced_writes == 0


async def test_every_write_on_the_standby_is_not_active_naming_the_active(pair) -> None:
    _sim, _url, start = pair
    a = await start("gw-a")
    await until_active(a)
    b = await start("gw-b", extra=[EMBEDDED])
    assert a.jobs is not None and b.ha is not None and b.websocket is not None
    assert a.websocket is not None
    await a.jobs.submit(submission("W1", [5]), "wms")
    async with asyncio.timeout(5):
        await b.ha.wait_holder("gw-a")
    a_http = f"http://127.0.0.1:{a.http_port}"
    a_ws = f"ws://127.0.0.1:{a.websocket.port}"
    writes: list[tuple[str, dict[str, Any]]] = [
        ("/v1/jobs", json.loads(submission("W2", [7]).model_dump_json())),
        ("/v1/jobs/W1/lines/L1/confirm", {"quantity_picked": 2}),
        ("/v1/jobs/W1/pause", {}),
        ("/v1/jobs/W1/resume", {}),
        ("/v1/jobs/W1/cancel", {}),
        ("/v1/machines/m1/move", {"position": 5}),
        ("/v1/machines/m1/command", {"command": 1, "argument": 5}),
        ("/v1/command", {"machine_id": "m1", "command": 1, "argument": 5}),
        ("/v1/simulators/s9/faults", {"fault": "emergency_stop", "active": True}),
        ("/v1/simulators/s9/link", {"action": "drop"}),
    ]
    async with http(b) as rest:
        for path, body in writes:
            reply = await rest.post(path, json=body)
            assert reply.status_code == 409, (path, reply.text)
            refused = reply.json()
            assert refused["code"] == "NOT_ACTIVE", path
            assert refused["data"]["active_instance"] == "gw-a", path
            assert refused["data"]["active_url"] == a_http, path
            assert "gw-a" in refused["error"], path
    assert not b.simulators["s9"].model.faults  # the standby's own simulator: untouched

    ws = await TestClient.open(f"ws://127.0.0.1:{b.websocket.port}")
    try:
        await ws.wait_for(lambda m: m["type"] == "welcome")
        requests: list[dict[str, Any]] = [
            {"type": "submit_job", **json.loads(submission("W3", [7]).model_dump_json())},
            {"type": "confirm_pick", "job_id": "W1", "line_id": "L1", "quantity_picked": 2},
            {"type": "pause_job", "job_id": "W1"},
            {"type": "resume_job", "job_id": "W1"},
            {"type": "cancel_job", "job_id": "W1"},
            {"type": "send_command", "machine_id": "m1", "command": {"command": 1, "argument": 5}},
        ]
        for number, request in enumerate(requests):
            request_id = f"w{number}"
            await ws.send({**request, "request_id": request_id})
            error = await ws.wait_for(lambda m, r=request_id: m.get("request_id") == r)
            assert error["type"] == "error" and error["code"] == "NOT_ACTIVE", request
            assert (error["active_instance"], error["active_url"]) == ("gw-a", a_ws), request
    finally:
        await ws.close()
    # Nothing changed: W1 is as the active left it, W2 and W3 were never submitted.
    assert [job.job_id for job in a.jobs.jobs()] == ["W1"]
    assert a.jobs.job("W1").state is JobState.ACTIVE


async def test_two_cells_on_one_database_keep_their_jobs_apart(pair, simulator_factory) -> None:
    sim_x, url, start = pair
    sim_y = await simulator_factory(release_time_s=0.3, idle_drop_s=1.0)
    x = await start("gw-x", cell="cell_x", port=sim_x.port)
    y = await start("gw-y", cell="cell_y", port=sim_y.port)
    await until_active(x)
    await until_active(y)
    assert x.jobs is not None and y.jobs is not None
    # The same job id in each cell, different content: two jobs, no conflict.
    _, created_x = await x.jobs.submit(submission("J1", [5]), "wms-x")
    _, created_y = await y.jobs.submit(submission("J1", [11, 12]), "wms-y")
    assert created_x and created_y
    assert [job.job_id for job in x.jobs.jobs()] == ["J1"]
    assert [line.position for line in x.jobs.job("J1").lines] == [5]
    assert [line.position for line in y.jobs.job("J1").lines] == [11, 12]

    # A standby of cell_y shows cell_y's jobs only, and takes over cell_y's only.
    y2 = await start("gw-y2", cell="cell_y", port=sim_y.port)
    assert y2.jobs is not None

    async def y2_shows_its_cell() -> bool:
        assert y2.jobs is not None
        return [job.job_id for job in y2.jobs.jobs()] == ["J1"]

    await eventually(y2, y2_shows_its_cell)
    assert [line.position for line in y2.jobs.job("J1").lines] == [11, 12]
    await y.stop()
    await until_active(y2)
    assert [line.position for line in y2.jobs.job("J1").lines] == [11, 12]
    assert y2.jobs.job("J1").submitted_by == "wms-y"

    # Stored apart: each cell's store loads and knows its own; a cell never seen, none.
    for cell, positions in (("cell_x", [5]), ("cell_y", [11, 12]), ("cell_z", None)):
        store = PostgresJobStore(url, fence_cell=cell)
        await store.open()
        try:
            loaded = await store.load(finished_after=0.0)
            assert await store.known("J1") is (positions is not None)
        finally:
            await store.close()
        if positions is None:
            assert loaded == []
        else:
            assert [[line.position for line in job.lines] for job in loaded] == [positions]


#: The job tables as they were before job ids were per cell (the key was job_id alone).
OLD_SCHEMA = """
CREATE TABLE pick_jobs (
    job_id TEXT PRIMARY KEY, workstation_id TEXT NOT NULL, priority INTEGER NOT NULL,
    state TEXT NOT NULL, paused_reason TEXT, content TEXT NOT NULL, seq BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, submitted_by TEXT, started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION, moves INTEGER NOT NULL DEFAULT 0,
    buckets_travelled INTEGER NOT NULL DEFAULT 0,
    operator_wait_s DOUBLE PRECISION NOT NULL DEFAULT 0, cell TEXT, epoch BIGINT
);
CREATE INDEX pick_jobs_station ON pick_jobs (workstation_id, state);
CREATE TABLE pick_lines (
    job_id TEXT NOT NULL REFERENCES pick_jobs (job_id), line_id TEXT NOT NULL,
    idx INTEGER NOT NULL, machine_id TEXT NOT NULL, position INTEGER NOT NULL,
    quantity INTEGER NOT NULL, sku TEXT, description TEXT, order_id TEXT, state TEXT NOT NULL,
    quantity_picked INTEGER, reason TEXT, confirmed_by TEXT, confirmed_at DOUBLE PRECISION,
    cell TEXT, epoch BIGINT, PRIMARY KEY (job_id, line_id)
);
CREATE TABLE pick_history (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, job_id TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL, what TEXT NOT NULL, by TEXT, line_id TEXT,
    quantity INTEGER, reason TEXT, cell TEXT, epoch BIGINT
);
CREATE INDEX pick_history_job ON pick_history (job_id, id);
INSERT INTO pick_jobs (job_id, workstation_id, priority, state, content, seq, created_at)
    VALUES ('lone', 'station_1', 0, 'queued', '{}', 1, 1.0);
INSERT INTO pick_lines (job_id, line_id, idx, machine_id, position, quantity, state)
    VALUES ('lone', 'L1', 0, 'm1', 4, 1, 'pending');
INSERT INTO pick_jobs (job_id, workstation_id, priority, state, content, seq, created_at,
    cell, epoch) VALUES ('celled', 'station_1', 0, 'queued', '{}', 2, 2.0, 'cell_t', 3);
INSERT INTO pick_lines (job_id, line_id, idx, machine_id, position, quantity, state, cell,
    epoch) VALUES ('celled', 'L1', 0, 'm1', 6, 1, 'pending', 'cell_t', 3);
INSERT INTO pick_history (job_id, at, what) VALUES ('lone', 1.0, 'job_queued');
"""


async def test_an_old_database_gets_per_cell_job_keys(postgres_server) -> None:
    url = postgres_server.url_for_new_schema()

    def create_old() -> int:
        """The old tables, fenced as [ha] left them; the lease of another cell, cell_u."""
        db = open_database(url, sqlite_schema="", postgres_schema="SELECT 1")
        try:
            db.execute(OLD_SCHEMA)
            lease_store.ensure_schema(db)
            for table in ("pick_jobs", "pick_lines", "pick_history"):
                lease_store.fence_table(db, table)
            epoch = lease_store.take(db, "cell_u", "gw-u", "", 60.0)
            assert epoch is not None
            return epoch
        finally:
            db.close()

    epoch_u = await asyncio.to_thread(create_old)
    celled = PostgresJobStore(url, fence_cell=CELL)  # its rows were stamped cell_t
    await celled.open()  # the migration runs once, by the first store that opens
    lone = PostgresJobStore(url)  # rows written without [ha]: the cell ''
    await lone.open()
    other = PostgresJobStore(url, fence_cell="cell_u")
    await other.open()
    try:
        assert [job.job_id for job in await lone.load(finished_after=0.0)] == ["lone"]
        assert [job.job_id for job in await celled.load(finished_after=0.0)] == ["celled"]
        assert [line.position for line in (await lone.load(0.0))[0].lines] == [4]
        committed = await lone.committed(0.0, 0)
        assert [(c.job_id, c.what) for c in committed.changes] == [("lone", "job_queued")]
        # The same id in another cell is another job now.
        await other.use_epoch(epoch_u)
        again = Job("celled", "station_1", 0, [Line("L1", "m1", 9, 1)], "{}", 3, time.time())
        await other.write([again], [])
        assert [job.job_id for job in await other.load(finished_after=0.0)] == ["celled"]
        assert [line.position for line in (await other.load(0.0))[0].lines] == [9]
        assert [line.position for line in (await celled.load(0.0))[0].lines] == [6]
    finally:
        for store in (celled, lone, other):
            await store.close()


async def test_a_fenced_job_write_counts_in_health_and_metrics(pair) -> None:
    _sim, _url, start = pair
    a = await start("gw-a")
    await until_active(a)
    assert a.jobs is not None and a.ha is not None and a._engine is not None
    events = JobEvents()
    a.jobs.listen(events)
    await a.jobs.submit(submission("F1", [5]), "wms")
    await presented(events)

    async def counted() -> tuple[float, int]:
        async with http(a) as rest:
            text = (await rest.get("/metrics")).text
            health = (await rest.get("/v1/health")).json()["data"]["ha"]
        families = {f.name: f for f in text_string_to_metric_families(text)}
        (sample,) = families["carousel_ha_fenced_writes"].samples
        return sample.value, health["fenced_writes"]

    before = await counted()
    assert before == (0.0, 0)
    store = a._engine.store
    assert isinstance(store, PostgresJobStore) and a.ha.epoch is not None
    await store.use_epoch(a.ha.epoch - 1)  # as an old active that woke up would write
    with pytest.raises(GatewayError) as refused:
        await a.jobs.confirm("F1", "L1", 2, None, "op")
    assert refused.value.code is ErrorCode.NOT_ACTIVE
    assert store.fenced_writes == 1
    assert await counted() == (1.0, 1)
    assert a.ha.fenced_writes == a.journal.fenced_writes + 1  # type: ignore[union-attr]
