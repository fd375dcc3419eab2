"""The anchor on ``picows`` (a Cython WebSocket library): one ``send`` per subscriber.
``python picows_server.py RATE MACHINES``"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

from benchmarks.anchors.common import (
    WELCOME,
    announce,
    broadcast_until_stdin_closes,
    status_broadcast,
)

subscribers: set[WSTransport] = set()


class Session(WSListener):
    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(WSMsgType.TEXT, WELCOME)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type == WSMsgType.TEXT and b'"subscribe"' in frame.get_payload_as_bytes():
            transport.send(WSMsgType.TEXT, status_broadcast(1, 1))
            subscribers.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        subscribers.discard(transport)


def send_to_all(data: bytes) -> None:
    for transport in subscribers:
        transport.send(WSMsgType.TEXT, data)


async def main(rate: float, machines: int) -> None:
    def listener(_request: WSUpgradeRequest) -> Session:
        return Session()

    server = await ws_create_server(listener, "127.0.0.1", 0)
    announce({"port": server.sockets[0].getsockname()[1]})
    count = await broadcast_until_stdin_closes(rate, machines, send_to_all)
    announce({"broadcasts": count})
    await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]), int(sys.argv[2])))
