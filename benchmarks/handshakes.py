"""WebSocket handshakes per second, and server memory per idle connection.

The gateway (pinned to CPU 0, ``--machines`` idle PLC stubs in this process) is first
warmed up with a few hundred connections opened and closed; then a client process (CPU 1)
opens ``--connections`` sessions, ``--concurrency`` handshakes in flight at a time, each done
when the ``welcome`` message has arrived. Handshakes per second = sessions / the time from
the first connect to the last welcome. The sessions then stay open and idle (no
subscription, no traffic): the gateway's RSS growth over the warmed-up baseline divided by
the sessions is the memory per idle connection (kernel socket buffers are not in RSS).
``--compression`` runs the same with permessage-deflate offered by the clients (and enabled
in the gateway) for comparison.

    .venv/bin/python benchmarks/handshakes.py --connections 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    GatewayProcess,
    OtherLoad,
    PlcStub,
    RawWsClient,
    free_port,
    gateway_toml,
    machine_line,
    percentile,
    pin,
    wait_for_port,
)
from benchmarks.fanout import stub_machines_toml, wait_connected
from carousel_gateway.sim.carousel import CarouselModel

# -- the client process ------------------------------------------------------------------------


async def clients_main(port: int, count: int, concurrency: int, deflate: bool) -> None:
    """Open ``count`` sessions; print the timings; hold them until stdin closes."""
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(concurrency)
    clients: list[RawWsClient] = []
    durations: list[float] = []
    failures: list[str] = []

    async def one() -> None:
        async with slots:
            welcome = loop.create_future()

            def on_message(_client: RawWsClient, _payload: bytes) -> None:
                if not welcome.done():
                    welcome.set_result(time.perf_counter())

            try:
                client = await RawWsClient.connect(port, on_message, deflate=deflate)
                done = await asyncio.wait_for(welcome, 30)
            except Exception as exc:
                failures.append(str(exc))
                return
            durations.append(done - client.started)
            clients.append(client)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "elapsed": elapsed,
                "durations": durations,
                "failures": failures[:5],
                "open": len(clients),
            }
        ),
        flush=True,
    )
    await loop.run_in_executor(None, sys.stdin.buffer.read)
    for client in clients:
        client.close()


async def open_and_close(port: int, count: int, deflate: bool) -> None:
    """Warm-up: sessions opened and closed, so the measured run starts from steady pools."""
    for start in range(0, count, 50):
        clients = await asyncio.gather(
            *(RawWsClient.connect(port, deflate=deflate) for _ in range(min(50, count - start)))
        )
        for client in clients:
            client.close()
    await asyncio.sleep(0.5)


# -- the driver --------------------------------------------------------------------------------


async def run(args: argparse.Namespace, compression: bool) -> dict:
    stubs = []
    for i in range(args.machines):
        stub = PlcStub(CarouselModel(30, 1.0, start_index=i), 0.2)
        await stub.start()
        stubs.append(stub)
    ids = [f"machine_{i}" for i in range(1, args.machines + 1)]
    ws_port = free_port()
    config = gateway_toml(ws_port, stub_machines_toml(stubs), compression=compression)
    try:
        async with GatewayProcess(config, cpu=0) as gateway:
            await wait_for_port(ws_port)
            await wait_connected(f"ws://127.0.0.1:{ws_port}", ids)
            await open_and_close(ws_port, args.warmup, compression)
            rss_before = gateway.rss_bytes()
            cpu_before = gateway.cpu_seconds()
            others = OtherLoad()
            others.start()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--client-process",
                str(ws_port),
                str(args.connections),
                str(args.concurrency),
                "1" if compression else "0",
                stdout=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.PIPE,
            )
            pin(process.pid, {1})
            assert process.stdout is not None and process.stdin is not None
            line = await process.stdout.readline()
            cpu_seconds = gateway.cpu_seconds() - cpu_before
            result = json.loads(line)
            await asyncio.sleep(2.0)  # idle
            rss_open = gateway.rss_bytes()
            other = others.stop()
            process.stdin.close()
            await process.wait()
    finally:
        for stub in stubs:
            await stub.stop()
    opened = result["open"]
    return {
        "compression": compression,
        "connections": opened,
        "failures": result["failures"],
        "handshakes_per_s": opened / result["elapsed"],
        "handshake_p50_ms": percentile(result["durations"], 50) * 1000,
        "handshake_p99_ms": percentile(result["durations"], 99) * 1000,
        "cpu_ms_per_handshake": cpu_seconds / max(1, opened) * 1000,
        "rss_before_mib": rss_before / 2**20,
        "rss_open_mib": rss_open / 2**20,
        "kib_per_connection": (rss_open - rss_before) / max(1, opened) / 1024,
        "other": others.describe(other),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client-process":
        port, count, concurrency = (int(x) for x in sys.argv[2:5])
        asyncio.run(clients_main(port, count, concurrency, sys.argv[5] == "1"))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight")
    parser.add_argument("--machines", type=int, default=10, help="machines (in every welcome)")
    parser.add_argument("--warmup", type=int, default=300, help="sessions opened and closed first")
    parser.add_argument(
        "--compression", action="store_true", help="also run with permessage-deflate"
    )
    args = parser.parse_args()
    pin(os.getpid(), {1})
    print(machine_line())
    for compression in (False, True) if args.compression else (False,):
        r = asyncio.run(run(args, compression))
        print(
            f"connections={r['connections']} machines={args.machines} concurrency="
            f"{args.concurrency} compression={'on' if compression else 'off'}"
            + (f"  FAILURES: {r['failures']}" if r["failures"] else "")
            + f"\n  handshakes/s {r['handshakes_per_s']:7.0f}   handshake (connect → welcome) "
            f"p50 {r['handshake_p50_ms']:.1f} ms  p99 {r['handshake_p99_ms']:.1f} ms   "
            f"gateway CPU {r['cpu_ms_per_handshake']:.2f} ms per handshake\n"
            f"  idle memory: RSS {r['rss_before_mib']:.1f} → {r['rss_open_mib']:.1f} MiB = "
            f"{r['kib_per_connection']:.1f} KiB per connection\n"
            f"  ({r['other']})",
            flush=True,
        )


if __name__ == "__main__":
    main()
