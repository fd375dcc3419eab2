"""Input at the edges of both APIs (issue 12, sections 3 and 4): values no PLC byte can hold,
bursts past the session's cap, keys an endpoint does not know, bodies that name a machine.
Everything runs over loopback against a real gateway with embedded simulators."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

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
