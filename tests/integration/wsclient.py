"""A small test client over the real ``websockets`` client: JSON in and out, waits by type."""

from __future__ import annotations

import itertools
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

_ids = itertools.count(1)


class TestClient:
    """Collects every frame; lets a test wait for the next one matching a predicate."""

    __test__ = False  # not a pytest test class

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.received: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> TestClient:
        client = cls(await connect(url, **kwargs))
        return client

    async def close(self) -> None:
        await self.connection.close()

    async def send(self, message: Any) -> None:
        await self.connection.send(
            message if isinstance(message, str | bytes) else json.dumps(message)
        )

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        import asyncio

        async with asyncio.timeout(timeout):
            frame = await self.connection.recv()
        data = json.loads(frame)
        self.received.append(data)
        return data

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
        """Read frames until one matches (``predicate`` may be a type name)."""
        import asyncio

        if isinstance(predicate, str):
            kind = predicate
            predicate = lambda m: m.get("type") == kind  # noqa: E731
        async with asyncio.timeout(timeout):
            while True:
                message = await self.next(timeout=timeout)
                if predicate(message):
                    return message

    async def request(self, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send with a fresh request_id and wait for the direct reply that echoes it."""
        request_id = f"r{next(_ids)}"
        await self.send({**message, "request_id": request_id})
        return await self.wait_for(lambda m: m.get("request_id") == request_id, timeout)
