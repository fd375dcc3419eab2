"""Fan-out: many subscribed clients, machines changing state at a steady rate.

The gateway runs in its own process (pinned to CPU 0) with embedded simulators that keep
moving, so each machine changes position ``--rate`` times per second; the clients run in
another process (pinned to CPU 1), all subscribed to ``status_updates`` for every machine.
Latency is from the gateway's detection of the change (the broadcast's timestamp) to the
client's receipt, on the same host clock.

    .venv/bin/python benchmarks/fanout.py --clients 100,500,1000 --machines 10 --rate 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from websockets.asyncio.client import connect

from benchmarks._common import (
    GatewayProcess,
    free_port,
    machine_line,
    percentile,
    wait_for_port,
)


def gateway_config(ws_port: int, machines: int, rate: float, compression: bool) -> str:
    tables = []
    for index in range(1, machines + 1):
        tables.append(
            f"""[[machines]]
id = "machine_{index}"
name = "Carrusel {index}"
kind = "simulator"
port = 0
poll_idle_s = 0.2
poll_active_s = {min(0.2, 0.25 / rate):g}
move_timeout_s = 600

[machines.simulator]
embedded = true
seconds_per_position = {1 / rate:g}
"""
        )
    return (
        f'[websocket]\nhost = "127.0.0.1"\nport = {ws_port}\n'
        f"compression = {'true' if compression else 'false'}\n"
        f"max_send_buffer_bytes = 16777216\n\n"
        f'[http]\nhost = "127.0.0.1"\nport = {free_port()}\n\n' + "\n".join(tables)
    )


# -- the client process ------------------------------------------------------------------------


def parse_timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def clients_main(url: str, count: int, seconds: float, compression: bool) -> None:
    """Open ``count`` sessions, subscribe, count and time every broadcast stamped inside a
    fixed window, and print one JSON line. Every session must get the same broadcasts."""
    latencies: list[float] = []
    received = [0] * count
    window = [float("inf"), float("inf")]
    done = asyncio.Event()

    async def one(index: int, ready: asyncio.Event) -> None:
        async with connect(
            url, max_queue=None, compression="deflate" if compression else None
        ) as ws:
            await ws.recv()
            await ws.send('{"type": "subscribe", "subscription_type": "status_updates"}')
            await ws.recv()  # confirmation
            await ws.recv()  # current state
            ready.set()
            sample = index % 10 == 0  # time a tenth of the sessions: client CPU is the limit
            while not done.is_set():
                try:
                    async with asyncio.timeout(0.5):
                        frame = await ws.recv()
                except TimeoutError:
                    continue
                now = time.time()
                start = frame.index('"timestamp":"') + 13
                stamp = parse_timestamp(frame[start : start + 24])
                if window[0] <= stamp < window[1]:
                    received[index] += 1
                    if sample:
                        latencies.append(now - stamp)

    readies = [asyncio.Event() for _ in range(count)]
    tasks = []
    for i in range(count):
        tasks.append(asyncio.create_task(one(i, readies[i])))
        if i % 50 == 49:
            await asyncio.gather(*(r.wait() for r in readies[i - 49 : i + 1]))
    await asyncio.gather(*(r.wait() for r in readies))
    window[0] = time.time() + 1.0  # settle first
    window[1] = window[0] + seconds
    await asyncio.sleep(seconds + 1.0 + 3.0)  # the window, then a grace for in-flight frames
    done.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"received": received, "latencies": latencies, "elapsed": seconds}))


# -- the driver (this process) -----------------------------------------------------------------


async def keep_moving(url: str, machines: int, stop: asyncio.Event) -> None:
    async with connect(url) as ws:
        await ws.recv()
        await ws.send('{"type": "subscribe", "subscription_type": "command_results"}')
        for index in range(1, machines + 1):
            await ws.send(json.dumps(half_turn(f"machine_{index}", 1)))
        async for frame in ws:
            if stop.is_set():
                return
            message = json.loads(frame)
            if message["type"] in ("move_completed", "move_failed"):
                position = message.get("position") or 1
                await ws.send(json.dumps(half_turn(message["machine_id"], position)))


def half_turn(machine_id: str, position: int) -> dict:
    """A move of 15 buckets: never to the current one (that would be skipped)."""
    return {
        "type": "send_command",
        "machine_id": machine_id,
        "command": {"command": 1, "argument": (position - 1 + 15) % 30 + 1},
    }


async def run(clients: int, machines: int, rate: float, seconds: float, compression: bool) -> None:
    ws_port = free_port()
    url = f"ws://127.0.0.1:{ws_port}"
    async with GatewayProcess(gateway_config(ws_port, machines, rate, compression), cpu=0) as gw:
        await wait_for_port(ws_port)
        stop = asyncio.Event()
        mover = asyncio.create_task(keep_moving(url, machines, stop))
        rss_before = gw.rss_bytes()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--client-process",
            url,
            str(clients),
            str(seconds),
            "1" if compression else "0",
            stdout=asyncio.subprocess.PIPE,
        )
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(process.pid, {1})
        # Measure the gateway's CPU over the client's measuring window (approximately).
        await asyncio.sleep(2.0 + clients / 400)
        cpu_start, wall_start = gw.cpu_seconds(), time.perf_counter()
        rss_loaded = gw.rss_bytes()
        output, _ = await process.communicate()
        cpu = (gw.cpu_seconds() - cpu_start) / (time.perf_counter() - wall_start)
        stop.set()
        mover.cancel()
    result = json.loads(output.decode().strip().splitlines()[-1])
    received = result["received"]
    expected = max(received)
    lost = sum(expected - r for r in received)
    latencies = result["latencies"]
    per_client_rate = expected / result["elapsed"]
    print(
        f"clients={clients:<5} machines={machines} rate={rate:g}/s/machine "
        f"compression={'on' if compression else 'off'}\n"
        f"  deliveries/s {sum(received) / result['elapsed']:10.0f}"
        f"   per client {per_client_rate:6.1f}/s"
        f"   lost {lost}\n"
        f"  latency p50 {percentile(latencies, 50) * 1000:6.1f} ms  p99 "
        f"{percentile(latencies, 99) * 1000:6.1f} ms"
        f"  max {max(latencies, default=0) * 1000:6.1f} ms"
        f"  (n={len(latencies)})\n"
        f"  gateway CPU {cpu * 100:5.1f} % of one core   RSS {rss_loaded / 2**20:6.1f} MiB"
        f"   ≈ {(rss_loaded - rss_before) / max(1, clients) / 1024:5.1f} KiB per connection"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client-process":
        url, count, seconds = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        asyncio.run(clients_main(url, count, seconds, sys.argv[5] == "1"))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="100,500,1000")
    parser.add_argument("--machines", type=int, default=10)
    parser.add_argument("--rate", type=float, default=10.0, help="position changes/s per machine")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring window")
    parser.add_argument("--compression", action="store_true", help="permessage-deflate on")
    args = parser.parse_args()
    print(machine_line())
    for clients in (int(x) for x in args.clients.split(",")):
        asyncio.run(run(clients, args.machines, args.rate, args.seconds, args.compression))


if __name__ == "__main__":
    main()
