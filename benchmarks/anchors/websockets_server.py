"""The anchor on plain ``websockets`` (the gateway's own WebSocket library): its
``broadcast()`` to every subscriber. ``python websockets_server.py RATE MACHINES``"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from benchmarks.anchors.common import (
    WELCOME,
    announce,
    broadcast_until_stdin_closes,
    status_broadcast,
)


async def main(rate: float, machines: int) -> None:
    subscribers: set[ServerConnection] = set()

    async def handler(connection: ServerConnection) -> None:
        await connection.send(WELCOME.decode())
        try:
            async for message in connection:
                if '"subscribe"' in str(message):
                    await connection.send(status_broadcast(1, 1).decode())
                    subscribers.add(connection)
        except ConnectionClosed:
            pass  # the harness ends its clients without a closing handshake
        finally:
            subscribers.discard(connection)

    async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        announce({"port": server.sockets[0].getsockname()[1]})
        count = await broadcast_until_stdin_closes(
            rate, machines, lambda data: broadcast(subscribers, data.decode())
        )
        announce({"broadcasts": count})
        await asyncio.Future()  # serve until terminated


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]), int(sys.argv[2])))
