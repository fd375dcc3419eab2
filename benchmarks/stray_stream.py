"""A PLC peer that streams junk: what it costs the gateway's memory and its link.

A TCP peer on loopback answers the gateway's first STATUS, then writes ``--mib`` MiB of
bytes nobody asked for as fast as it can, on every connection. A ``Machine`` (the same
driver as for a real PLC) polls it. Printed: the process's RSS before and at its highest
while the peer streams, how many bytes the peer got out, and how often the link was
dropped as out of step. Before the link held only one reply's bytes, such a peer took the
gateway from 59 to 309 MiB.

    .venv/bin/python benchmarks/stray_stream.py --mib 256
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine_line
from carousel_gateway.config import MachineConfig
from carousel_gateway.fleet.events import EventBus
from carousel_gateway.fleet.machine import Machine


def rss_mib() -> float:
    """Resident set size now (Linux /proc), in MiB."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / (1 << 20)


class JunkPeer:
    """Answers one STATUS, then streams junk until ``limit`` bytes are out in all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent = 0
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        chunk = bytes(1 << 20)
        try:
            await reader.readexactly(1)
            writer.write(b"\x15\x00")  # ready, stopped, at bucket 1
            while self.sent < self.limit:
                writer.write(chunk)
                self.sent += len(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def main(args: argparse.Namespace) -> None:
    print(machine_line())
    peer = JunkPeer(args.mib << 20)
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = MachineConfig.model_validate(
        {
            "id": "junk",
            "name": "Junk peer",
            "port": port,
            "poll_idle_s": 0.05,
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.05,
            "breaker_threshold": 1000,
        }
    )
    machine = Machine(config, EventBus())
    before = rss_mib()
    peak = before
    machine.start()
    try:
        async with asyncio.timeout(args.timeout):
            while peer.sent < peer.limit:
                peak = max(peak, rss_mib())
                await asyncio.sleep(0.01)
    except TimeoutError:
        pass
    peak = max(peak, rss_mib())
    await machine.stop()
    server.close()
    print(f"peer streamed {peer.sent / (1 << 20):.0f} MiB over {peer.connections} connections")
    print(f"links dropped as out of step: {machine.connection.out_of_step_faults}")
    print(f"RSS before {before:.1f} MiB, highest while streaming {peak:.1f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB the peer tries to send")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after, s")
    asyncio.run(main(parser.parse_args()))
