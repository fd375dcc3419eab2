"""One command path for every API (api/commands.py): the WebSocket API and REST share one
CommandRunner, so one rate per machine, one drain at shutdown, and a requester hears its
result one way, straight from the runner, including how a move whose reply was lost ended."""

from __future__ import annotations

import httpx

from carousel_gateway.api.commands import failure_code
from carousel_gateway.errors import ErrorCode
from carousel_gateway.fleet.lifecycle import FailReason
from carousel_gateway.plc.protocol import Command
from carousel_gateway.sim.server import FaultMode
from tests.integration.conftest import gateway_config
from tests.integration.wsclient import TestClient


def ws_url(gateway) -> str:
    return f"ws://127.0.0.1:{gateway.websocket.port}"


def http_url(gateway) -> str:
    return f"http://127.0.0.1:{gateway.http_port}"


def move(machine_id: str, position: int) -> dict:
    return {
        "type": "send_command",
        "machine_id": machine_id,
        "command": {"command": 1, "argument": position},
    }


async def test_both_apis_hand_commands_to_one_runner(gateway_factory):
    """One per-machine command rate across the APIs: the burst REST spent is gone for the
    WebSocket too (the runner checks it before the machine sees anything)."""
    gateway = await gateway_factory(
        gateway_config(limits={"commands_per_machine_per_second": 0.01, "command_burst": 1})
    )
    assert gateway.websocket is not None and gateway.http is not None
    assert gateway.websocket.runner is gateway.http.api.runner
    async with httpx.AsyncClient(base_url=http_url(gateway), timeout=10) as http:
        first = await http.post("/v1/machines/machine_1/command", json={"command": 0})
        assert first.status_code == 200, first.text
    client = await TestClient.open(ws_url(gateway))
    await client.next()  # welcome
    refused = await client.request(move("machine_1", 5))
    assert refused["type"] == "error"
    assert refused["code"] == ErrorCode.MACHINE_RATE_LIMITED.value
    other = await client.request(move("machine_2", 5))  # another machine has its own rate
    assert other["type"] == "command_result"
    await client.close()


async def test_a_requester_hears_how_a_move_with_a_lost_reply_ended(gateway_factory):
    """The MOVE's reply never comes: MOVE_OUTCOME_UNKNOWN at once, and once a reading
    settles it, the requester gets the move's outcome with its own request_id."""
    gateway = await gateway_factory(gateway_config(1))
    sim = gateway.simulators["machine_1"]
    sim.settings.fault_only_on = Command.MOVE
    client = await TestClient.open(ws_url(gateway))
    await client.next()  # welcome
    sim.set_fault_mode(FaultMode.SILENT)  # the MOVE is read, never answered nor acted on
    unknown = await client.request(move("machine_1", 20))
    assert unknown["type"] == "error"
    assert unknown["code"] == ErrorCode.MOVE_OUTCOME_UNKNOWN.value
    sim.set_fault_mode(FaultMode.NONE)
    ended = await client.wait_for(lambda m: m["type"] in ("move_completed", "move_failed"), 15)
    assert ended["type"] == "move_failed"
    assert ended["request_id"] == unknown["request_id"]
    assert ended["reasons"] == ["not_started"]
    await client.close()


def test_failed_moves_map_to_the_table():
    assert failure_code([FailReason.CONNECTION_LOST.value]) is ErrorCode.CONNECTION_ERROR
    assert failure_code([FailReason.TIMEOUT.value]) is ErrorCode.PLC_TIMEOUT
    assert failure_code(["PARADA_EMERGENCIA"]) is ErrorCode.MACHINE_NOT_READY
