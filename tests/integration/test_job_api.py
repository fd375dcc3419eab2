"""Pick jobs over the WebSocket API, REST, the Python client and the CLI, against a real
gateway: the real job engine, embedded simulators on loopback, real servers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from carousel_gateway.client import CarouselClient, ServerError
from carousel_gateway.wire import JobEventKind, JobState
from tests.integration.conftest import gateway_config, wait_until
from tests.integration.wsclient import TestClient

pytestmark = pytest.mark.asyncio

STATION = {"id": "station_1", "name": "Puesto 1", "machines": ["machine_1", "machine_2"]}
OPERATOR_TOKEN = "op-token"
VIEWER_TOKEN = "view-token"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def picking_config(**overrides: Any) -> Any:
    return gateway_config(workstations=[STATION], **overrides)


def a_job(job_id: str = "ORD-1", lines: list[tuple[str, int]] | None = None) -> dict[str, Any]:
    picks = lines or [("machine_1", 5), ("machine_2", 12), ("machine_1", 20), ("machine_1", 5)]
    return {
        "job_id": job_id,
        "workstation_id": "station_1",
        "priority": 3,
        "lines": [
            {
                "line_id": str(number),
                "machine_id": machine,
                "position": position,
                "quantity": 2,
                "sku": f"SKU-{number}",
                "description": f"Item {number}",
                "order_id": "PED-1",
            }
            for number, (machine, position) in enumerate(picks, start=1)
        ],
    }


def ws_url(gateway: Any) -> str:
    assert gateway.websocket is not None
    return f"ws://127.0.0.1:{gateway.websocket.port}"


def base_url(gateway: Any) -> str:
    return f"http://127.0.0.1:{gateway.http_port}"


async def wait_jobs(gateway: Any, condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait, job event by job event, until ``condition()`` holds (no sleeping)."""
    changed = asyncio.Event()
    stop = gateway.jobs.listen(lambda _event: changed.set())
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                changed.clear()
                await changed.wait()
    finally:
        stop()


