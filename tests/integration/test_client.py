"""The Python client and the CLI built on it, against a real gateway on loopback."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from carousel_gateway.app import Gateway
from carousel_gateway.client import (
    AuthenticationFailed,
    CarouselClient,
    ConnectionLost,
    ServerError,
)
from carousel_gateway.sim.carousel import Fault
from carousel_gateway.wire import (
    CommandResult,
    FleetStatus,
    MachineStatus,
    MoveCompletedMessage,
    MoveFailedMessage,
    StatusBroadcast,
)
from tests.integration.conftest import FAST_MACHINE, gateway_config, wait_until

pytestmark = pytest.mark.asyncio


def url(gateway: Gateway) -> str:
    return f"ws://127.0.0.1:{gateway.websocket.port}"


async def test_status_and_move_with_wait(gateway):
    async with CarouselClient(url(gateway)) as client:
        assert [m.id for m in client.machines] == ["machine_1", "machine_2"]
        status = await client.status("machine_1")
        assert isinstance(status, MachineStatus)
        assert status.raw_status == 21 and status.position == 1
        fleet = await client.status()
        assert isinstance(fleet, FleetStatus) and set(fleet.machines) == {"machine_1", "machine_2"}

        outcome = await client.move("machine_1", 9, wait=True, arrival_timeout=5)
        assert isinstance(outcome, MoveCompletedMessage) and outcome.position == 9
        skipped = await client.move("machine_1", 9, wait=True)
        assert isinstance(skipped, CommandResult) and skipped.data.skipped

        accepted = await client.move("machine_2", 4)
        assert isinstance(accepted, CommandResult) and not accepted.data.skipped


async def test_failed_move_is_returned_as_outcome(gateway):
    model = gateway.simulators["machine_1"].model
    model.seconds_per_position = 0.1
    async with CarouselClient(url(gateway)) as client:
        task = asyncio.create_task(client.move("machine_1", 15, wait=True, arrival_timeout=5))
        await wait_until(gateway.fleet.bus, lambda: model.moving)
        model.set_fault(Fault.VFD_FAULT, True)
        outcome = await task
    assert isinstance(outcome, MoveFailedMessage)
    assert outcome.reason == "VFD" and outcome.target == 15


async def test_typed_errors(gateway):
    async with CarouselClient(url(gateway)) as client:
        with pytest.raises(ServerError) as not_found:
            await client.status("nope")
        assert not_found.value.code == "MACHINE_NOT_FOUND"
        assert not_found.value.machine_id == "nope"
        gateway.simulators["machine_2"].model.set_fault(Fault.MANUAL_MODE, True)
        with pytest.raises(ServerError) as not_ready:
            await client.move("machine_2", 5)
        assert not_ready.value.code == "MACHINE_NOT_READY"
        assert not_ready.value.reasons == ("MODO_OPERACION",)
        with pytest.raises(ServerError) as invalid:
            await client.move("machine_1", 99)
        assert invalid.value.code == "INVALID_COMMAND"


async def test_events_yield_current_state_then_changes(gateway):
    async with CarouselClient(url(gateway)) as client:
        events = client.events("all_events", ["machine_1"])
        first = await anext(events)
        assert isinstance(first, StatusBroadcast) and list(first.status) == ["machine_1"]
        gateway.simulators["machine_1"].model.set_fault(Fault.ALARM, True)
        async with asyncio.timeout(5):
            async for event in events:
                if event.type == "machine_event" and event.event.value == "fault_raised":
                    assert "ALARMA" in (event.keys or [])
                    break
        await events.aclose()


async def test_reconnects_after_gateway_restart_and_resubscribes(gateway_factory):
    first = await gateway_factory()
    port = first.websocket.port
    config = gateway_config(websocket={"host": "127.0.0.1", "port": port})
    async with CarouselClient(f"ws://127.0.0.1:{port}", backoff_initial=0.05) as client:
        events = client.events("status_updates", ["machine_1"])
        assert isinstance(await anext(events), StatusBroadcast)
        pending = asyncio.create_task(client.move("machine_1", 20, wait=True, arrival_timeout=10))
        await asyncio.sleep(0)  # let the request go out before the restart
        await first.stop()
        with pytest.raises(ConnectionLost):
            await pending  # never re-sent: the outcome is unknown to this client
        second = await gateway_factory(config)
        # The fresh status snapshot after re-subscribing arrives on the open iterator.
        async with asyncio.timeout(10):
            fresh = await anext(events)
        assert isinstance(fresh, StatusBroadcast) and "machine_1" in fresh.status
        assert client.reconnects == 1
        status = await client.status("machine_1")
        assert status.connection_status == "connected"
        assert second.simulators["machine_1"].model.moves_started == 0
        await events.aclose()


async def test_bad_token_is_a_typed_error(gateway_factory):
    import hashlib

    digest = hashlib.sha256(b"right").hexdigest()
    gateway = await gateway_factory(
        gateway_config(auth={"tokens": [{"name": "wms", "role": "operator", "sha256": digest}]})
    )
    with pytest.raises(AuthenticationFailed):
        async with CarouselClient(url(gateway), token="wrong"):
            pass
    async with CarouselClient(url(gateway), token="right") as client:
        assert client.welcome.auth == {"client": "wms", "role": "operator"}


async def run_cli(*args: str, columns: int = 200) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "carousel_gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": str(columns)},
    )
    async with asyncio.timeout(30):
        output, _ = await process.communicate()
    return process.returncode, output.decode()


async def test_cli_status_and_move(gateway):
    code, output = await run_cli("status", "--url", url(gateway))
    assert code == 0, output
    assert "machine_1" in output and "machine_2" in output and "Remoto" in output

    code, output = await run_cli("move", "machine_2", "7", "--wait", "--url", url(gateway))
    assert code == 0, output
    assert "arrived at 7" in output
    assert gateway.simulators["machine_2"].model.position_index == 6

    gateway.simulators["machine_1"].model.set_fault(Fault.EMERGENCY_STOP, True)
    await wait_until(
        gateway.fleet.bus,
        lambda: gateway.fleet.get("machine_1").snapshot.status.emergency_stop,
    )
    code, output = await run_cli("move", "machine_1", "7", "--wait", "--url", url(gateway))
    assert code == 1 and "MACHINE_NOT_READY" in output

    code, output = await run_cli("status", "--url", "ws://127.0.0.1:9")
    assert code == 1 and "cannot reach" in output


async def test_cli_history_and_watch(gateway):
    async with CarouselClient(url(gateway)) as client:
        await client.move("machine_1", 4, wait=True, arrival_timeout=5)
    await gateway.journal.flush()
    code, output = await run_cli("history", "machine_1", "--url", url(gateway))
    assert code == 0, output
    assert "move_completed" in output and "moves_completed" in output

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "carousel_gateway",
        "watch",
        "--url",
        url(gateway),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    seen = b""
    async with asyncio.timeout(20):
        while b"machine_2" not in seen:
            chunk = await process.stdout.read(4096)
            assert chunk, seen.decode()
            seen += chunk
    gateway.simulators["machine_2"].model.set_fault(Fault.ALARM, True)
    async with asyncio.timeout(20):
        while b"fault_raised" not in seen:
            chunk = await process.stdout.read(4096)
            assert chunk, seen.decode()
            seen += chunk
    process.send_signal(2)  # Ctrl-C
    async with asyncio.timeout(20):
        await process.communicate()  # keep draining stdout: a full pipe would block its exit
    assert process.returncode == 0


LONG_IDS = ["carousel_north_aisle_1", "carousel_north_aisle_2"]


async def test_cli_shows_whole_machine_ids_at_80_columns(gateway_factory):
    """At 80 columns `status`, `history` and `watch` used to cut both ids to "machine…"."""
    machines = [{**FAST_MACHINE, "id": m, "name": "Carrusel Principal"} for m in LONG_IDS]
    gateway = await gateway_factory(gateway_config(machines))
    code, output = await run_cli("move", LONG_IDS[1], "3", "--url", url(gateway), columns=80)
    # The number is the gateway's command id (journal, move outcome), not PLC command 1.
    assert code == 0 and f"{LONG_IDS[1]}: moving to 3 (request #1)" in output, output
    code, output = await run_cli("move", LONG_IDS[0], "99", "--url", url(gateway), columns=80)
    assert code == 1 and "INVALID_COMMAND" in output
    await wait_until(gateway.fleet.bus, lambda: not gateway.fleet.get(LONG_IDS[1]).busy)
    await gateway.journal.flush()

    for command in (["status"], ["history"]):
        code, output = await run_cli(*command, "--url", url(gateway), columns=80)
        assert code == 0, output
        assert max(map(len, output.splitlines())) <= 80, output
        for machine_id in LONG_IDS:
            assert machine_id in output, output
        assert "()" not in output  # the refusal has no reasons

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "carousel_gateway",
        "watch",
        "--url",
        url(gateway),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "80"},
    )
    seen = b""
    async with asyncio.timeout(20):
        while not all(m.encode() in seen for m in LONG_IDS):
            chunk = await process.stdout.read(4096)
            assert chunk, seen.decode()
            seen += chunk
    process.send_signal(2)  # Ctrl-C
    async with asyncio.timeout(20):
        await process.communicate()
    assert process.returncode == 0
