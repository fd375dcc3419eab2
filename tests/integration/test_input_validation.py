"""Input at the edges of both APIs (issue 12, sections 3 and 4): values no PLC byte can hold,
bursts past the session's cap, keys an endpoint does not know, bodies that name a machine.
Everything runs over loopback against a real gateway with embedded simulators."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from carousel_gateway.api.ws import MAX_COMMANDS_IN_FLIGHT
from tests.integration.conftest import FAST_MACHINE, gateway_config
from tests.integration.wsclient import TestClient

pytestmark = pytest.mark.asyncio


def ws_url(gateway: Any) -> str:
    return f"ws://127.0.0.1:{gateway.websocket.port}"


def http_url(gateway: Any) -> str:
    return f"http://127.0.0.1:{gateway.http_port}"


async def opened(gateway: Any) -> TestClient:
    client = await TestClient.open(ws_url(gateway))
    assert (await client.next())["type"] == "welcome"
    return client


# -- section 3: integers no journal column can hold -----------------------------------------

HUGE = [
    ({"command": 1, "argument": 2**63}, "argument", 2**63),
    ({"command": 1, "argument": -(2**63) - 1}, "argument", -(2**63) - 1),
    ({"command": 1, "argument": 10**30}, "argument", 10**30),
    ({"command": 2**64 + 1}, "command", 2**64 + 1),
    ({"command": 0, "argument": 2**70}, "argument", 2**70),
]


@pytest.mark.parametrize(("command", "field", "value"), HUGE)
async def test_integers_beyond_64_bits_are_invalid_command_and_journalled(
    gateway, command, field, value
):
    client = await opened(gateway)
    try:
        reply = await client.request(
            {"type": "send_command", "machine_id": "machine_1", "command": command}
        )
        flat = await client.request({"type": "send_command", "machine_id": "machine_1", **command})
    finally:
        await client.close()
    for answer in (reply, flat):
        assert answer["type"] == "error", answer
        assert answer["code"] == "INVALID_COMMAND", answer
        assert answer["machine_id"] == "machine_1"
        if field == "command":
            assert "0..255" in answer["error"], answer  # checked before the allowed list
    page = await gateway.journal.history("machine_1", kinds=["command_refused"])
    assert len(page.rows) == 2
    for row in page.rows:
        assert row["code"] == "INVALID_COMMAND"
        assert field not in row  # no integer column holds it: null, and the value as text
        assert row[f"raw_{field}"] == str(value)
    async with httpx.AsyncClient(base_url=http_url(gateway)) as http:
        health = (await http.get("/v1/health")).json()["data"]["journal"]
    assert health == {"state": "ok", "dropped": 0, "pending": 0, "last_error": None}
    assert gateway.simulators["machine_1"].model.moves_started == 0


# -- section 3: the session's cap on commands in flight -------------------------------------


async def send_burst(client: TestClient, messages: list[dict[str, Any]]) -> None:
    """Every frame in one write: the server reads them all before any command can run."""
    connection = client.connection
    async with connection.send_context():
        for message in messages:
            connection.protocol.send_text(json.dumps(message).encode())


async def replies_to(client: TestClient, request_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The direct reply to each request (a command_result or an error), by request_id."""
    replies: dict[str, dict[str, Any]] = {}
    while len(replies) < len(request_ids):
        message = await client.next(timeout=10)
        if message.get("request_id") in request_ids and message["type"] in (
            "command_result",
            "error",
        ):
            replies[message["request_id"]] = message
    return replies


async def test_a_burst_past_the_session_cap_is_refused_and_the_rest_complete(gateway_factory):
    # One machine per command, so that no machine refuses a command for its own reasons.
    count = MAX_COMMANDS_IN_FLIGHT + 4
    tables = [
        {**FAST_MACHINE, "id": f"machine_{i}", "name": f"Carrusel {i}", "poll_idle_s": 1.0}
        for i in range(1, count + 1)
    ]
    gateway = await gateway_factory(gateway_config(tables))
    client = await opened(gateway)
    try:
        burst = [
            {
                "type": "send_command",
                "machine_id": f"machine_{i}",
                "request_id": f"b{i}",
                "command": {"command": 0, "argument": None},
            }
            for i in range(1, count + 1)
        ]
        await send_burst(client, burst)
        replies = await replies_to(client, [m["request_id"] for m in burst])
        in_order = [replies[m["request_id"]] for m in burst]
        completed, refused = in_order[:MAX_COMMANDS_IN_FLIGHT], in_order[MAX_COMMANDS_IN_FLIGHT:]
        assert [r["type"] for r in completed] == ["command_result"] * MAX_COMMANDS_IN_FLIGHT
        assert all(r["success"] and r["data"]["command_sent"] == 0 for r in completed)
        for reply in refused:
            assert reply["type"] == "error" and reply["code"] == "BUSY", reply
            assert "in flight on this session" in reply["error"]
        # Every slot is free again: a second full burst is served whole.
        again = [
            {**m, "request_id": f"again{i}"} for i, m in enumerate(burst[:MAX_COMMANDS_IN_FLIGHT])
        ]
        await send_burst(client, again)
        replies = await replies_to(client, [m["request_id"] for m in again])
        assert {r["type"] for r in replies.values()} == {"command_result"}
    finally:
        await client.close()