class Frames:
    """Every frame a TestClient received, in order, including those a request read past."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.seen = 0

    async def next(self) -> dict[str, Any]:
        while self.seen >= len(self.client.received):
            await self.client.next(timeout=15)
        frame = self.client.received[self.seen]
        self.seen += 1
        return frame


def presented_lines(gateway: Any) -> list[Any]:
    current = gateway.jobs.workstation("station_1").current
    if current is None:
        return []
    return [line for line in current.lines if line.state == "presented"]


@pytest.fixture
async def picking(gateway_factory) -> Any:
    return await gateway_factory(picking_config())


@pytest.fixture
async def http(picking) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url(picking), timeout=10) as client:
        yield client


# -- WebSocket ----------------------------------------------------------------------------


async def test_a_job_submitted_and_confirmed_over_the_websocket_completes(picking):
    client = await TestClient.open(ws_url(picking))
    welcome = await client.next()
    assert "pick_jobs" in welcome["server_info"]["capabilities"]
    subscribed = await client.request(
        {"type": "subscribe", "subscription_type": "job_events", "workstation_ids": ["station_1"]}
    )
    assert subscribed["type"] == "subscription_confirmed"
    assert subscribed["workstation_ids"] == ["station_1"]
    assert subscribed["machine_ids"] == []

    accepted = await client.request({"type": "submit_job", **a_job()})
    assert accepted["type"] == "job_accepted"
    assert accepted["created"] is True
    assert accepted["job"]["job_id"] == "ORD-1"
    assert len(accepted["job"]["lines"]) == 4

    # Every frame, in order (TestClient keeps the ones a request read past its reply).
    frames = Frames(client)
    confirmed: set[str] = set()
    replies: list[dict[str, Any]] = []
    kinds: list[str] = []
    while "job_completed" not in kinds:
        frame = await frames.next()
        if frame["type"] == "pick_confirmed":
            replies.append(frame)
            continue
        assert frame["type"] in ("welcome", "subscription_confirmed", "job_accepted", "job_event")
        if frame["type"] != "job_event":
            continue
        assert frame["workstation_id"] == "station_1"
        kinds.append(frame["event"])
        if frame["event"] != "stop_presented":
            continue
        for line in frame["stop"]["lines"]:
            if line["state"] != "presented" or line["line_id"] in confirmed:
                continue
            await client.send(
                {
                    "type": "confirm_pick",
                    "request_id": f"confirm-{line['line_id']}",
                    "job_id": line["job_id"],
                    "line_id": line["line_id"],
                    "quantity_picked": line["quantity"],
                }
            )
            confirmed.add(line["line_id"])
    while len(replies) < len(confirmed):
        frame = await frames.next()
        if frame["type"] == "pick_confirmed":
            replies.append(frame)
    assert {reply["request_id"] for reply in replies} == {f"confirm-{n}" for n in "1234"}
    assert confirmed == {"1", "2", "3", "4"}
    assert kinds[:2] == ["job_queued", "job_started"]
    assert kinds.count("line_confirmed") == 4
    # Lines 1 and 4 share bucket 5 of machine_1: one stop, presented once.
    assert kinds.count("stop_presented") == 3

    jobs = await client.request({"type": "get_jobs", "state": "completed"})
    assert [job["job_id"] for job in jobs["jobs"]] == ["ORD-1"]
    done = jobs["jobs"][0]
    assert {line["state"] for line in done["lines"]} == {"picked"}
    assert all(line["confirmed_by"] for line in done["lines"])
    assert done["stats"]["moves"] >= 1
    await client.close()


async def test_websocket_job_errors_use_the_envelope_and_codes(picking):
    client = await TestClient.open(ws_url(picking))
    await client.next()
    first = await client.request({"type": "submit_job", **a_job("J-err")})
    assert first["created"] is True
    again = await client.request({"type": "submit_job", **a_job("J-err")})
    assert again["type"] == "job_accepted" and again["created"] is False
    other = a_job("J-err", [("machine_2", 7)])
    conflict = await client.request({"type": "submit_job", **other})
    assert (conflict["type"], conflict["code"]) == ("error", "JOB_CONFLICT")
    bad = a_job("J-bad", [("machine_1", 999), ("machine_9", 1)])
    invalid = await client.request({"type": "submit_job", **bad})
    assert invalid["code"] == "INVALID_JOB"
    assert "1" in invalid["error"] and "2" in invalid["error"]
    missing = await client.request({"type": "pause_job", "job_id": "nope"})
    assert missing["code"] == "JOB_NOT_FOUND"
    one = await client.request({"type": "get_jobs", "job_id": "J-err"})
    assert [job["job_id"] for job in one["jobs"]] == ["J-err"]
    none = await client.request({"type": "get_jobs", "job_id": "nope"})
    assert none["code"] == "JOB_NOT_FOUND"
    await client.request({"type": "submit_job", **a_job("J-err-2", [("machine_2", 7)])})
    newest = await client.request({"type": "get_jobs", "limit": 1})
    assert [job["job_id"] for job in newest["jobs"]] == ["J-err-2"]
    await client.request({"type": "cancel_job", "job_id": "J-err-2"})
    unknown = await client.request(
        {"type": "subscribe", "subscription_type": "job_events", "workstation_ids": ["x"]}
    )
    assert unknown["code"] == "WORKSTATION_NOT_FOUND"
    misplaced = await client.request(
        {
            "type": "subscribe",
            "subscription_type": "status_updates",
            "workstation_ids": ["station_1"],
        }
    )
    assert misplaced["code"] == "INVALID_MESSAGE_FORMAT"
    paused = await client.request({"type": "pause_job", "job_id": "J-err", "reason": "break"})
    assert paused["type"] == "job_update"
    assert paused["job"]["state"] == "paused"
    assert paused["job"]["paused_reason"] == "break"
    cancelled = await client.request({"type": "cancel_job", "job_id": "J-err"})
    assert cancelled["job"]["state"] == "cancelled"
    await client.close()


async def test_viewers_read_and_subscribe_but_only_operators_submit_and_control(
    gateway_factory,
):
    tokens = [
        {"name": "wms", "role": "operator", "sha256": digest(OPERATOR_TOKEN)},
        {"name": "screen", "role": "viewer", "sha256": digest(VIEWER_TOKEN)},
    ]
    gateway = await gateway_factory(picking_config(auth={"tokens": tokens}))
    viewer = await TestClient.open(ws_url(gateway) + f"/?token={VIEWER_TOKEN}")
    await viewer.next()
    operator = await TestClient.open(ws_url(gateway) + f"/?token={OPERATOR_TOKEN}")
    await operator.next()
    subscribed = await viewer.request({"type": "subscribe", "subscription_type": "job_events"})
    assert subscribed["workstation_ids"] == ["station_1"]
    for message in (
        {"type": "submit_job", **a_job("J-v")},
        {"type": "confirm_pick", "job_id": "J-v", "line_id": "1", "quantity_picked": 1},
        {"type": "pause_job", "job_id": "J-v"},
        {"type": "resume_job", "job_id": "J-v"},
        {"type": "cancel_job", "job_id": "J-v"},
    ):
        refused = await viewer.request(message)
        assert refused["code"] == "FORBIDDEN", message
    accepted = await operator.request({"type": "submit_job", **a_job("J-v")})
    assert accepted["job"]["submitted_by"] == "wms"
    # The viewer sees the operator's job: its events and in get_jobs.
    event = await viewer.wait_for("job_event")
    assert event["job"]["job_id"] == "J-v"
    listed = await viewer.request({"type": "get_jobs", "workstation_id": "station_1"})
    assert [job["job_id"] for job in listed["jobs"]] == ["J-v"]
    await operator.request({"type": "cancel_job", "job_id": "J-v"})
    await viewer.close()
    await operator.close()


async def test_without_workstations_job_messages_answer_a_clear_error(gateway):
    client = await TestClient.open(ws_url(gateway))
    welcome = await client.next()
    assert "pick_jobs" not in welcome["server_info"]["capabilities"]
    for message in (
        {"type": "submit_job", **a_job()},
        {"type": "get_jobs"},
        {"type": "subscribe", "subscription_type": "job_events"},
    ):
        refused = await client.request(message)
        assert refused["code"] == "WORKSTATION_NOT_FOUND"
        assert "no [[workstations]]" in refused["error"]
    # The spec's messages are unchanged.
    status = await client.request({"type": "subscribe", "subscription_type": "status_updates"})
    assert "workstation_ids" not in status
    await client.close()
    async with httpx.AsyncClient(base_url=base_url(gateway), timeout=10) as http:
        reply = await http.get("/v1/jobs")
    assert reply.status_code == 404
    assert reply.json()["code"] == "WORKSTATION_NOT_FOUND"


# -- REST ---------------------------------------------------------------------------------


async def test_rest_submit_is_201_then_200_conflict_409_invalid_422(picking, http):
    created = await http.post("/v1/jobs", json=a_job("R-1"))
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["success"] is True and body["data"]["job_id"] == "R-1"
    repeat = await http.post("/v1/jobs", json=a_job("R-1"))
    assert repeat.status_code == 200
    assert repeat.json()["data"]["created_at"] == body["data"]["created_at"]
    conflict = await http.post("/v1/jobs", json=a_job("R-1", [("machine_1", 2)]))
    assert conflict.status_code == 409 and conflict.json()["code"] == "JOB_CONFLICT"
    invalid = await http.post("/v1/jobs", json=a_job("R-2", [("machine_1", 0)]))
    assert invalid.status_code == 422 and invalid.json()["code"] == "INVALID_JOB"
    malformed = await http.post("/v1/jobs", json={**a_job("R-3"), "colour": "red"})
    assert malformed.status_code == 400
    assert "colour: unknown key" in malformed.json()["error"]
    cancelled = await http.post("/v1/jobs/R-1/cancel", json={"reason": "test over"})
    assert cancelled.status_code == 200
    assert cancelled.json()["data"]["state"] == "cancelled"


async def test_rest_a_job_is_picked_to_completion_and_read_back(picking, http):
    assert (await http.post("/v1/jobs", json=a_job("R-9"))).status_code == 201
    confirmed = 0
    while True:
        await wait_jobs(
            picking,
            lambda: (
                bool(presented_lines(picking))
                or picking.jobs.job("R-9").state is JobState.COMPLETED
            ),
        )
        if picking.jobs.job("R-9").state is JobState.COMPLETED:
            break
        station = (await http.get("/v1/workstations/station_1")).json()["data"]
        assert station["active_jobs"] == ["R-9"]
        for line in station["current"]["lines"]:
            if line["state"] != "presented":
                continue
            short = line["line_id"] == "2"
            body = {"quantity_picked": 1, "reason": "only one"} if short else {"quantity_picked": 2}
            reply = await http.post(f"/v1/jobs/R-9/lines/{line['line_id']}/confirm", json=body)
            assert reply.status_code == 200, reply.text
            confirmed += 1
    assert confirmed == 4
    job = (await http.get("/v1/jobs/R-9")).json()["data"]
    assert job["state"] == "completed"
    states = {line["line_id"]: line["state"] for line in job["lines"]}
    assert states == {"1": "picked", "2": "short", "3": "picked", "4": "picked"}
    assert next(line for line in job["lines"] if line["line_id"] == "2")["reason"] == "only one"
    listed = (await http.get("/v1/jobs", params={"workstation_id": "station_1"})).json()
    assert [j["job_id"] for j in listed["data"]] == ["R-9"]
    none = (await http.get("/v1/jobs", params={"state": "active"})).json()
    assert none["data"] == []
    over = await http.get("/v1/jobs", params={"limit": 1001})
    assert over.status_code == 400
    missing = await http.get("/v1/jobs/none")
    assert missing.status_code == 404 and missing.json()["code"] == "JOB_NOT_FOUND"
    stations = (await http.get("/v1/workstations")).json()["data"]
    assert [s["id"] for s in stations] == ["station_1"]
    unknown = await http.get("/v1/workstations/nowhere")
    assert unknown.status_code == 404 and unknown.json()["code"] == "WORKSTATION_NOT_FOUND"
    for path in ("/v1/jobs", "/v1/jobs/R-9", "/v1/workstations", "/station/station_1"):
        head = await http.head(path)
        assert head.status_code == 200 and head.content == b"", path


async def test_rest_pause_and_resume_and_a_confirmation_the_state_refuses(picking, http):
    await http.post("/v1/jobs", json=a_job("R-p"))
    paused = await http.post("/v1/jobs/R-p/pause", json={"reason": "tote missing"})
    assert paused.status_code == 200
    assert paused.json()["data"]["paused_reason"] == "tote missing"
    # A machine of the workstation takes a manual move while the job is paused (once the
    # move the job had already handed to it has ended: one command at a time).
    machine = picking.fleet.get("machine_2")
    await wait_until(picking.fleet.bus, lambda: not machine.busy)
    move = await http.post("/v1/machines/machine_2/move", json={"position": 9})
    assert move.status_code == 200, move.text
    refused = await http.post("/v1/jobs/R-p/lines/3/confirm", json={"quantity_picked": 2})
    assert refused.status_code == 400 and refused.json()["code"] == "INVALID_COMMAND"
    resumed = await http.post("/v1/jobs/R-p/resume")
    assert resumed.status_code == 200
    assert resumed.json()["data"]["state"] in ("active", "queued")
    await http.post("/v1/jobs/R-p/cancel")


async def test_rest_job_writes_need_the_operator_role(gateway_factory):
    tokens = [{"name": "screen", "role": "viewer", "sha256": digest(VIEWER_TOKEN)}]
    gateway = await gateway_factory(picking_config(auth={"tokens": tokens}))
    headers = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    async with httpx.AsyncClient(base_url=base_url(gateway), headers=headers) as http:
        refused = await http.post("/v1/jobs", json=a_job())
        assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"
        assert (await http.get("/v1/jobs")).status_code == 200
        assert (await http.get("/v1/workstations/station_1")).status_code == 200


async def test_a_large_job_fits_the_rest_body_limit(picking, http):
    lines = [("machine_1" if n % 2 else "machine_2", 1 + n % 30) for n in range(500)]
    job = a_job("R-big", lines)
    for line in job["lines"]:
        line["description"] = "x" * 300
    assert len(json.dumps(job)) > 64 * 1024
    created = await http.post("/v1/jobs", json=job)
    assert created.status_code == 201, created.text[:300]
    assert len(created.json()["data"]["lines"]) == 500
    await http.post("/v1/jobs/R-big/cancel")


# -- the Python client and the CLI --------------------------------------------------------


async def test_python_client_submits_follows_and_confirms(picking):
    async with CarouselClient(ws_url(picking), reconnect=False) as client:
        events = client.job_events(["station_1"])
        accepted = await client.submit_job(a_job("C-1", [("machine_2", 4), ("machine_1", 9)]))
        assert accepted.created
        async for event in events:
            if event.event is JobEventKind.JOB_COMPLETED:
                break
            if event.event is JobEventKind.STOP_PRESENTED:
                assert event.stop is not None
                for line in event.stop.lines:
                    if line.state == "presented":
                        await client.confirm_pick(line.job_id, line.line_id, line.quantity)
        await events.aclose()
        job = await client.job("C-1")
        assert job.state is JobState.COMPLETED
        assert [j.job_id for j in await client.jobs("station_1", "completed")] == ["C-1"]
        with pytest.raises(ServerError) as caught:
            await client.resume_job("none")
        assert caught.value.code == "JOB_NOT_FOUND"


async def cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "carousel_gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "80", "NO_COLOR": "1"},
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_cli_job_demo_list_show_and_submit(picking, tmp_path):
    url = ws_url(picking)
    code, out = await cli("job", "demo", "--lines", "3", "--seed", "4", "--url", url)
    assert code == 0, out
    demo_id = next(job.job_id for job in picking.jobs.jobs())
    assert f"job {demo_id} queued at station_1" in out
    assert len(picking.jobs.job(demo_id).lines) == 3
    path = tmp_path / "job.json"
    path.write_text(json.dumps(a_job("CLI-1")), encoding="utf-8")
    code, out = await cli("job", "submit", str(path), "--url", url)
    assert code == 0, out
    assert "job CLI-1 queued" in out
    code, out = await cli("job", "list", "--url", url)
    assert code == 0, out
    assert "CLI-1" in out and demo_id in out
    assert all(len(line) <= 80 for line in out.splitlines())
    code, out = await cli("job", "show", "CLI-1", "--url", url)
    assert code == 0, out
    assert "SKU-1 / PED-1" in out
    code, out = await cli("job", "show", "nope", "--url", url)
    assert code == 1 and "JOB_NOT_FOUND" in out
    for job_id in (demo_id, "CLI-1"):
        await picking.jobs.cancel(job_id, "test")
