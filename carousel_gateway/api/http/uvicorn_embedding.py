"""uvicorn inside the gateway's own event loop: the one place that overrides uvicorn's
``Server`` internals (``capture_signals``, ``startup``, ``main_loop``, ``on_tick``,
``should_exit``). ``tests/unit/test_uvicorn_embedding.py`` fails loudly when a uvicorn
release changes what these overrides rely on."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn

__all__ = [
    "EmbeddedServer",
]


class EmbeddedServer(uvicorn.Server):
    """uvicorn in a loop it does not own: no signal handlers, and it says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()
        self.exit_requested = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the gateway handles SIGINT and SIGTERM itself

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()

    async def main_loop(self) -> None:
        # uvicorn checks should_exit every 0.1 s; here stop() wakes it at once. on_tick(0)
        # still refreshes the Date header, now once a second.
        while not await self.on_tick(0):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.exit_requested.wait()

    def request_exit(self) -> None:
        self.should_exit = True
        self.exit_requested.set()
