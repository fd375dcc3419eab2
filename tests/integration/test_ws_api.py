"""Conformance of the WebSocket API with the spec, over a real server and a real client."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket

import pytest
from websockets.exceptions import ConnectionClosed

from carousel_gateway import __version__
from carousel_gateway.sim.carousel import Fault
from tests.integration.conftest import gateway_config
from tests.integration.wsclient import TestClient

pytestmark = pytest.mark.asyncio

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
STATUS_KEYS = [
    "READY",
    "RUN",
    "MODO_OPERACION",
    "ALARMA",
    "PARADA_EMERGENCIA",
    "VFD",
    "ERROR_POSICIONAMIENTO",
    "SENTIDO_GIRO",
]
IDLE_LABELS = {
    "READY": "OK",
    "RUN": "Detenido",
    "MODO_OPERACION": "Remoto",
    "ALARMA": "Desactivada",
    "PARADA_EMERGENCIA": "Desactivada",
    "VFD": "OK",
    "ERROR_POSICIONAMIENTO": "OK",
    "SENTIDO_GIRO": "Ascendente",
}


def url(gateway) -> str:
    return f"ws://127.0.0.1:{gateway.websocket.port}"


@pytest.fixture
async def client(gateway):
    c = await TestClient.open(url(gateway))
    welcome = await c.next()
    assert welcome["type"] == "welcome"
    yield c
    await c.close()


async def test_welcome_describes_server_and_machines(gateway):
    c = await TestClient.open(url(gateway))
    welcome = await c.next()
    await c.close()
    assert welcome["type"] == "welcome"
    assert TIMESTAMP.match(welcome["timestamp"])
    assert welcome["mode"] == "multi-plc"
    assert welcome["server_info"]["version"] == __version__
    assert {"status_updates", "command_execution", "real_time_notifications"} <= set(
        welcome["server_info"]["capabilities"]
    )
    machines = {m["id"]: m for m in welcome["machines"]}
    assert list(machines) == ["machine_1", "machine_2"]
    first = machines["machine_1"]
    assert first["name"] == "Carrusel Principal"
    assert first["ip"] == "127.0.0.1"
    assert first["port"] == gateway.simulators["machine_1"].port
    assert first["type"] == "Simulator"
    assert first["positions"] == 30 and first["position_base"] == 1


async def test_get_status_of_one_machine_matches_spec(client, gateway):
    reply = await client.request(
        {"type": "get_status", "machine_id": "machine_1", "timestamp": "2025-01-27T10:30:00.000Z"}
    )
    assert reply["type"] == "machine_status"
    assert reply["machine_id"] == "machine_1"
    assert list(reply["status"]) == STATUS_KEYS
    assert reply["status"] == IDLE_LABELS
    assert reply["position"] == 1
    assert reply["raw_status"] == 21
    assert reply["connection_status"] == "connected"
    assert TIMESTAMP.match(reply["timestamp"])


async def test_get_status_without_machine_id_answers_every_machine(client, gateway):
    gateway.simulators["machine_2"].model.teleport(6)
    reply = await client.request({"type": "get_status"})
    assert reply["type"] == "machine_status"
    assert set(reply["machines"]) == {"machine_1", "machine_2"}
    assert reply["machines"]["machine_1"]["raw_status"] == 21
    assert reply["machines"]["machine_1"]["connection_status"] == "connected"


async def test_get_status_of_unknown_machine_is_machine_not_found(client):
    reply = await client.request({"type": "get_status", "machine_id": "invalid_machine"})
    assert reply["type"] == "error"
    assert reply["code"] == "MACHINE_NOT_FOUND"
    # Names the id asked for and the valid ones, so a typo shows at once.
    assert reply["error"] == (
        "Machine not found: 'invalid_machine'; valid ids: machine_1, machine_2"
    )
    assert reply["machine_id"] == "invalid_machine"
    assert TIMESTAMP.match(reply["timestamp"])


async def test_send_command_nested_form_reports_result_then_arrival(client, gateway):
    reply = await client.request(
        {
            "type": "send_command",
            "machine_id": "machine_1",
            "command": {"command": 1, "argument": 25},
            "timestamp": "2025-01-27T10:30:00.000Z",
        }
    )
    assert reply["type"] == "command_result"
    assert reply["machine_id"] == "machine_1"
    assert reply["success"] is True
    assert reply["data"]["command_sent"] == 1
    assert reply["data"]["argument"] == 25
    assert reply["data"]["result"] == "Comando ejecutado correctamente"
    assert reply["data"]["skipped"] is False
    done = await client.wait_for(lambda m: m["type"] in ("move_completed", "move_failed"))
    assert done["type"] == "move_completed"
    assert done["position"] == 25
    assert done["request_id"] == reply["request_id"]
    assert done["command_id"] == reply["data"]["command_id"]
    assert gateway.simulators["machine_1"].model.position_index == 24


async def test_send_command_flat_form_is_accepted(client, gateway):
    reply = await client.request(
        {"type": "send_command", "machine_id": "machine_2", "command": 1, "argument": 3}
    )
    assert reply["type"] == "command_result" and reply["data"]["argument"] == 3
    done = await client.wait_for("move_completed")
    assert done["machine_id"] == "machine_2" and done["position"] == 3


async def test_move_to_current_position_is_skipped(client, gateway):
    reply = await client.request(
        {
            "type": "send_command",
            "machine_id": "machine_1",
            "command": {"command": 1, "argument": 1},
        }
    )
    assert reply["type"] == "command_result"
    assert reply["data"]["skipped"] is True
    assert gateway.simulators["machine_1"].model.moves_started == 0


@pytest.mark.parametrize(
    "command",
    [
        {"command": 1, "argument": 0},
        {"command": 1, "argument": 31},
        {"command": 1},
        {"command": 1, "argument": "5"},
        {"command": 1, "argument": 2.5},
        {"command": 9, "argument": 2},
        {"argument": 2},
        "move",
    ],
)
async def test_bad_commands_are_invalid_command(client, gateway, command):
    reply = await client.request(
        {"type": "send_command", "machine_id": "machine_1", "command": command}
    )
    assert reply["type"] == "error"
    assert reply["code"] == "INVALID_COMMAND"
    assert reply["machine_id"] == "machine_1"
    assert gateway.simulators["machine_1"].model.moves_started == 0


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2, 3]",
        '"text"',
        "{}",
        '{"type": "teleport"}',
        '{"type": 5}',
        '{"type": "get_status", "machine_id": 12}',
        '{"type": "subscribe", "subscription_type": "everything"}',
        '{"type": "subscribe", "subscription_type": "status_updates", "machine_ids": "machine_1"}',
        '{"type": "send_command"}',
    ],
)
async def test_malformed_messages_are_invalid_message_format_and_keep_session(client, frame):
    await client.send(frame)
    reply = await client.wait_for("error")
    assert reply["code"] == "INVALID_MESSAGE_FORMAT"
    assert reply["error"]
    pong = await client.request({"type": "ping"})
    assert pong["type"] == "pong"


async def test_request_id_is_echoed_on_errors_too(client):
    await client.send({"type": "get_status", "machine_id": 12, "request_id": "abc"})
    reply = await client.wait_for("error")
    assert reply["request_id"] == "abc"


async def test_subscribe_confirms_sends_current_state_then_changes(client, gateway):
    reply = await client.request(
        {
            "type": "subscribe",
            "subscription_type": "status_updates",
            "machine_ids": ["machine_1"],
            "timestamp": "2025-01-27T10:30:00.000Z",
        }
    )
    assert reply == {
        "type": "subscription_confirmed",
        "subscription_type": "status_updates",
        "machine_ids": ["machine_1"],
        "timestamp": reply["timestamp"],
        "request_id": reply["request_id"],
    }
    current = await client.wait_for("status_broadcast")
    assert list(current["status"]) == ["machine_1"]
    state = current["status"]["machine_1"]
    assert state["status"] == IDLE_LABELS
    assert state["raw_status"] == 21 and state["position"] == 1
    assert state["connection_status"] == "connected"

    # A change on machine_2 is not sent; a change on machine_1 is.
    gateway.simulators["machine_2"].model.set_fault(Fault.ALARM, True)
    gateway.simulators["machine_1"].model.set_fault(Fault.VFD_FAULT, True)
    change = await client.wait_for("status_broadcast")
    assert list(change["status"]) == ["machine_1"]
    assert change["status"]["machine_1"]["status"]["VFD"] == "Fallo"
    assert change["status"]["machine_1"]["raw_status"] == 21 | 32
    assert TIMESTAMP.match(change["timestamp"])


async def test_subscribe_without_machine_ids_means_all(client):
    reply = await client.request({"type": "subscribe", "subscription_type": "status_updates"})
    assert reply["machine_ids"] == ["machine_1", "machine_2"]
    current = await client.wait_for("status_broadcast")
    assert set(current["status"]) == {"machine_1", "machine_2"}


async def test_subscribe_to_unknown_machine_is_refused(client):
    reply = await client.request(
        {"type": "subscribe", "subscription_type": "status_updates", "machine_ids": ["nope"]}
    )
    assert reply["type"] == "error" and reply["code"] == "MACHINE_NOT_FOUND"
    assert reply["machine_id"] == "nope"
    assert reply["error"] == "Machine not found: 'nope'; valid ids: machine_1, machine_2"


async def test_malformed_json_says_where(client):
    await client.send('{"type": "get_status",\n  "machine_id": machine_1}')
    reply = await client.next()
    assert reply["type"] == "error" and reply["code"] == "INVALID_MESSAGE_FORMAT"
    assert reply["error"] == "message is not valid JSON: line 2, column 17: expected value"
    await client.send('{"type": "ping"')
    reply = await client.next()
    assert (
        reply["error"]
        == "message is not valid JSON: line 1, column 15: EOF while parsing an object"
    )


async def test_each_session_is_logged_once(gateway, caplog):
    caplog.set_level(logging.INFO)
    c = await TestClient.open(url(gateway))
    assert (await c.next())["type"] == "welcome"
    await c.close()
    await gateway.stop()  # the session's closing line is in the log by now
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if re.match(r"session \d+ opened by ", m)]) == 1
    assert len([m for m in lines if re.match(r"session \d+ closed ", m)]) == 1
    assert "connection open" not in lines and "connection closed" not in lines


async def test_unsubscribe_stops_broadcasts(client, gateway):
    await client.request({"type": "subscribe", "subscription_type": "status_updates"})
    await client.wait_for("status_broadcast")
    reply = await client.request(
        {"type": "unsubscribe", "subscription_type": "status_updates", "machine_ids": ["machine_1"]}
    )
    assert reply["type"] == "unsubscription_confirmed"
    gateway.simulators["machine_1"].model.set_fault(Fault.ALARM, True)
    gateway.simulators["machine_2"].model.set_fault(Fault.ALARM, True)
    change = await client.wait_for("status_broadcast")
    assert list(change["status"]) == ["machine_2"]
    pong = await client.request({"type": "ping"})  # everything before it has arrived
    assert pong["type"] == "pong"
    assert all(
        "machine_1" not in m.get("status", {})
        for m in client.received
        if m["type"] == "status_broadcast"
        and m is not client.received[0]
        and m["timestamp"] >= change["timestamp"]
    )


async def test_command_results_subscribers_see_other_clients_commands(gateway):
    watcher = await TestClient.open(url(gateway))
    sender = await TestClient.open(url(gateway))
    await watcher.next()
    await sender.next()
    await watcher.request(
        {"type": "subscribe", "subscription_type": "command_results", "machine_ids": ["machine_2"]}
    )
    await sender.request(
        {"type": "subscribe", "subscription_type": "command_results", "machine_ids": ["machine_2"]}
    )
    reply = await sender.request(
        {
            "type": "send_command",
            "machine_id": "machine_2",
            "command": {"command": 1, "argument": 4},
        }
    )
    assert reply["type"] == "command_result"
    seen = await watcher.wait_for("command_result")
    assert seen["data"]["argument"] == 4 and "request_id" not in seen
    arrived = await watcher.wait_for("move_completed")
    assert arrived["position"] == 4
    # The sender gets each message once (its direct reply), not a second copy.
    await sender.wait_for("move_completed")
    pong = await sender.request({"type": "ping"})
    assert pong["type"] == "pong"
    kinds = [m["type"] for m in sender.received]
    assert kinds.count("command_result") == 1 and kinds.count("move_completed") == 1
    await watcher.close()
    await sender.close()


async def test_all_events_gets_machine_events_for_faults(client, gateway):
    await client.request({"type": "subscribe", "subscription_type": "all_events"})
    gateway.simulators["machine_1"].model.set_fault(Fault.EMERGENCY_STOP, True)
    raised = await client.wait_for(
        lambda m: m["type"] == "machine_event" and m["event"] == "fault_raised"
    )
    assert raised["machine_id"] == "machine_1"
    assert "PARADA_EMERGENCIA" in raised["keys"]
    gateway.simulators["machine_1"].model.set_fault(Fault.EMERGENCY_STOP, False)
    cleared = await client.wait_for(
        lambda m: m["type"] == "machine_event" and m["event"] == "fault_cleared"
    )
    assert "PARADA_EMERGENCIA" in cleared["keys"]


async def test_interlocked_move_is_machine_not_ready_with_reasons(client, gateway):
    gateway.simulators["machine_1"].model.set_fault(Fault.MANUAL_MODE, True)
    reply = await client.request(
        {
            "type": "send_command",
            "machine_id": "machine_1",
            "command": {"command": 1, "argument": 9},
        }
    )
    assert reply["type"] == "error"
    assert reply["code"] == "MACHINE_NOT_READY"
    assert reply["reasons"] == ["MODO_OPERACION"]
    assert "manual" in reply["error"]


async def test_estop_during_move_sends_move_failed(client, gateway):
    model = gateway.simulators["machine_1"].model
    model.seconds_per_position = 0.1
    await client.request(
        {
            "type": "send_command",
            "machine_id": "machine_1",
            "command": {"command": 1, "argument": 12},
        }
    )
    model.set_fault(Fault.EMERGENCY_STOP, True)
    failed = await client.wait_for(lambda m: m["type"] in ("move_failed", "move_completed"))
    assert failed["type"] == "move_failed"
    assert failed["reason"] == "PARADA_EMERGENCIA"
    assert "PARADA_EMERGENCIA" in failed["reasons"]
    assert failed["target"] == 12


async def test_second_command_while_moving_is_busy(client, gateway):
    gateway.simulators["machine_1"].model.seconds_per_position = 0.1
    await client.request(
        {
            "type": "send_command",
            "machine_id": "machine_1",
            "command": {"command": 1, "argument": 10},
        }
    )
    reply = await client.request(
        {
            "type": "send_command",
            "machine_id": "machine_1",
            "command": {"command": 1, "argument": 20},
        }
    )
    assert reply["type"] == "error" and reply["code"] == "BUSY"


async def test_disconnected_machine_answers_with_last_known_values(client, gateway):
    await client.request({"type": "subscribe", "subscription_type": "all_events"})
    await gateway.simulators["machine_2"].stop()
    event = await client.wait_for(
        lambda m: m["type"] == "machine_event" and m["machine_id"] == "machine_2"
    )
    assert event["event"] in ("disconnected", "error")
    reply = await client.request({"type": "get_status", "machine_id": "machine_2"})
    assert reply["connection_status"] in ("disconnected", "error")
    assert reply["position"] == 1 and reply["raw_status"] == 21
    refused = await client.request(
        {
            "type": "send_command",
            "machine_id": "machine_2",
            "command": {"command": 1, "argument": 5},
        }
    )
    assert refused["code"] == "CONNECTION_ERROR"


async def test_never_read_machine_reports_nulls(gateway_factory):
    config = gateway_config(
        machines=[
            {
                "id": "ghost",
                "name": "Unreachable",
                "host": "127.0.0.1",
                "port": 9,  # discard port: nothing listens
                "connect_timeout_s": 0.2,
                "backoff_initial_s": 0.05,
                "backoff_max_s": 0.1,
            }
        ]
    )
    gateway = await gateway_factory(config, wait_connected=False)
    c = await TestClient.open(url(gateway))
    welcome = await c.next()
    assert welcome["machines"][0]["type"] == "Real PLC"
    reply = await c.request({"type": "get_status", "machine_id": "ghost"})
    assert reply["status"] is None and reply["position"] is None and reply["raw_status"] is None
    assert reply["connection_status"] in ("disconnected", "error")
    await c.close()


async def test_json_ping_gets_pong(client):
    reply = await client.request({"type": "ping"})
    assert reply["type"] == "pong" and TIMESTAMP.match(reply["timestamp"])


async def test_oversized_frame_closes_with_1009_and_others_continue(gateway):
    big = await TestClient.open(url(gateway), max_size=None)
    other = await TestClient.open(url(gateway))
    await big.next()
    await other.next()
    await big.send(json.dumps({"type": "ping", "pad": "x" * 70_000}))
    with pytest.raises(ConnectionClosed):
        await big.next()
    assert big.connection.close_code == 1009
    assert (await other.request({"type": "ping"}))["type"] == "pong"


async def test_shutdown_closes_sessions_with_1001(gateway_factory):
    gateway = await gateway_factory()
    c = await TestClient.open(url(gateway))
    await c.next()
    await gateway.stop()
    with pytest.raises(ConnectionClosed):
        await c.next()
    assert c.connection.close_code == 1001


async def test_fifty_clients_with_different_filters_get_exactly_their_subscriptions(gateway):
    ids = ["machine_1", "machine_2"]
    clients = []
    for i in range(50):
        c = await TestClient.open(url(gateway))
        await c.next()
        wanted = [ids[i % 2]] if i % 3 else ids
        kind = ("status_updates", "command_results", "all_events")[i % 3]
        await c.request({"type": "subscribe", "subscription_type": kind, "machine_ids": wanted})
        clients.append((c, kind, set(wanted)))
    sender = await TestClient.open(url(gateway))
    await sender.next()
    for machine_id, target in (("machine_1", 5), ("machine_2", 8)):
        reply = await sender.request(
            {
                "type": "send_command",
                "machine_id": machine_id,
                "command": {"command": 1, "argument": target},
            }
        )
        assert reply["type"] == "command_result"
        await sender.wait_for("move_completed")
    for c, kind, wanted in clients:
        marker = await c.request({"type": "ping"})  # flushes what was sent before
        assert marker["type"] == "pong"
        messages = [m for m in c.received if "request_id" not in m and m["type"] != "welcome"]
        by_type: dict[str, set[str]] = {}
        for m in messages:
            machines = set(m["status"]) if m["type"] == "status_broadcast" else {m["machine_id"]}
            by_type.setdefault(m["type"], set()).update(machines)
        for seen in by_type.values():
            assert seen <= wanted
        if kind in ("status_updates", "all_events"):
            assert by_type.get("status_broadcast") == wanted
        else:
            assert "status_broadcast" not in by_type
        if kind in ("command_results", "all_events"):
            assert by_type.get("command_result") == wanted
            assert by_type.get("move_completed") == wanted
        else:
            assert "command_result" not in by_type and "move_completed" not in by_type
        if kind != "all_events":
            assert "machine_event" not in by_type
        await c.close()
    await sender.close()


async def test_client_that_stops_reading_is_dropped_without_slowing_others(gateway_factory):
    gateway = await gateway_factory(
        gateway_config(
            websocket={"host": "127.0.0.1", "port": 0, "max_send_buffer_bytes": 65536},
            # The flood is how it fills its buffer; the message rate limit is tested elsewhere.
            limits={"messages_per_second": 1e6, "message_burst": 1_000_000},
        )
    )
    # A small receive buffer (no autotuning) so the kernel cannot absorb megabytes for it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.websocket.port))
    slow = await TestClient.open(url(gateway), max_queue=1, sock=sock)
    fast = await TestClient.open(url(gateway))
    await fast.next()
    frame = json.dumps({"type": "get_status"})
    loop = asyncio.get_running_loop()
    with pytest.raises(ConnectionClosed):
        for sent in range(40_000):
            await slow.connection.send(frame)
            if sent % 50 == 0:
                await asyncio.sleep(0)  # client and server share this loop: let it serve
            if gateway.websocket.slow_clients_dropped:
                break
        else:
            raise AssertionError("the slow client was never dropped")
        await slow.connection.send(frame)
        await slow.connection.recv()
        for _ in range(100_000):  # drain what was queued before the cut
            await slow.connection.recv()
    assert gateway.websocket.slow_clients_dropped == 1
    started = loop.time()
    assert (await fast.request({"type": "ping"}))["type"] == "pong"
    assert loop.time() - started < 1.0
    await fast.close()


# -- authentication ---------------------------------------------------------------------------


def auth_config():
    import hashlib

    def digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    return gateway_config(
        auth={
            "tokens": [
                {"name": "wms", "role": "operator", "sha256": digest("op-token")},
                {"name": "screen", "role": "viewer", "sha256": digest("view-token")},
            ]
        }
    )


async def test_auth_on_refuses_missing_or_wrong_tokens_with_401(gateway_factory):
    from websockets.exceptions import InvalidStatus

    gateway = await gateway_factory(auth_config())
    for kwargs in ({}, {"additional_headers": {"Authorization": "Bearer nope"}}):
        with pytest.raises(InvalidStatus) as refused:
            await TestClient.open(url(gateway), **kwargs)
        assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        await TestClient.open(url(gateway) + "/?token=nope")


async def test_operator_token_in_header_commands_viewer_in_query_is_forbidden(gateway_factory):
    gateway = await gateway_factory(auth_config())
    operator = await TestClient.open(
        url(gateway), additional_headers={"Authorization": "Bearer op-token"}
    )
    welcome = await operator.next()
    assert welcome["auth"] == {"client": "wms", "role": "operator"}
    reply = await operator.request(
        {
            "type": "send_command",
            "machine_id": "machine_1",
            "command": {"command": 1, "argument": 3},
        }
    )
    assert reply["type"] == "command_result"

    viewer = await TestClient.open(url(gateway) + "/?token=view-token")
    assert (await viewer.next())["auth"] == {"client": "screen", "role": "viewer"}
    status = await viewer.request({"type": "get_status", "machine_id": "machine_1"})
    assert status["type"] == "machine_status"
    subscribed = await viewer.request({"type": "subscribe", "subscription_type": "all_events"})
    assert subscribed["type"] == "subscription_confirmed"
    refused = await viewer.request(
        {
            "type": "send_command",
            "machine_id": "machine_2",
            "command": {"command": 1, "argument": 3},
        }
    )
    assert refused["type"] == "error" and refused["code"] == "FORBIDDEN"
    assert gateway.simulators["machine_2"].model.moves_started == 0
    await operator.close()
    await viewer.close()


async def test_auth_off_needs_no_token_and_welcome_has_no_auth(client):
    assert "auth" not in client.received[0]
