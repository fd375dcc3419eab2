"""What both anchor servers share: the message they broadcast and how a driver runs them.

An anchor speaks just enough of the gateway's protocol for ``fanout.py``'s clients: a
``welcome`` on connect, a ``status_broadcast`` snapshot in answer to ``subscribe``, then a
``status_broadcast`` of one machine's state (the gateway's own shape and size, encoded per
broadcast as the gateway does) to every subscriber, ``rate`` times a second, stamped with
the time it was built. It prints ``{"port": N}`` once listening, starts broadcasting at the
first line on its stdin (once every client has subscribed), and when stdin closes stops
and prints ``{"broadcasts": N}`` (what each subscriber is owed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

WELCOME = json.dumps({"type": "welcome", "message": "anchor", "server_info": {}}).encode()


def status_broadcast(machine: int, position: int) -> bytes:
    """One machine's state as the gateway broadcasts it (~390 bytes), stamped now."""
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    state = {
        "status": {
            "READY": "OK",
            "RUN": "En movimiento",
            "MODO_OPERACION": "Remoto",
            "ALARMA": "Normal",
            "PARADA_EMERGENCIA": "Desactivada",
            "VFD": "OK",
            "ERROR_POSICIONAMIENTO": "Normal",
            "RESERVED": "-",
        },
        "position": position,
        "raw_status": 21,
        "connection_status": "connected",
        "last_update": stamp,
    }
    message = {
        "type": "status_broadcast",
        "timestamp": stamp,
        "status": {f"machine_{machine}": state},
    }
    return json.dumps(message, separators=(",", ":")).encode()


async def broadcast_until_stdin_closes(
    rate: float, machines: int, send_to_all: Callable[[bytes], None]
) -> int:
    """From the first line on stdin, broadcast ``rate`` times a second (machines in turn)
    until stdin closes; how many."""
    loop = asyncio.get_running_loop()
    closed = loop.create_future()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        await reader.read()
        closed.set_result(None)

    await reader.readline()  # "go"
    watcher = asyncio.create_task(watch_stdin())
    count = 0
    interval = 1.0 / rate
    next_at = time.monotonic()
    while not closed.done():
        machine = count % machines + 1
        send_to_all(status_broadcast(machine, count // machines % 30 + 1))
        count += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(closed), delay)
    watcher.cancel()
    return count


def announce(payload: dict[str, object]) -> None:
    print(json.dumps(payload), flush=True)
