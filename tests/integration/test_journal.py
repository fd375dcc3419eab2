"""The journal through the whole gateway: commands, outcomes, faults, counters, durability."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from carousel_gateway.client import CarouselClient
from carousel_gateway.sim.carousel import Fault
from tests.integration.conftest import FAST_MACHINE, gateway_config, wait_until
from tests.integration.test_serve_process import free_port

pytestmark = pytest.mark.asyncio


def url(gateway) -> str:
    return f"ws://127.0.0.1:{gateway.websocket.port}"


def journal_table(target: str | Path) -> dict[str, str]:
    """``[journal]`` for a target of the ``journal_target`` fixture (SQLite or PostgreSQL)."""
    return {"url": target} if isinstance(target, str) else {"path": str(target)}


def journalled_command_ids(target: str | Path) -> set[int]:
    """Read straight from the database, not through the gateway."""
    query = "SELECT command_id FROM journal WHERE kind = 'command'"
    if isinstance(target, str):
        import psycopg

        with psycopg.connect(target) as db:
            return {row[0] for row in db.execute(query)}
    with sqlite3.connect(target) as db:
        return {row[0] for row in db.execute(query)}


async def test_moves_faults_and_refusals_are_journalled_with_who(gateway_factory, journal_target):
    gateway = await gateway_factory(gateway_config(journal=journal_table(journal_target)))
    model = gateway.simulators["machine_1"].model
    async with CarouselClient(url(gateway)) as client:
        arrived = await client.move("machine_1", 6, wait=True, arrival_timeout=5)
        assert arrived.type == "move_completed"
        model.seconds_per_position = 0.1
        failing = asyncio.create_task(client.move("machine_1", 20, wait=True, arrival_timeout=5))
        await wait_until(gateway.fleet.bus, lambda: model.moving)
        model.set_fault(Fault.EMERGENCY_STOP, True)
        failed = await failing
        assert failed.type == "move_failed"
        with pytest.raises(Exception, match="MACHINE_NOT_READY"):
            await client.move("machine_1", 3)
        await gateway.journal.flush()

        page = await client.history("machine_1")
        kinds = [entry.kind for entry in page.entries]
        assert {
            "command",
            "move_completed",
            "move_failed",
            "fault_raised",
            "command_refused",
        } <= set(kinds)
        commands = [e.model_extra for e in page.entries if e.kind == "command"]
        assert [c["argument"] for c in commands] == [20, 6]  # newest first
        assert commands[1]["outcome"] == "arrived" and commands[1]["channel"] == "ws"
        assert commands[1]["client"].startswith("127.0.0.1:")
        assert commands[0]["outcome"] == "failed"
        assert "PARADA_EMERGENCIA" in commands[0]["reasons"]
        refused = next(e.model_extra for e in page.entries if e.kind == "command_refused")
        assert refused["code"] == "MACHINE_NOT_READY"
        fault = next(e.model_extra for e in page.entries if e.kind == "fault_raised")
        assert "PARADA_EMERGENCIA" in fault["keys"]

        counters = (await client.counters("machine_1")).counters["machine_1"]
        assert counters["moves_completed"] == 1 and counters["moves_failed"] == 1
        assert counters["positions_travelled"] >= 5  # 1→6, plus whatever the failed move ran
        assert counters["faults.PARADA_EMERGENCIA"] == 1

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        rest = (
            await http.get("/v1/machines/machine_1/history", params={"kinds": "command"})
        ).json()
        assert [e["argument"] for e in rest["data"]["entries"]] == [20, 6]
        events = (await http.get("/v1/events", params={"kinds": ["fault_raised"]})).json()
        assert {e["machine_id"] for e in events["data"]["entries"]} == {"machine_1"}
        diagnostics = (await http.get("/v1/machines/machine_1/diagnostics")).json()["data"]
        assert diagnostics["counters"]["moves_completed"] == 1
        assert type(diagnostics["counters"]["moves_completed"]) is int  # 1, not 1.0
        assert type(diagnostics["counters"]["faults.PARADA_EMERGENCIA"]) is int
        health = (await http.get("/v1/health")).json()["data"]
        assert health["journal"]["state"] == "ok"


async def test_counters_survive_a_restart(gateway_factory, journal_target):
    # Counted disconnections are asserted: a request timeout far beyond any stall of a
    # loaded CI machine (at 0.5 s, one stall dropped a link and failed this test once).
    machines = [
        {
            **FAST_MACHINE,
            "id": f"machine_{i}",
            "name": f"Carrusel {i}",
            "request_timeout_s": 10.0,
        }
        for i in (1, 2)
    ]
    config = gateway_config(machines, journal=journal_table(journal_target))
    first = await gateway_factory(config)
    async with CarouselClient(url(first)) as client:
        await client.move("machine_2", 11, wait=True, arrival_timeout=5)
    await first.stop()
    second = await gateway_factory(config)
    async with CarouselClient(url(second)) as client:
        counters = (await client.counters("machine_2")).counters["machine_2"]
        assert counters["moves_completed"] == 1
        assert counters["positions_travelled"] == 10
        # The first gateway closed its links when it stopped: no disconnection for that.
        assert "disconnections" not in counters
        with pytest.raises(Exception, match="INVALID_COMMAND"):
            await client.move("machine_2", 99)
        refused = await client.history("machine_2", kinds=["command_refused"])
        assert refused.entries[0].model_extra["reasons"] == []
        await client.move("machine_2", 11, wait=True, arrival_timeout=5)  # a fresh simulator
        await second.journal.flush()
        counters = (await client.counters("machine_2")).counters["machine_2"]
        assert counters["moves_completed"] == 2 and counters["positions_travelled"] == 20


async def test_history_pages_and_filters(gateway_factory):
    gateway = await gateway_factory()
    async with CarouselClient(url(gateway)) as client:
        for _ in range(7):
            await client.command("machine_1", 0)  # STATUS commands are journalled too
        first = await client.history("machine_1", kinds=["command"], limit=3)
        assert len(first.entries) == 3 and first.next_cursor is not None
        second = await client.history(
            "machine_1", kinds=["command"], limit=3, cursor=first.next_cursor
        )
        third = await client.history(
            "machine_1", kinds=["command"], limit=3, cursor=second.next_cursor
        )
        ids = [e.id for e in (*first.entries, *second.entries, *third.entries)]
        assert len(ids) == 7 and ids == sorted(ids, reverse=True)
        assert third.next_cursor is None
        later = await client.history(since=first.entries[0].timestamp)
        assert all(e.timestamp >= first.entries[0].timestamp for e in later.entries)
        with pytest.raises(Exception, match="INVALID_MESSAGE_FORMAT"):
            await client.history(kinds=["nonsense"])
        with pytest.raises(Exception, match="MACHINE_NOT_FOUND"):
            await client.history("nope")


async def test_unwritable_journal_keeps_machines_running_and_says_so(gateway_factory):
    gateway = await gateway_factory()
    journal = gateway.journal
    await journal._run(lambda: journal._conn().execute("PRAGMA query_only=ON"))
    async with CarouselClient(url(gateway)) as client:
        outcome = await client.move("machine_1", 4, wait=True, arrival_timeout=5)
        assert outcome.type == "move_completed"  # the machines keep running
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        health = (await http.get("/v1/health")).json()["data"]["journal"]
    assert health["state"] == "degraded" and health["dropped"] >= 1
    assert "readonly" in health["last_error"]


async def test_sigkill_loses_no_command_whose_result_was_received(tmp_path, journal_target):
    """Kill -9 the gateway in the middle of a stream of commands: every command_result a
    client received has its row in the journal (a SQLite file, or PostgreSQL)."""
    ws_port = free_port()
    journal = "\n".join(f"{k} = {json.dumps(v)}" for k, v in journal_table(journal_target).items())
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[websocket]
host = "127.0.0.1"
port = {ws_port}

[http]
host = "127.0.0.1"
port = {free_port()}

[journal]
{journal}

[limits]  # a stream as fast as the gateway answers: durability, not limits, is tested here
messages_per_second = 1000000
message_burst = 1000000
commands_per_machine_per_second = 1000000
command_burst = 1000000

[[machines]]
id = "machine_1"
name = "Carrusel Principal"
kind = "simulator"
port = 0
poll_idle_s = 0.05

[machines.simulator]
embedded = true
seconds_per_position = 0.01
""",
        encoding="utf-8",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "carousel_gateway",
        "serve",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    received: list[int] = []
    listening = asyncio.Event()

    log_lines: list[bytes] = []

    async def drain_log() -> None:  # keep reading: a full pipe would block the gateway
        while line := await process.stderr.readline():
            log_lines.append(line)
            if b"WebSocket API on" in line:
                listening.set()

    drainer = asyncio.create_task(drain_log())
    try:
        async with asyncio.timeout(20):
            await listening.wait()
        async with connect(f"ws://127.0.0.1:{ws_port}") as ws:
            await ws.recv()  # welcome
            sent = 0

            async def stream() -> None:
                nonlocal sent
                while True:  # one command at a time: each answer releases the next
                    sent += 1
                    command = (
                        {"command": 1, "argument": 2 + sent % 20}
                        if sent % 3 == 0
                        else {"command": 0}
                    )
                    await ws.send(
                        json.dumps(
                            {"type": "send_command", "machine_id": "machine_1", "command": command}
                        )
                    )
                    while True:
                        reply = json.loads(await ws.recv())
                        if reply["type"] == "command_result":
                            received.append(reply["data"]["command_id"])
                            break
                        if reply["type"] == "error":
                            break
                    if len(received) == 40:
                        os.kill(process.pid, signal.SIGKILL)  # mid-stream, no warning

            with pytest.raises(Exception):  # noqa: B017 - the link dies with the process
                async with asyncio.timeout(30):
                    await stream()
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        await drainer
    # Killed, not shut down: no clean shutdown ever began. (The return code is not used:
    # asyncio's child watcher can report 255 when another waiter reaped the process.)
    assert not any(b"shutting down" in line for line in log_lines)
    assert len(received) >= 40
    journalled = journalled_command_ids(journal_target)
    missing = sorted(set(received) - journalled)
    assert not missing, f"results received but not journalled: {missing}"


async def test_journal_file_path_is_created(tmp_path, gateway_factory):
    path: Path = tmp_path / "nested" / "dir" / "j.db"
    gateway = await gateway_factory(gateway_config(journal={"path": str(path)}))
    async with CarouselClient(url(gateway)) as client:
        await client.command("machine_1", 0)
    assert os.path.exists(path)  # noqa: ASYNC240
