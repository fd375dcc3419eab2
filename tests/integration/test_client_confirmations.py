"""``CarouselClient.confirm_pick`` sends a confirmation again, with the same id, across its
URLs until it is answered: against two scripted WebSocket servers on loopback, one that
never answers (a frozen gateway) and one that first answers ``NOT_ACTIVE`` (a standby)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from carousel_gateway.client import CarouselClient, RequestTimeout, ServerError
from carousel_gateway.errors import ErrorCode
from carousel_gateway.wire import (
    ErrorMessage,
    JobLineState,
    JobLineView,
    JobState,
    JobStats,
    JobView,
    PickConfirmed,
    ServerInfo,
    Welcome,
)

NOW = "2026-12-06T01:00:00.000Z"
#: What a scripted server answers to the n-th confirm_pick it reads (None: nothing).
Script = Callable[[int, dict[str, Any]], str | None]


def welcome() -> str:
    info = ServerInfo(version="test", capabilities=["pick_jobs"])
    return Welcome(timestamp=NOW, server_info=info, machines=[]).model_dump_json()


def confirmed(message: dict[str, Any]) -> str:
    line = JobLineView(
        line_id=message["line_id"],
        machine_id="m1",
        position=4,
        quantity=2,
        state=JobLineState.PICKED,
        quantity_picked=message["quantity_picked"],
        confirmation_id=message["confirmation_id"],
    )
    job = JobView(
        job_id=message["job_id"],
        workstation_id="s1",
        priority=0,
        state=JobState.ACTIVE,
        lines=[line],
        route=[],
        stats=JobStats(),
        created_at=NOW,
    )
    return PickConfirmed(
        job=job, line_id=line.line_id, request_id=message["request_id"], timestamp=NOW
    ).model_dump_json()


def not_active(message: dict[str, Any], code: ErrorCode = ErrorCode.NOT_ACTIVE) -> str:
    return ErrorMessage(
        error="gateway gw-b is the standby of cell_t",
        code=code,
        request_id=message["request_id"],
        timestamp=NOW,
    ).model_dump_json()


class Scripted:
    """A WebSocket server that greets, records every confirm_pick, and answers by script."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.received: list[dict[str, Any]] = []
        self.server: Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = next(iter(self.server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def handle(self, connection: ServerConnection) -> None:
        await connection.send(welcome())
        async for frame in connection:
            message = json.loads(frame)
            if message.get("type") != "confirm_pick":
                continue
            self.received.append(message)
            answer = self.script(len(self.received), message)
            if answer is not None:
                await connection.send(answer)


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Script], Any]]:
    servers: list[Server] = []

    async def start(script: Script) -> Scripted:
        scripted = Scripted(script)
        scripted.server = await serve(scripted.handle, "127.0.0.1", 0)
        servers.append(scripted.server)
        return scripted

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_confirmation_goes_on_from_a_silent_gateway_and_a_standby_with_its_id(
    scripted,
) -> None:
    frozen = await scripted(lambda _n, _m: None)
    standby = await scripted(lambda n, m: not_active(m) if n == 1 else confirmed(m))
    async with CarouselClient(
        [frozen.url, standby.url], request_timeout=0.3, backoff_initial=0.01, backoff_max=0.05
    ) as client:
        reply = await client.confirm_pick("J", "L1", 2, confirmation_id="c-7", deadline_s=30)
        assert client.url == standby.url
    assert reply.job.lines[0].confirmation_id == "c-7"
    sent = frozen.received + standby.received
    assert len(frozen.received) >= 1 and len(standby.received) == 2
    # Every send is the same confirmation (only the request_id differs).
    assert {json.dumps({k: v for k, v in m.items() if k != "request_id"}) for m in sent} == {
        json.dumps(
            {
                "type": "confirm_pick",
                "job_id": "J",
                "line_id": "L1",
                "quantity_picked": 2,
                "confirmation_id": "c-7",
            }
        )
    }


async def test_without_an_answer_the_deadline_ends_it_and_an_id_is_chosen(scripted) -> None:
    frozen = await scripted(lambda _n, _m: None)
    async with CarouselClient(frozen.url, request_timeout=0.1, backoff_initial=0.01) as client:
        with pytest.raises(RequestTimeout):
            await client.confirm_pick("J", "L1", 2, deadline_s=0.5)
    ids = {m["confirmation_id"] for m in frozen.received}
    assert len(ids) == 1 and len(next(iter(ids))) == 36  # one UUID for every send


async def test_an_answer_that_is_not_not_active_is_not_retried(scripted) -> None:
    def refuse(_n: int, m: dict[str, Any]) -> str:
        return ErrorMessage(
            error="no line",
            code=ErrorCode.INVALID_COMMAND,
            request_id=m["request_id"],
            timestamp=NOW,
        ).model_dump_json()

    gateway = await scripted(refuse)
    async with CarouselClient(gateway.url) as client:
        with pytest.raises(ServerError) as refused:
            await client.confirm_pick("J", "L9", 2, confirmation_id="c-1")
    assert refused.value.code == "INVALID_COMMAND" and len(gateway.received) == 1


async def test_a_confirmation_the_gateway_could_not_commit_is_sent_again(scripted) -> None:
    gateway = await scripted(
        lambda n, m: not_active(m, ErrorCode.INTERNAL_ERROR) if n < 3 else confirmed(m)
    )
    async with CarouselClient(gateway.url, backoff_initial=0.01, backoff_max=0.05) as client:
        reply = await client.confirm_pick("J", "L1", 2, confirmation_id="c-2")
    assert reply.job.lines[0].confirmation_id == "c-2"
    assert [m["confirmation_id"] for m in gateway.received] == ["c-2"] * 3
