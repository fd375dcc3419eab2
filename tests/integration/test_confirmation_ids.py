"""Confirmation ids over REST and the WebSocket API against a real gateway (the fixtures
of test_job_api.py): a retry with the same id is answered with the stored result, the same
id with other content is 409 ``JOB_CONFLICT``, a malformed id is a format error."""

from __future__ import annotations

from typing import Any

from tests.integration.wsclient import TestClient

from .test_job_api import a_job, http, picking, presented_lines, wait_jobs, ws_url

__all__ = ["http", "picking"]  # fixtures shared with test_job_api.py


async def test_rest_a_retried_confirmation_gets_the_stored_result(picking, http) -> None:
    submitted = await http.post("/v1/jobs", json=a_job("I-1", [("machine_1", 5)] * 2))
    assert submitted.status_code == 201, submitted.text
    await wait_jobs(picking, lambda: len(presented_lines(picking)) == 2)
    url = "/v1/jobs/I-1/lines/1/confirm"
    body = {"quantity_picked": 1, "reason": "only one", "confirmation_id": "id-1"}
    first = await http.post(url, json=body)
    assert first.status_code == 200, first.text
    line = first.json()["data"]["lines"][0]
    assert (line["state"], line["confirmation_id"]) == ("short", "id-1")
    again = await http.post(url, json=body)
    assert again.status_code == 200, again.text
    assert again.json()["data"]["lines"][0] == line
    for target, other in (
        (url, {"quantity_picked": 2, "confirmation_id": "id-1"}),  # another quantity
        (url.replace("/1/", "/2/"), body),  # another line
    ):
        conflict = await http.post(target, json=other)
        assert conflict.status_code == 409, conflict.text
        assert conflict.json()["code"] == "JOB_CONFLICT"
        assert "'1'" in conflict.json()["error"]
    # Another id for a line already confirmed: refused as before.
    refused = await http.post(url, json={**body, "confirmation_id": "id-9"})
    assert refused.status_code == 400 and refused.json()["code"] == "INVALID_COMMAND"
    malformed = await http.post(url, json={**body, "confirmation_id": ""})
    assert malformed.status_code == 400


async def test_websocket_a_retried_confirm_pick_gets_pick_confirmed_again(picking) -> None:
    client = await TestClient.open(ws_url(picking))
    try:
        await client.next()  # welcome
        await client.request({"type": "submit_job", **a_job("I-2", [("machine_2", 7)])})
        await wait_jobs(picking, lambda: bool(presented_lines(picking)))
        message: dict[str, Any] = {
            "type": "confirm_pick",
            "job_id": "I-2",
            "line_id": "1",
            "quantity_picked": 2,
            "confirmation_id": "ws-1",
        }
        replies = [await client.request(message) for _ in range(2)]
        assert [r["type"] for r in replies] == ["pick_confirmed", "pick_confirmed"]
        assert replies[0]["job"]["lines"] == replies[1]["job"]["lines"]
        assert replies[1]["job"]["lines"][0]["confirmation_id"] == "ws-1"
        assert replies[1]["job"]["state"] == "completed"
        conflict = await client.request({**message, "quantity_picked": 1, "reason": "x"})
        assert (conflict["type"], conflict["code"]) == ("error", "JOB_CONFLICT")
    finally:
        await client.close()
