"""Input at the edges of both APIs (issue 12, sections 3 and 4): values no PLC byte can hold,
bursts past the session's cap, keys an endpoint does not know, bodies that name a machine.
Everything runs over loopback against a real gateway with embedded simulators."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from carousel_gateway.api.ws import MAX_COMMANDS_IN_FLIGHT
from carousel_gateway.wire import (
    CLIENT_MESSAGE_TYPES,
)
from tests.integration.conftest import FAST_MACHINE, gateway_config
from tests.integration.wsclient import TestClient

ROOT = Path(__file__).resolve().parents[2]


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


# -- section 4: a command reaches the machine it names, or is refused ------------------------


async def test_rest_shortcut_command_runs_on_the_machine_the_body_names(gateway):
    async with httpx.AsyncClient(base_url=http_url(gateway)) as http:
        body = {"machine_id": "machine_2", "command": 1, "argument": 4, "wait": "arrival"}
        reply = await http.post("/v1/command", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["machine_id"] == "machine_2"
        assert reply.json()["data"]["outcome"]["state"] == "arrived"
        status = (await http.get("/v1/status", params={"machine_id": "machine_2"})).json()
        assert status["machine_id"] == "machine_2" and status["data"]["position"] == 4
        unknown = await http.post("/v1/command", json={**body, "machine_id": "machine_9"})
        assert unknown.status_code == 404 and unknown.json()["code"] == "MACHINE_NOT_FOUND"
        assert unknown.json()["machine_id"] == "machine_9"
    assert gateway.simulators["machine_2"].model.position_index == 3
    assert gateway.simulators["machine_1"].model.moves_started == 0


async def test_rest_shortcuts_need_machine_id_when_the_gateway_has_several(gateway):
    async with httpx.AsyncClient(base_url=http_url(gateway)) as http:
        for response in (
            await http.post("/v1/command", json={"command": 1, "argument": 4}),
            await http.get("/v1/status"),
        ):
            assert response.status_code == 400, response.text
            body = response.json()
            assert body["code"] == "INVALID_MESSAGE_FORMAT"
            assert "machine_id is required" in body["error"] and "2 machines" in body["error"]
    for simulator in gateway.simulators.values():
        assert simulator.model.moves_started == 0


async def test_rest_shortcuts_act_on_the_only_machine(gateway_factory):
    gateway = await gateway_factory(gateway_config(1))
    async with httpx.AsyncClient(base_url=http_url(gateway)) as http:
        assert (await http.get("/v1/status")).json()["machine_id"] == "machine_1"
        reply = await http.post(
            "/v1/command", json={"command": 1, "argument": 6, "wait": "arrival"}
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["machine_id"] == "machine_1"
    assert gateway.simulators["machine_1"].model.position_index == 5


REST_BODIES = [
    ("/v1/machines/machine_1/command", {"command": 1, "argument": 4}),
    ("/v1/machines/machine_1/move", {"position": 4}),
    ("/v1/command", {"machine_id": "machine_1", "command": 1, "argument": 4}),
    ("/v1/simulators/machine_1/faults", {"fault": "alarm", "active": True}),
    ("/v1/simulators/machine_1/link", {"action": "drop"}),
    # Pick jobs' bodies are judged before the gateway is asked for its jobs (it has none).
    (
        "/v1/jobs",
        {
            "job_id": "J",
            "workstation_id": "station_1",
            "lines": [{"line_id": "1", "machine_id": "machine_1", "position": 4, "quantity": 1}],
        },
    ),
    ("/v1/jobs/J/lines/1/confirm", {"quantity_picked": 1}),
    ("/v1/jobs/J/pause", {"reason": "break"}),
    ("/v1/jobs/J/cancel", {"reason": "withdrawn"}),
]


@pytest.mark.parametrize(("path", "body"), REST_BODIES)
async def test_rest_bodies_with_an_unknown_key_are_refused_naming_it(gateway, path, body):
    async with httpx.AsyncClient(base_url=http_url(gateway)) as http:
        response = await http.post(path, json={**body, "speed": "fast"})
        assert response.status_code == 400, response.text
        reply = response.json()
        assert reply["code"] == "INVALID_MESSAGE_FORMAT"
        assert "speed: unknown key" in reply["error"]
        # A machine_id is known only where the body names the machine.
        if "machine_id" not in body:
            named = await http.post(path, json={**body, "machine_id": "machine_2"})
            assert named.status_code == 400 and "machine_id: unknown key" in named.text
    simulator = gateway.simulators["machine_1"]
    assert simulator.model.moves_started == 0 and not simulator.model.faults
    assert simulator.connections_accepted == 1  # the link was never dropped


async def test_every_rest_body_model_refuses_unknown_keys_in_its_schema(gateway):
    async with httpx.AsyncClient(base_url=http_url(gateway)) as http:
        schema = (await http.get("/openapi.json")).json()
    models = schema["components"]["schemas"]
    bodies = [
        operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/")[-1]
        for operations in schema["paths"].values()
        for operation in operations.values()
        if "requestBody" in operation
    ]
    assert len(bodies) == len(REST_BODIES)
    for name in bodies:
        assert models[name].get("additionalProperties") is False, name


def spec_client_messages() -> list[dict[str, Any]]:
    """Every client message example in the spec (its JSON blocks)."""
    text = (ROOT / "docs" / "spec" / "websocket-api.md").read_text(encoding="utf-8")
    blocks = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]
    return [block for block in blocks if block["type"] in CLIENT_MESSAGE_TYPES]


def test_the_spec_has_client_message_examples():
    kinds = {message["type"] for message in spec_client_messages()}
    assert kinds == {"get_status", "send_command", "subscribe"}


@pytest.mark.parametrize("message", spec_client_messages(), ids=lambda m: m["type"])
async def test_every_spec_client_message_example_is_accepted(gateway, message):
    client = await opened(gateway)
    try:
        await client.send(message)
        reply = await client.next()
        while reply["type"] == "status_broadcast":  # not the direct reply
            reply = await client.next()
    finally:
        await client.close()
    assert (
        reply["type"]
        == {
            "get_status": "machine_status",
            "send_command": "command_result",
            "subscribe": "subscription_confirmed",
        }[message["type"]]
    ), reply


WS_MESSAGES = [
    {"type": "get_status", "machine_id": "machine_1"},
    {"type": "send_command", "machine_id": "machine_1", "command": {"command": 0}},
    {"type": "send_command", "machine_id": "machine_1", "command": 0, "argument": None},
    {"type": "subscribe", "subscription_type": "all_events"},
    {"type": "unsubscribe", "subscription_type": "all_events"},
    {"type": "ping"},
    {"type": "get_history", "limit": 5},
    {"type": "get_counters"},
]


@pytest.mark.parametrize("message", WS_MESSAGES, ids=lambda m: m["type"])
async def test_ws_messages_with_an_unknown_key_are_refused_naming_it(gateway, message):
    client = await opened(gateway)
    try:
        refused = await client.request({**message, "timestamp": "now", "speed": "fast"})
        accepted = await client.request({**message, "timestamp": "2025-01-27T10:30:00.000Z"})
    finally:
        await client.close()
    assert refused["type"] == "error" and refused["code"] == "INVALID_MESSAGE_FORMAT", refused
    assert "speed: unknown key" in refused["error"]
    assert accepted["type"] != "error", accepted  # the same message without it is served


async def test_ws_nested_command_with_an_unknown_key_is_refused_naming_it(gateway):
    client = await opened(gateway)
    try:
        reply = await client.request(
            {
                "type": "send_command",
                "machine_id": "machine_1",
                "command": {"command": 1, "argument": 4, "speed": "fast"},
            }
        )
    finally:
        await client.close()
    assert reply["type"] == "error" and reply["code"] == "INVALID_MESSAGE_FORMAT", reply
    assert "command.speed: unknown key" in reply["error"]
    assert gateway.simulators["machine_1"].model.moves_started == 0
