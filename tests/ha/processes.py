"""Small helpers for tests that drive other processes: free ports, polling with a deadline."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from carousel_gateway.sim.event_log import read_events

__all__ = ["free_port_run", "poll_until", "wait_for_events"]

T = TypeVar("T")

#: How often a test looks again at another process (its log, its /v1/health).
POLL_S = 0.05


def free_port_run(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free ports (``simulate`` listens on P, P+1...)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind((host, 0))
            first: int = probe.getsockname()[1]
        if first + count > 65535:
            continue
        sockets: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind((host, port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no run of {count} free ports")


async def poll_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = POLL_S
) -> T:
    """Call ``probe`` until it returns something other than None (another process is
    watched: there is no event to wait on); fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        await asyncio.sleep(interval)


async def wait_for_events(
    path: Path,
    predicate: Callable[[list[dict[str, object]]], bool],
    timeout: float = 10.0,
    what: str = "events in the simulators' log",
) -> list[dict[str, object]]:
    """The log's events once ``predicate`` holds for them."""

    def probe() -> list[dict[str, object]] | None:
        events = read_events(path)
        return events if predicate(events) else None

    return await poll_until(probe, timeout, what)
