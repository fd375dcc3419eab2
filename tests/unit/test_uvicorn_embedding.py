"""Loud checks of the uvicorn internals api/http/uvicorn_embedding.py overrides: a uvicorn
release that renames or reshapes one of them fails here, by name, instead of leaving the
gateway's REST API silently unstoppable or never reported as listening."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket

import httpx
import uvicorn

from carousel_gateway.api.http.uvicorn_embedding import EmbeddedServer


def test_the_overridden_uvicorn_server_methods_still_exist_with_their_shapes():
    server = uvicorn.Server
    assert inspect.isfunction(server.capture_signals), "uvicorn.Server.capture_signals"
    assert list(inspect.signature(server.startup).parameters) == ["self", "sockets"]
    assert inspect.iscoroutinefunction(server.startup)
    assert inspect.iscoroutinefunction(server.main_loop)
    assert inspect.iscoroutinefunction(server.on_tick)
    assert list(inspect.signature(server.on_tick).parameters) == ["self", "counter"]
    assert inspect.iscoroutinefunction(server.serve)
    assert "sockets" in inspect.signature(server.serve).parameters
    instance = uvicorn.Server(uvicorn.Config(app=_hello))
    assert instance.should_exit is False and instance.started is False


async def _hello(scope, receive, send) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


async def test_embedded_server_says_when_it_listens_and_stops_when_asked():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    port = sock.getsockname()[1]
    config = uvicorn.Config(_hello, lifespan="off", log_config=None, ws="none")
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):  # a safety net only: both waits end on events
            await server.listening.wait()
            async with httpx.AsyncClient() as client:
                reply = await client.get(f"http://127.0.0.1:{port}/")
            assert reply.text == "hello"
            server.request_exit()
            await task  # main_loop wakes on exit_requested, not on uvicorn's 0.1 s tick
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sock.close()
