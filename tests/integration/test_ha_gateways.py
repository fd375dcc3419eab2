"""Two gateways of one cell in one process, on a real PostgreSQL and a real single-session
simulator: one drives, the other refuses commands naming it; a graceful stop hands over at
once; an active whose renewals stop fences itself before the database lets the other take
over; a stale epoch's writes are refused by the database; an orphaned intent becomes
``lost`` exactly once. Lease timings are short (ttl 1.5 s) so the whole file runs fast."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from carousel_gateway.app import Gateway
from carousel_gateway.database import open_database
from carousel_gateway.fleet.events import MoveFailed, MoveIntent, Origin, OriginChannel
from carousel_gateway.ha import lease_store
from carousel_gateway.ha.lease import Role
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.store import FencedWrite

from .conftest import EventRecorder, gateway_config, wait_until
from .promtool import assert_promtool_accepts
from .wsclient import TestClient

CELL = "cell_t"
LEASE = {"ttl_s": 1.5, "renew_s": 0.3, "margin_s": 0.3}
ORIGIN = Origin("test", OriginChannel.INTERNAL)


def ha_config(url: str, port: int, instance: str) -> Any:
    return gateway_config(
        [{"id": "m1", "name": "M1", "host": "127.0.0.1", "port": port, "positions": 30}],
        journal={"url": url},
        ha={"enabled": True, "cell": CELL, "instance": instance, **LEASE},
    )


@pytest.fixture
async def cell(postgres_server, simulator_factory, gateway_factory):
    """A simulator (single session, release cooldown, idle drop) and a schema of its own."""
    sim = await simulator_factory(release_time_s=0.3, idle_drop_s=1.0)
    url = postgres_server.url_for_new_schema()

    async def start(instance: str) -> Gateway:
        gateway: Gateway = await gateway_factory(
            ha_config(url, sim.port, instance), wait_connected=False
        )
        return gateway

    return sim, url, start


async def until_active(gateway: Gateway, timeout: float = 10.0) -> None:
    """The instance holds the lease and has read its carousel (its first STATUS)."""
    assert gateway.ha is not None and gateway.fleet is not None
    async with asyncio.timeout(timeout):
        await gateway.ha.wait_role(Role.ACTIVE)
    machine = gateway.fleet.get("m1")
    await wait_until(
        gateway.fleet.bus,
        lambda: machine.snapshot.connection is ConnectionState.CONNECTED
        and machine.snapshot.raw_status is not None,
        timeout=timeout,
    )


async def move(gateway: Gateway, position: int) -> Any:
    assert gateway.runner is not None and gateway.fleet is not None
    machine = gateway.fleet.get("m1")
    executed = await gateway.runner.run(machine, 1, position, ORIGIN, where="test")
    assert executed.outcome is not None
    return await gateway.runner.outcome(machine, executed.outcome)


async def intents(url: str) -> list[dict[str, Any]]:
    def read() -> list[dict[str, Any]]:
        db = open_database(url, sqlite_schema="", postgres_schema="SELECT 1")
        try:
            return [dict(r) for r in db.query("SELECT * FROM move_intents ORDER BY id")]
        finally:
            db.close()

    return await asyncio.to_thread(read)


async def lease_valid(url: str) -> bool:
    def read() -> bool:
        db = open_database(url, sqlite_schema="", postgres_schema="SELECT 1")
        try:
            current = lease_store.holder(db, CELL)
            return current is not None and current.valid
        finally:
            db.close()

    return await asyncio.to_thread(read)


def assert_moves_match_intents(sim: Any, rows: list[dict[str, Any]], epoch_of: dict[int, int]):
    """Every MOVE the PLC read came on a session whose gateway had committed an intent of
    its epoch for it; sessions follow one another (the simulator admits one at a time)."""
    for record in sim.move_log:
        epoch = epoch_of[record.session]
        assert any(
            row["intent_epoch"] == epoch and row["target"] == record.argument + 1 for row in rows
        ), (record, rows)
    sessions = [record.session for record in sim.move_log]
    assert sessions == sorted(sessions)


async def test_the_standby_refuses_commands_naming_the_active(cell) -> None:
    sim, _url, start = cell
    a = await start("gw-a")
    await until_active(a)
    b = await start("gw-b")
    assert b.ha is not None and a.ha is not None
    async with asyncio.timeout(5):
        await b.ha.wait_holder("gw-a")
    a_http = f"http://127.0.0.1:{a.http_port}"
    a_ws = f"ws://127.0.0.1:{a.websocket.port}"  # type: ignore[union-attr]

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{b.http_port}") as http:
        reply = await http.post("/v1/machines/m1/move", json={"position": 5})
        whole = (await http.get("/v1/health")).json()["data"]
        health = whole["ha"]
    assert reply.status_code == 409
    body = reply.json()
    assert body["code"] == "NOT_ACTIVE"
    assert body["data"]["active_instance"] == "gw-a"
    assert body["data"]["active_url"] == a_http
    assert "gw-a" in body["error"]
    assert health["role"] == "standby" and health["epoch"] is None
    assert health["active_instance"] == "gw-a"
    # Its PLC links are closed on purpose: healthy, since another instance drives.
    assert whole["status"] == "healthy" and set(whole["machines"].values()) == {"disconnected"}

    # The standby shows the carousel as the active last read it, from the database.
    assert a.fleet is not None and b.fleet is not None
    assert (await move(a, 9)).position == 9
    mirrored = b.fleet.get("m1")
    await wait_until(b.fleet.bus, lambda: mirrored.snapshot.position == 9, timeout=5)
    assert mirrored.snapshot.raw_status == a.fleet.get("m1").snapshot.raw_status
    assert mirrored.snapshot.connection is ConnectionState.DISCONNECTED

    client = await TestClient.open(f"ws://127.0.0.1:{b.websocket.port}")  # type: ignore[union-attr]
    try:
        await client.wait_for("welcome")
        error = await client.request(
            {"type": "send_command", "machine_id": "m1", "command": {"command": 1, "argument": 5}}
        )
    finally:
        await client.close()
    assert error["type"] == "error" and error["code"] == "NOT_ACTIVE"
    assert (error["active_instance"], error["active_url"]) == ("gw-a", a_ws)

    async with httpx.AsyncClient(base_url=a_http) as http:
        health = (await http.get("/v1/health")).json()["data"]["ha"]
        metrics = (await http.get("/metrics")).text
    assert health["role"] == "active" and health["epoch"] == 1
    assert 0 < health["lease_deadline_s"] <= LEASE["ttl_s"]
    await assert_promtool_accepts(metrics)
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    assert {"carousel_ha_role", "carousel_ha_takeovers", "carousel_ha_fenced_writes"} <= set(
        families
    )
    assert 'carousel_ha_role{role="active"} 1.0' in metrics
    assert "carousel_ha_takeovers_total 1.0" in metrics
    # The standby never opened port 3200: the simulator saw one session, the active's.
    assert sim.connections_accepted == 1
    assert [record.session for record in sim.move_log] == [1]  # the active's MOVE only


async def test_a_graceful_stop_hands_over_at_once(cell) -> None:
    sim, url, start = cell
    a = await start("gw-a")
    await until_active(a)
    b = await start("gw-b")
    assert (await move(a, 10)).position == 10
    assert b.ha is not None
    await a.stop()  # releases the lease: no TTL to wait out
    await until_active(b)
    assert b.ha.epoch == 2
    assert (await move(b, 20)).position == 20
    assert b.journal is not None
    await b.journal.flush()  # outcomes are written with the journal's events
    rows = await intents(url)
    assert [(r["intent_epoch"], r["target"], r["outcome"]) for r in rows] == [
        (1, 10, "completed"),
        (2, 20, "completed"),
    ]
    assert_moves_match_intents(sim, rows, {1: 1, 2: 2})


async def test_an_active_that_stops_renewing_fences_itself_before_the_takeover(cell) -> None:
    sim, url, start = cell
    a = await start("gw-a")
    await until_active(a)
    b = await start("gw-b")
    assert a.ha is not None and b.ha is not None and a.journal is not None
    assert (await move(a, 7)).position == 7
    loop = asyncio.get_running_loop()
    halted = loop.time()
    await a.ha.halt()  # its renewals stop (as if its lease connection hung); A keeps running
    async with asyncio.timeout(5):
        await a.ha.wait_role(Role.STANDBY)
    fenced_after = loop.time() - halted
    # A fenced itself while its grant was still valid at the database: B is still waiting.
    assert await lease_valid(url)
    assert b.ha.role is Role.STANDBY
    assert not sim.session_open or sim.connections_accepted == 1  # A's socket aborted
    await until_active(b)
    first_reading_after = loop.time() - halted
    assert b.ha.epoch == 2
    assert (await move(b, 15)).position == 15
    print(
        f"\nfence after {fenced_after:.2f} s, B's first reading after {first_reading_after:.2f} s,"
        f" first MOVE done after {loop.time() - halted:.2f} s (ttl {LEASE['ttl_s']} s)"
    )
    # The fence comes within ttl - margin of the last renewal; the takeover within the ttl,
    # a take period, the PLC's release cooldown and a reconnect.
    assert fenced_after <= LEASE["ttl_s"] - LEASE["margin_s"] + 0.2
    assert first_reading_after <= LEASE["ttl_s"] + LEASE["renew_s"] + 0.3 + 2.0

    # A wakes with its old epoch: the database refuses its writes (the trigger), and its
    # command path refuses everything, naming B.
    await a.journal.use_epoch(1)
    with pytest.raises(FencedWrite):
        await a.journal.commit_intent(MoveIntent(999, "m1", 3, ORIGIN))
    assert a.ha.fenced_writes == 1
    with pytest.raises(Exception) as refused:
        await move(a, 3)
    assert getattr(refused.value, "code", None) == "NOT_ACTIVE"
    rows = await intents(url)
    assert [(r["intent_epoch"], r["target"]) for r in rows] == [(1, 7), (2, 15)]
    assert_moves_match_intents(sim, rows, {1: 1, 2: 2})
    assert [record.argument + 1 for record in sim.move_log] == [7, 15]


async def test_an_orphaned_intent_becomes_lost_exactly_once(cell) -> None:
    _sim, url, start = cell
    a = await start("gw-a")
    await until_active(a)
    b = await start("gw-b")
    assert a.journal is not None and b.journal is not None and b.fleet is not None
    recorder = EventRecorder(b.fleet.bus)
    # A committed an intent and died before any outcome (its MOVE may have gone out).
    await a.journal.commit_intent(MoveIntent(41, "m1", 12, Origin("wms", OriginChannel.REST)))
    await a.stop()
    await until_active(b)
    lost = await recorder.wait_for(lambda e: isinstance(e, MoveFailed))
    assert (lost.command_id, lost.target, lost.reasons) == (41, 12, ("failover_lost",))
    assert lost.origin == Origin("wms", OriginChannel.REST)
    assert await b.journal.mark_lost() == []  # nothing left: each is marked once
    rows = await intents(url)
    assert [(r["command_id"], r["outcome"], r["intent_epoch"]) for r in rows] == [(41, "lost", 1)]
    assert len(recorder.of_type(MoveFailed)) == 1


async def test_a_client_with_both_urls_follows_the_active(cell) -> None:
    """Connected to the standby first, a move is refused there with NOT_ACTIVE naming the
    active, followed and run once on the active; after a handover the client's link drops,
    it reconnects to the other URL and moves through the new active."""
    from carousel_gateway.client import CarouselClient, ConnectionLost

    sim, _url, start = cell
    a = await start("gw-a")
    await until_active(a)
    b = await start("gw-b")
    assert a.websocket is not None and b.websocket is not None and b.ha is not None
    async with asyncio.timeout(5):
        await b.ha.wait_holder("gw-a")
    a_ws = f"ws://127.0.0.1:{a.websocket.port}"
    b_ws = f"ws://127.0.0.1:{b.websocket.port}"
    async with CarouselClient(f"{b_ws},{a_ws}", backoff_initial=0.05) as client:
        assert client.url == b_ws  # the standby answers first: it serves reads
        outcome = await client.move("m1", 12, wait=True, arrival_timeout=10)
        assert outcome.type == "move_completed"
        assert client.url == a_ws
        assert [record.argument + 1 for record in sim.move_log] == [12]

        await a.stop()  # hands the lease over; the client's link to A drops
        await until_active(b)
        async with asyncio.timeout(10):
            while client.url != b_ws or not client._connected.is_set():
                with contextlib.suppress(ConnectionLost):  # sent as A's link closed
                    await client.ping()  # waits for the reconnect (requests wait for a link)
        outcome = await client.move("m1", 3, wait=True, arrival_timeout=10)
        assert outcome.type == "move_completed"
    assert [record.argument + 1 for record in sim.move_log] == [12, 3]
