"""The REST API over real HTTP: a real Gateway (uvicorn on loopback) and embedded simulators."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from carousel_gateway.api.guard import RateLimiter
from carousel_gateway.api.http_status import STATUS_BY_CODE, http_status
from carousel_gateway.errors import ErrorCode
from carousel_gateway.fleet.events import MoveCompleted, StatusChanged
from carousel_gateway.plc.connection import ConnectionState
from tests.integration.conftest import FAST_MACHINE, EventRecorder, gateway_config, wait_until
from tests.integration.wsclient import TestClient

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
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
VIEWER_TOKEN = "viewer-secret"
OPERATOR_TOKEN = "operator-secret"


def base_url(gateway: Any) -> str:
    return f"http://127.0.0.1:{gateway.http_port}"


@pytest.fixture
async def http(gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url(gateway), timeout=10) as client:
        yield client


def assert_envelope(body: dict[str, Any], *, success: bool) -> None:
    assert set(body) >= {"success", "data", "error", "code", "timestamp"}
    assert body["success"] is success
    assert TIMESTAMP.match(body["timestamp"])
    if success:
        assert body["error"] is None and body["code"] is None


def assert_error(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert_envelope(body, success=False)
    assert body["code"] == code
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["data"]["reasons"], list)
    return body


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def machine(machine_id: str, **overrides: Any) -> dict[str, Any]:
    """A fast embedded simulator table, with overrides."""
    return {**FAST_MACHINE, "id": machine_id, "name": f"Carrusel {machine_id}", **overrides}


# -- reading ------------------------------------------------------------------------------


async def test_machines_lists_every_machine(http, gateway):
    response = await http.get("/v1/machines")
    assert response.status_code == 200
    body = response.json()
    assert_envelope(body, success=True)
    assert "machine_id" not in body
    machines = {m["id"]: m for m in body["data"]}
    assert list(machines) == ["machine_1", "machine_2"]
    first = machines["machine_1"]
    assert first == {
        "id": "machine_1",
        "name": "Carrusel Principal",
        "ip": "127.0.0.1",
        "port": gateway.simulators["machine_1"].port,
        "type": "Simulator",
        "status": "connected",
        "description": "",
        "positions": 30,
        "position_base": 1,
    }


async def test_status_has_the_websocket_shape(http):
    response = await http.get("/v1/machines/machine_1/status")
    assert response.status_code == 200
    body = response.json()
    assert_envelope(body, success=True)
    assert body["machine_id"] == "machine_1"
    data = body["data"]
    assert data["status"] == IDLE_LABELS and list(data["status"]) == list(IDLE_LABELS)
    assert data["position"] == 1
    assert data["raw_status"] == 21
    assert data["connection_status"] == "connected"
    assert TIMESTAMP.match(data["last_update"])


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/machines/invalid_machine/status"),
        ("GET", "/v1/machines/invalid_machine/diagnostics"),
        ("POST", "/v1/machines/invalid_machine/command"),
        ("POST", "/v1/machines/invalid_machine/move"),
        ("POST", "/v1/simulators/invalid_machine/faults"),
        ("POST", "/v1/simulators/invalid_machine/link"),
    ],
)
async def test_unknown_machine_is_404_machine_not_found(http, method, path):
    bodies = {
        "command": {"command": 1, "argument": 2},
        "move": {"position": 2},
        "faults": {"fault": "alarm", "active": True},
        "link": {"action": "drop"},
    }
    body = bodies[path.rsplit("/", 1)[1]] if method == "POST" else None
    response = await http.request(method, path, json=body)
    error = assert_error(response, 404, "MACHINE_NOT_FOUND")
    assert error["machine_id"] == "invalid_machine"
    assert error["error"] == (
        "Machine not found: 'invalid_machine'; valid ids: machine_1, machine_2"
    )


async def test_single_machine_shortcuts_act_on_the_machine_named(http, gateway):
    # Without machine_id they act only on a gateway's only machine (test_input_validation.py).
    status = (await http.get("/v1/status", params={"machine_id": "machine_1"})).json()
    assert status["machine_id"] == "machine_1" and status["data"]["raw_status"] == 21
    body = {"machine_id": "machine_1", "command": 1, "argument": 4, "wait": "arrival"}
    reply = await http.post("/v1/command", json=body)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["machine_id"] == "machine_1"
    assert body["data"]["outcome"]["state"] == "arrived"
    assert gateway.simulators["machine_1"].model.position_index == 3
    assert gateway.simulators["machine_2"].model.moves_started == 0


# -- commands -----------------------------------------------------------------------------


async def test_command_without_wait_answers_when_sent(http, gateway):
    recorder = EventRecorder(gateway.fleet.bus)
    response = await http.post(
        "/v1/machines/machine_1/command", json={"command": 1, "argument": 25}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert_envelope(body, success=True)
    assert body["machine_id"] == "machine_1"
    data = body["data"]
    assert data["command_sent"] == 1 and data["argument"] == 25
    assert data["result"] == "Comando ejecutado correctamente"
    assert data["skipped"] is False and data["outcome"] is None
    done = await recorder.wait_for(lambda e: isinstance(e, MoveCompleted))
    assert done.command_id == data["command_id"] and done.position == 25


async def test_wait_arrival_in_body_returns_the_completed_move(http, gateway):
    response = await http.post(
        "/v1/machines/machine_2/command", json={"command": 1, "argument": 9, "wait": "arrival"}
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    outcome = data["outcome"]
    assert outcome["state"] == "arrived"
    assert outcome["command_id"] == data["command_id"]
    assert outcome["position"] == outcome["target"] == 9
    assert outcome["duration_s"] > 0 and TIMESTAMP.match(outcome["timestamp"])
    assert gateway.simulators["machine_2"].model.position_index == 8
    assert gateway.fleet.get("machine_2").snapshot.position == 9


async def test_wait_arrival_as_query_on_move(http, gateway):
    response = await http.post("/v1/machines/machine_1/move?wait=arrival", json={"position": 7})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["command_sent"] == 1 and data["argument"] == 7
    assert data["outcome"]["state"] == "arrived" and data["outcome"]["position"] == 7


async def test_move_to_current_position_is_skipped_and_counts_as_arrived(http, gateway):
    response = await http.post(
        "/v1/machines/machine_1/move", json={"position": 1, "wait": "arrival"}
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["skipped"] is True
    assert data["result"] == "Ya en la posición solicitada: no se envió el movimiento"
    assert data["outcome"]["state"] == "arrived" and data["outcome"]["duration_s"] == 0
    assert gateway.simulators["machine_1"].model.moves_started == 0


async def test_status_command_with_wait_has_no_outcome(http):
    response = await http.post("/v1/machines/machine_1/command?wait=arrival", json={"command": 0})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["command_sent"] == 0 and data["argument"] is None
    assert data["result"] == "Estado leído correctamente" and data["outcome"] is None


async def moving(gateway: Any, machine_id: str) -> None:
    machine = gateway.fleet.get(machine_id)
    await wait_until(
        gateway.fleet.bus,
        lambda: machine.snapshot.status is not None and machine.snapshot.status.running,
    )


async def test_fault_during_wait_arrival_is_409_with_the_failed_move(gateway_factory):
    slow = {"embedded": True, "seconds_per_position": 0.1}
    gateway = await gateway_factory(gateway_config([machine("machine_1", simulator=slow)]))
    async with httpx.AsyncClient(base_url=base_url(gateway), timeout=10) as client:
        request = asyncio.create_task(
            client.post("/v1/machines/machine_1/move?wait=arrival", json={"position": 15})
        )
        await moving(gateway, "machine_1")
        fault = await client.post(
            "/v1/simulators/machine_1/faults", json={"fault": "emergency_stop", "active": True}
        )
        assert fault.status_code == 200
        response = await request
    body = assert_error(response, 409, "MACHINE_NOT_READY")
    assert body["machine_id"] == "machine_1"
    assert "PARADA_EMERGENCIA" in body["data"]["reasons"]
    command = body["data"]["command"]
    assert command["command_sent"] == 1 and command["argument"] == 15
    # The outcome is where a success has it: data.outcome (the command's own is null).
    assert command["outcome"] is None
    outcome = body["data"]["outcome"]
    assert outcome["state"] == "failed" and outcome["reason"] == "PARADA_EMERGENCIA"
    assert outcome["target"] == 15 and 1 <= outcome["position"] < 15


async def test_link_dropped_during_wait_arrival_is_503(gateway_factory):
    slow = {"embedded": True, "seconds_per_position": 0.1}
    gateway = await gateway_factory(gateway_config([machine("machine_1", simulator=slow)]))
    async with httpx.AsyncClient(base_url=base_url(gateway), timeout=10) as client:
        request = asyncio.create_task(
            client.post("/v1/machines/machine_1/move?wait=arrival", json={"position": 12})
        )
        await moving(gateway, "machine_1")
        drop = await client.post("/v1/simulators/machine_1/link", json={"action": "drop"})
        assert drop.status_code == 200 and drop.json()["data"]["action"] == "drop"
        response = await request
    body = assert_error(response, 503, "CONNECTION_ERROR")
    assert body["data"]["reasons"] == ["connection_lost"]
    assert body["data"]["outcome"]["state"] == "failed"


async def test_waiting_request_is_answered_at_shutdown(gateway_factory):
    slow = {"embedded": True, "seconds_per_position": 1.0}
    gateway = await gateway_factory(gateway_config([machine("machine_1", simulator=slow)]))
    async with httpx.AsyncClient(base_url=base_url(gateway), timeout=10) as client:
        request = asyncio.create_task(
            client.post("/v1/machines/machine_1/move?wait=arrival", json={"position": 10})
        )
        await moving(gateway, "machine_1")
        await gateway.stop()
        response = await request
    body = assert_error(response, 503, "CONNECTION_ERROR")
    assert "shutting down" in body["error"]
    assert body["data"]["command"]["argument"] == 10
    assert body["data"]["outcome"] is None  # unknown: the gateway stopped first


async def test_second_move_while_moving_is_409_busy(http, gateway):
    first = await http.post("/v1/machines/machine_1/move", json={"position": 16})
    assert first.status_code == 200
    second = await http.post("/v1/machines/machine_1/move", json={"position": 20})
    body = assert_error(second, 409, "BUSY")
    assert body["machine_id"] == "machine_1"


async def test_interlocked_move_is_409_machine_not_ready_with_reasons(http, gateway):
    machine_1 = gateway.fleet.get("machine_1")
    fault = await http.post(
        "/v1/simulators/machine_1/faults", json={"fault": "manual_mode", "active": True}
    )
    assert fault.status_code == 200
    assert fault.json()["data"] == {
        "fault": "manual_mode",
        "active": True,
        "faults": ["manual_mode"],
        "status_byte": 17,
    }
    await wait_until(gateway.fleet.bus, lambda: machine_1.snapshot.raw_status == 17)
    response = await http.post("/v1/machines/machine_1/move", json={"position": 5})
    body = assert_error(response, 409, "MACHINE_NOT_READY")
    assert body["data"]["reasons"] == ["MODO_OPERACION"]
    assert gateway.simulators["machine_1"].model.moves_started == 0


async def test_disconnected_plc_is_503_and_status_keeps_last_values(http, gateway):
    machine_2 = gateway.fleet.get("machine_2")
    await gateway.simulators["machine_2"].stop()
    await wait_until(
        gateway.fleet.bus, lambda: machine_2.snapshot.connection is not ConnectionState.CONNECTED
    )
    response = await http.post("/v1/machines/machine_2/move", json={"position": 5})
    assert_error(response, 503, "CONNECTION_ERROR")
    status = (await http.get("/v1/machines/machine_2/status")).json()["data"]
    assert status["connection_status"] in ("disconnected", "error")
    assert status["position"] == 1 and status["raw_status"] == 21
    listed = {m["id"]: m["status"] for m in (await http.get("/v1/machines")).json()["data"]}
    assert listed["machine_2"] in ("disconnected", "error")


async def test_stalled_plc_is_504_plc_timeout(gateway_factory):
    # A long idle poll keeps the poller off the link, so the command is the request that
    # meets the stall (not a poll that breaks the link first).
    config = gateway_config([machine("machine_1", poll_idle_s=60.0)])
    gateway = await gateway_factory(config)
    async with httpx.AsyncClient(base_url=base_url(gateway), timeout=10) as client:
        stall = await client.post("/v1/simulators/machine_1/link", json={"action": "stall"})
        assert stall.json()["data"]["stalled"] is True
        response = await client.post("/v1/machines/machine_1/command", json={"command": 0})
        body = assert_error(response, 504, "PLC_TIMEOUT")
        assert "not retried" in body["error"]
        resume = await client.post("/v1/simulators/machine_1/link", json={"action": "resume"})
        assert resume.json()["data"]["stalled"] is False


# -- bad requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/machines/machine_1/command", {"command": 99, "argument": 1}),  # not allowed
        ("/v1/machines/machine_1/command", {"command": 1, "argument": 0}),  # below 1
        ("/v1/machines/machine_1/command", {"command": 1, "argument": 31}),  # above 30
        ("/v1/machines/machine_1/command", {"command": 1}),  # a move needs an argument
        ("/v1/machines/machine_1/command", {"command": "1", "argument": 2}),
        ("/v1/machines/machine_1/command", {"command": 1.5, "argument": 2}),
        ("/v1/machines/machine_1/command", {"command": True, "argument": 2}),
        ("/v1/machines/machine_1/command", {"command": 1, "argument": "5"}),
        ("/v1/machines/machine_1/command", {"argument": 5}),  # no command
        ("/v1/machines/machine_1/command", {"command": None}),
        ("/v1/machines/machine_1/move", {"position": 0}),
        ("/v1/machines/machine_1/move", {"position": "x"}),
        ("/v1/machines/machine_1/move", {}),
        ("/v1/command", {"machine_id": "machine_1", "command": 1, "argument": 999}),
    ],
)
async def test_bad_command_values_are_400_invalid_command(http, gateway, path, body):
    response = await http.post(path, json=body)
    assert_error(response, 400, "INVALID_COMMAND")
    assert gateway.simulators["machine_1"].model.moves_started == 0


@pytest.mark.parametrize(
    "path, content",
    [
        ("/v1/machines/machine_1/command", b"{not json"),
        ("/v1/machines/machine_1/command", b"[1, 25]"),
        ("/v1/machines/machine_1/command", b'"move"'),
        ("/v1/machines/machine_1/command", b""),
        ("/v1/machines/machine_1/command", b'{"command": 1, "argument": 2, "wait": "soon"}'),
        ("/v1/machines/machine_1/command?wait=later", b'{"command": 1, "argument": 2}'),
        ("/v1/machines/machine_1/move", b'{"position": 3, "wait": 1}'),
        ("/v1/simulators/machine_1/faults", b'{"fault": "fire", "active": true}'),
        ("/v1/simulators/machine_1/faults", b'{"fault": "alarm", "active": "yes"}'),
        ("/v1/simulators/machine_1/faults", b'{"fault": "alarm"}'),
        ("/v1/simulators/machine_1/link", b'{"action": "explode"}'),
        ("/v1/simulators/machine_1/link", b"{}"),
    ],
)
async def test_malformed_requests_are_400_invalid_message_format(http, gateway, path, content):
    response = await http.post(path, content=content, headers={"content-type": "application/json"})
    assert_error(response, 400, "INVALID_MESSAGE_FORMAT")
    assert gateway.simulators["machine_1"].model.moves_started == 0
    assert not gateway.simulators["machine_1"].model.faults


async def test_body_over_the_limit_is_413(http):
    big = b'{"command": 0, "pad": "' + b"x" * 70_000 + b'"}'
    response = await http.post(
        "/v1/machines/machine_1/command", content=big, headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_chunked_body_over_the_limit_is_413(gateway):
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"command": 0, "pad": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}'

    async with httpx.AsyncClient(base_url=base_url(gateway), timeout=10) as client:
        response = await client.post(
            "/v1/machines/machine_1/command",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_unknown_path_and_method_keep_the_envelope(http):
    missing = await http.get("/v1/nothing-here")
    assert_error(missing, 404, None)
    wrong = await http.delete("/v1/machines")
    assert_error(wrong, 405, None)


async def test_unexpected_error_is_500_internal_error(http, gateway, monkeypatch):
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(gateway.fleet.get("machine_1"), "execute", broken)
    response = await http.post("/v1/machines/machine_1/command", json={"command": 0})
    body = assert_error(response, 500, "INTERNAL_ERROR")
    assert "boom" not in response.text
    assert body["machine_id"] == "machine_1"


async def test_rate_limited_writes_are_429_with_retry_after(http, gateway):
    gateway.http.api.limiter = RateLimiter(rate=0.01, burst=2)
    for _ in range(2):
        ok = await http.post("/v1/machines/machine_1/command", json={"command": 0})
        assert ok.status_code == 200
    limited = await http.post("/v1/machines/machine_1/command", json={"command": 0})
    assert_error(limited, 429, "RATE_LIMITED")
    assert int(limited.headers["retry-after"]) >= 1
    assert (await http.get("/v1/machines/machine_1/status")).status_code == 200


# -- auth ---------------------------------------------------------------------------------


@pytest.fixture
async def secured(gateway_factory) -> Any:
    tokens = [
        {"name": "dashboard", "role": "viewer", "sha256": sha256(VIEWER_TOKEN)},
        {"name": "wms", "role": "operator", "sha256": sha256(OPERATOR_TOKEN)},
    ]
    return await gateway_factory(gateway_config(auth={"tokens": tokens}))


async def test_missing_or_wrong_token_is_401(secured):
    async with httpx.AsyncClient(base_url=base_url(secured)) as client:
        missing = await client.get("/v1/machines")
        assert_error(missing, 401, "UNAUTHORIZED")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = await client.get("/v1/machines", headers={"Authorization": "Bearer nope"})
        assert_error(wrong, 401, "UNAUTHORIZED")
        post = await client.post("/v1/machines/machine_1/move", json={"position": 3})
        assert_error(post, 401, "UNAUTHORIZED")
        assert secured.simulators["machine_1"].model.moves_started == 0


async def test_viewer_may_read_but_not_write(secured):
    headers = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    async with httpx.AsyncClient(base_url=base_url(secured), headers=headers) as client:
        assert (await client.get("/v1/machines")).status_code == 200
        assert (await client.get("/v1/machines/machine_1/diagnostics")).status_code == 200
        for path, body in [
            ("/v1/machines/machine_1/move", {"position": 3}),
            ("/v1/command", {"command": 0}),
            ("/v1/simulators/machine_1/faults", {"fault": "alarm", "active": True}),
        ]:
            assert_error(await client.post(path, json=body), 403, "FORBIDDEN")
    assert secured.simulators["machine_1"].model.moves_started == 0
    assert not secured.simulators["machine_1"].model.faults


async def test_token_in_query_works_like_the_header(secured):
    async with httpx.AsyncClient(base_url=base_url(secured)) as client:
        read = await client.get(f"/v1/machines/machine_1/status?token={VIEWER_TOKEN}")
        assert read.status_code == 200
        move = await client.post(
            f"/v1/machines/machine_1/move?token={OPERATOR_TOKEN}&wait=arrival",
            json={"position": 3},
        )
        assert move.status_code == 200 and move.json()["data"]["outcome"]["state"] == "arrived"


async def test_operator_commands_are_attributed_to_the_token_name(secured):
    recorder = EventRecorder(secured.fleet.bus)
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    async with httpx.AsyncClient(base_url=base_url(secured), headers=headers) as client:
        response = await client.post("/v1/machines/machine_2/command", json={"command": 0})
    assert response.status_code == 200
    accepted = [e for e in recorder.events if type(e).__name__ == "CommandAccepted"]
    assert accepted[-1].origin.client == "wms" and accepted[-1].origin.channel.value == "rest"


async def test_probes_metrics_and_docs_stay_open(secured):
    async with httpx.AsyncClient(base_url=base_url(secured)) as client:
        for path in ("/v1/health", "/v1/ready", "/metrics", "/openapi.json", "/docs"):
            assert (await client.get(path)).status_code == 200, path


# -- diagnostics, health, readiness -------------------------------------------------------


async def test_diagnostics_report_link_status_faults_and_last_move(http, gateway):
    moved = await http.post("/v1/machines/machine_1/move?wait=arrival", json={"position": 6})
    assert moved.status_code == 200
    response = await http.get("/v1/machines/machine_1/diagnostics")
    assert response.status_code == 200
    body = response.json()
    assert body["machine_id"] == "machine_1"
    data = body["data"]
    link = data["connection"]
    assert link["host"] == "127.0.0.1" and link["port"] == gateway.simulators["machine_1"].port
    assert link["state"] == "connected" and TIMESTAMP.match(link["connected_since"])
    assert link["reconnects"] == 0 and link["last_error"] is None
    assert link["latency_samples"] > 0
    assert 0 < link["latency_p50_s"] <= link["latency_p99_s"]
    assert data["state"]["position"] == 6 and data["faults"] == [] and data["interlocks"] == []
    assert data["move_refusal"] is None and data["busy"] is False
    last = data["last_move"]
    assert last["state"] == "arrived" and last["position"] == 6
    assert last["command_id"] == moved.json()["data"]["command_id"]


async def test_health_is_healthy_degraded_then_critical(http, gateway):
    async def health() -> dict[str, Any]:
        response = await http.get("/v1/health")
        assert response.status_code == 200
        return response.json()["data"]

    first = await health()
    assert first["status"] == "healthy"
    assert first["machines"] == {"machine_1": "connected", "machine_2": "connected"}
    for machine_id, expected in (("machine_2", "degraded"), ("machine_1", "critical")):
        await gateway.simulators[machine_id].stop()
        target = gateway.fleet.get(machine_id)
        await wait_until(
            gateway.fleet.bus,
            lambda target=target: target.snapshot.connection is not ConnectionState.CONNECTED,
        )
        assert (await health())["status"] == expected


async def test_ready_is_200_only_while_serving(http, gateway):
    ready = await http.get("/v1/ready")
    assert ready.status_code == 200 and ready.json()["data"] == {"ready": True}
    gateway.http.api.ready = False  # as while starting or stopping
    assert_error(await http.get("/v1/ready"), 503, "CONNECTION_ERROR")


# -- simulator controls -------------------------------------------------------------------


async def test_simulator_controls_are_404_for_real_or_external_machines(gateway_factory):
    config = gateway_config(
        [
            machine("machine_1"),
            {"id": "plc", "name": "Real", "host": "127.0.0.1", "port": 9, "kind": "plc"},
            {
                "id": "external",
                "name": "External sim",
                "port": 9,
                "kind": "simulator",
                "simulator": {"embedded": False},  # run elsewhere, not by the gateway
            },
        ]
    )
    gateway = await gateway_factory(config, wait_connected=False)
    async with httpx.AsyncClient(base_url=base_url(gateway)) as client:
        for machine_id in ("plc", "external"):
            fault = await client.post(
                f"/v1/simulators/{machine_id}/faults", json={"fault": "alarm", "active": True}
            )
            body = assert_error(fault, 404, "MACHINE_NOT_FOUND")
            assert body["machine_id"] == machine_id
            link = await client.post(f"/v1/simulators/{machine_id}/link", json={"action": "drop"})
            assert_error(link, 404, "MACHINE_NOT_FOUND")


async def test_link_drop_reconnects(http, gateway):
    recorder = EventRecorder(gateway.fleet.bus)
    response = await http.post("/v1/simulators/machine_2/link", json={"action": "drop"})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["action"] == "drop" and data["stalled"] is False
    machine_2 = gateway.fleet.get("machine_2")
    await recorder.wait_for(
        lambda e: (
            e.machine_id == "machine_2"
            and isinstance(e, StatusChanged)
            and e.snapshot.connection is not ConnectionState.CONNECTED
        )
    )
    await wait_until(
        gateway.fleet.bus, lambda: machine_2.snapshot.connection is ConnectionState.CONNECTED
    )
    diagnostics = (await http.get("/v1/machines/machine_2/diagnostics")).json()["data"]
    assert diagnostics["connection"]["reconnects"] == 1


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus exposition, keyed by name and labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(metrics: dict, name: str, **labels: str) -> float | None:
    return metrics.get((name, frozenset(labels.items())))


async def test_injected_fault_reaches_rest_websocket_and_metrics(http, gateway):
    ws = await TestClient.open(f"ws://127.0.0.1:{gateway.websocket.port}")
    await ws.next()  # welcome
    await ws.request(
        {"type": "subscribe", "subscription_type": "status_updates", "machine_ids": ["machine_1"]}
    )
    await ws.wait_for("status_broadcast")  # the current state, sent on subscribing
    response = await http.post(
        "/v1/simulators/machine_1/faults", json={"fault": "emergency_stop", "active": True}
    )
    assert response.status_code == 200
    assert response.json()["data"]["faults"] == ["emergency_stop"]

    broadcast = await ws.wait_for(
        lambda m: (
            m["type"] == "status_broadcast"
            and m["status"]["machine_1"]["status"]["PARADA_EMERGENCIA"] == "Activa"
        )
    )
    assert broadcast["status"]["machine_1"]["status"]["READY"] == "Fallo"

    status = (await http.get("/v1/machines/machine_1/status")).json()["data"]
    assert status["status"]["PARADA_EMERGENCIA"] == "Activa" and status["raw_status"] == 4
    diagnostics = (await http.get("/v1/machines/machine_1/diagnostics")).json()["data"]
    assert diagnostics["faults"] == ["PARADA_EMERGENCIA"]
    assert {i["key"] for i in diagnostics["interlocks"]} == {"READY", "PARADA_EMERGENCIA"}
    assert diagnostics["move_refusal"]["code"] == "MACHINE_NOT_READY"

    text = (await http.get("/metrics")).text
    metrics = samples(text)
    fault = "carousel_machine_fault_active"
    assert value(metrics, fault, machine="machine_1", key="PARADA_EMERGENCIA") == 1.0
    assert value(metrics, fault, machine="machine_2", key="PARADA_EMERGENCIA") == 0.0
    assert value(metrics, "carousel_machine_ready", machine="machine_1") == 0.0
    raised = "carousel_faults_raised_total"
    assert value(metrics, raised, machine="machine_1", key="PARADA_EMERGENCIA") == 1.0

    cleared = await http.post(
        "/v1/simulators/machine_1/faults", json={"fault": "emergency_stop", "active": False}
    )
    assert cleared.json()["data"]["faults"] == []
    await ws.wait_for(
        lambda m: (
            m["type"] == "status_broadcast"
            and m["status"]["machine_1"]["status"]["PARADA_EMERGENCIA"] == "Desactivada"
        )
    )
    metrics = samples((await http.get("/metrics")).text)
    assert value(metrics, fault, machine="machine_1", key="PARADA_EMERGENCIA") == 0.0
    await ws.close()


# -- metrics ------------------------------------------------------------------------------


async def test_metrics_cover_machines_commands_moves_and_websocket(http, gateway):
    ws = await TestClient.open(f"ws://127.0.0.1:{gateway.websocket.port}")
    await ws.next()
    await ws.request({"type": "subscribe", "subscription_type": "all_events"})
    moved = await http.post("/v1/machines/machine_1/move?wait=arrival", json={"position": 5})
    assert moved.status_code == 200
    refused = await http.post("/v1/machines/machine_1/move", json={"position": 99})
    assert refused.status_code == 400
    await ws.wait_for(
        lambda m: m["type"] == "status_broadcast" and m["status"]["machine_1"]["position"] == 5
    )

    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    metrics = samples(response.text)
    m1 = {"machine": "machine_1"}
    assert value(metrics, "carousel_machine_connected", **m1) == 1.0
    assert value(metrics, "carousel_machine_connection_state", state="connected", **m1) == 1.0
    assert value(metrics, "carousel_machine_position", **m1) == 5.0
    assert value(metrics, "carousel_machine_status_byte", **m1) == 21.0
    assert value(metrics, "carousel_commands_total", code="OK", **m1) == 1.0
    assert value(metrics, "carousel_commands_total", code="INVALID_COMMAND", **m1) == 1.0
    assert value(metrics, "carousel_moves_completed_total", **m1) == 1.0
    assert value(metrics, "carousel_moves_completed_total", machine="machine_2") == 0.0
    assert value(metrics, "carousel_plc_reconnects_total", **m1) == 0.0
    assert value(metrics, "carousel_plc_request_duration_seconds_count", **m1) > 0
    assert value(metrics, "carousel_ws_sessions") == 1.0
    assert value(metrics, "carousel_ws_messages_sent_total", type="status_broadcast") >= 2
    assert value(metrics, "carousel_ws_messages_sent_total", type="move_completed") == 1.0
    assert value(metrics, "carousel_ws_slow_clients_dropped_total") == 0.0
    assert value(metrics, "carousel_ws_broadcast_delay_seconds_count") >= 1

    # Latency samples are taken once: a second scrape adds only what came since.
    count = value(metrics, "carousel_plc_request_duration_seconds_count", **m1)
    machine_1 = gateway.fleet.get("machine_1")
    assert count <= len(machine_1.connection.latencies_s)
    again = samples((await http.get("/metrics")).text)
    later = value(again, "carousel_plc_request_duration_seconds_count", **m1)
    assert count <= later <= count + len(machine_1.connection.latencies_s)
    await ws.close()


async def test_metrics_failed_moves_by_reason(gateway_factory):
    slow = {"embedded": True, "seconds_per_position": 0.1}
    gateway = await gateway_factory(gateway_config([machine("machine_1", simulator=slow)]))
    async with httpx.AsyncClient(base_url=base_url(gateway), timeout=10) as client:
        request = asyncio.create_task(
            client.post("/v1/machines/machine_1/move?wait=arrival", json={"position": 12})
        )
        await moving(gateway, "machine_1")
        await client.post(
            "/v1/simulators/machine_1/faults", json={"fault": "vfd_fault", "active": True}
        )
        assert (await request).status_code == 409
        metrics = samples((await client.get("/metrics")).text)
    failed = "carousel_moves_failed_total"
    assert value(metrics, failed, machine="machine_1", reason="VFD") == 1.0
    assert value(metrics, "carousel_machine_fault_active", machine="machine_1", key="VFD") == 1.0


async def test_two_gateways_in_one_process_keep_separate_metrics(gateway_factory):
    first = await gateway_factory()
    second = await gateway_factory()
    async with httpx.AsyncClient(timeout=10) as client:
        moved = await client.post(
            f"{base_url(first)}/v1/machines/machine_1/move?wait=arrival", json={"position": 3}
        )
        assert moved.status_code == 200
        one = samples((await client.get(f"{base_url(first)}/metrics")).text)
        two = samples((await client.get(f"{base_url(second)}/metrics")).text)
    name = "carousel_moves_completed_total"
    assert value(one, name, machine="machine_1") == 1.0
    assert value(two, name, machine="machine_1") == 0.0


# -- OpenAPI ------------------------------------------------------------------------------


async def test_openapi_lists_every_endpoint_with_its_models(http):
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    assert {
        "/v1/machines": {"get"},
        "/v1/machines/{machine_id}/status": {"get"},
        "/v1/machines/{machine_id}/command": {"post"},
        "/v1/machines/{machine_id}/move": {"post"},
        "/v1/machines/{machine_id}/history": {"get"},
        "/v1/events": {"get"},
        "/v1/machines/{machine_id}/diagnostics": {"get"},
        "/v1/status": {"get"},
        "/v1/command": {"post"},
        "/v1/health": {"get"},
        "/v1/ready": {"get"},
        "/metrics": {"get"},
        "/v1/simulators/{machine_id}/faults": {"post"},
        "/v1/simulators/{machine_id}/link": {"post"},
        "/v1/jobs": {"get", "post"},
        "/v1/jobs/{job_id}": {"get"},
        "/v1/jobs/{job_id}/lines/{line_id}/confirm": {"post"},
        "/v1/jobs/{job_id}/pause": {"post"},
        "/v1/jobs/{job_id}/resume": {"post"},
        "/v1/jobs/{job_id}/cancel": {"post"},
        "/v1/workstations": {"get"},
        "/v1/workstations/{workstation_id}": {"get"},
    } == {path: set(operations) for path, operations in paths.items()}

    def ref(content: dict[str, Any]) -> str:
        return content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]

    requests = {
        "/v1/machines/{machine_id}/command": "CommandRequest",
        "/v1/machines/{machine_id}/move": "MoveRequest",
        "/v1/command": "ShortcutCommandRequest",
        "/v1/simulators/{machine_id}/faults": "FaultRequest",
        "/v1/simulators/{machine_id}/link": "LinkRequest",
        "/v1/jobs": "JobSubmission",
        "/v1/jobs/{job_id}/lines/{line_id}/confirm": "PickConfirmRequest",
        "/v1/jobs/{job_id}/pause": "JobControlRequest",
        "/v1/jobs/{job_id}/cancel": "JobControlRequest",
    }
    for path, model in requests.items():
        assert ref(paths[path]["post"]["requestBody"]["content"]) == model
    command = paths["/v1/machines/{machine_id}/command"]["post"]["responses"]
    assert ref(command["200"]["content"]) == "CommandResponse"
    for status in ("400", "401", "403", "404", "409", "413", "429", "503", "504"):
        assert ref(command[status]["content"]) == "ErrorResponse"
    assert ref(paths["/v1/machines"]["get"]["responses"]["200"]["content"]) == "MachinesResponse"
    # FastAPI's own 422 is never documented (a bad body is 400); 422 is INVALID_JOB only,
    # on the job writes.
    assert "HTTPValidationError" not in response.text
    with_422 = {
        path
        for path, operations in paths.items()
        for op in operations.values()
        if "422" in op["responses"]
    }
    assert with_422 == {path for path in paths if path.startswith("/v1/jobs")} - {
        "/v1/jobs/{job_id}"
    }
    submit = paths["/v1/jobs"]["post"]["responses"]
    assert ref(submit["201"]["content"]) == ref(submit["200"]["content"]) == "JobResponse"
    docs = await http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_every_error_code_has_one_http_status():
    assert set(STATUS_BY_CODE) == set(ErrorCode)
    expected = {
        ErrorCode.INVALID_MESSAGE_FORMAT: 400,
        ErrorCode.INVALID_COMMAND: 400,
        ErrorCode.UNAUTHORIZED: 401,
        ErrorCode.FORBIDDEN: 403,
        ErrorCode.MACHINE_NOT_FOUND: 404,
        ErrorCode.BUSY: 409,
        ErrorCode.MACHINE_NOT_READY: 409,
        ErrorCode.RATE_LIMITED: 429,
        ErrorCode.PAYLOAD_TOO_LARGE: 413,
        ErrorCode.MACHINE_RATE_LIMITED: 429,
        ErrorCode.AUTH_LOCKED_OUT: 429,
        ErrorCode.ORIGIN_NOT_ALLOWED: 403,
        ErrorCode.HOST_NOT_ALLOWED: 400,
        ErrorCode.SESSION_LIMIT: 503,
        ErrorCode.ADDRESS_SESSION_LIMIT: 503,
        ErrorCode.JOURNAL_UNAVAILABLE: 503,
        ErrorCode.INTERNAL_ERROR: 500,
        ErrorCode.CONNECTION_ERROR: 503,
        ErrorCode.PLC_TIMEOUT: 504,
        ErrorCode.MOVE_OUTCOME_UNKNOWN: 504,
        ErrorCode.INVALID_JOB: 422,
        ErrorCode.JOB_NOT_FOUND: 404,
        ErrorCode.JOB_CONFLICT: 409,
        ErrorCode.NOT_ACTIVE: 409,
        ErrorCode.MACHINE_RESERVED: 409,
        ErrorCode.WORKSTATION_NOT_FOUND: 404,
    }
    assert {code: http_status(code) for code in ErrorCode} == expected


def test_rate_limiter_refills_over_time():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert limiter.acquire("a") == 0 and limiter.acquire("a") == 0
    assert limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0  # per client
    now[0] = 0.5
    assert limiter.acquire("a") == 0


async def test_body_without_json_content_type_is_invalid_message_format(http, gateway):
    for headers in ({}, {"content-type": "application/x-www-form-urlencoded"}):
        response = await http.post(
            "/v1/machines/machine_1/move", content=b'{"position": 5}', headers=headers
        )
        assert_error(response, 400, "INVALID_MESSAGE_FORMAT")
    assert gateway.simulators["machine_1"].model.moves_started == 0


async def test_malformed_json_says_where(http):
    response = await http.post(
        "/v1/machines/machine_1/move",
        content=b'{"position": 7,,}',
        headers={"Content-Type": "application/json"},
    )
    body = assert_error(response, 400, "INVALID_MESSAGE_FORMAT")
    assert body["error"] == (
        "invalid JSON body: line 1, column 16: Expecting property name enclosed in double quotes"
    )
    response = await http.post(
        "/v1/command",
        content=b'{"machine_id": "machine_1",\n "command": }',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    body = assert_error(response, 400, "INVALID_MESSAGE_FORMAT")
    assert body["error"] == "invalid JSON body: line 2, column 13: Expecting value"


@pytest.mark.parametrize(
    ("content_type", "got"),
    [
        (None, "no Content-Type"),
        ("text/plain", "Content-Type 'text/plain'"),
        ("application/x-www-form-urlencoded", "Content-Type 'application/x-www-form-urlencoded'"),
    ],
)
async def test_a_body_not_sent_as_json_names_the_content_type(http, gateway, content_type, got):
    request = http.build_request("POST", "/v1/machines/machine_1/move", content=b'{"position": 7}')
    if content_type is None:
        request.headers.pop("Content-Type", None)
    else:
        request.headers["Content-Type"] = content_type
    response = await http.send(request)
    body = assert_error(response, 400, "INVALID_MESSAGE_FORMAT")
    assert body["error"] == (
        f"the request body must be JSON sent with Content-Type: application/json (got {got})"
    )
    assert gateway.simulators["machine_1"].model.position_index == 0  # nothing was sent
