"""How responsive the gateway stays: get_status, change → broadcast, JSON ping while moving.

The simulators run in this process (so the exact moment each bucket reaches the window is
known on this process's clock); the gateway runs in its own process, pinned to CPU 0 when
possible; the WebSocket clients run here.

    .venv/bin/python benchmarks/responsiveness.py --machines 2,10 --delays 0,0.2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from websockets.asyncio.client import connect

from benchmarks._common import (
    GatewayProcess,
    free_port,
    machine_line,
    machines_toml,
    summary_ms,
    wait_for_port,
)
from carousel_gateway.sim.carousel import CarouselModel
from carousel_gateway.sim.server import SimulatorServer, SimulatorSettings

SECONDS_PER_POSITION = 0.25


async def run_case(machines: int, delay: float, samples: int, cpu: int | None) -> dict:
    servers = []
    for _ in range(machines):
        model = CarouselModel(30, SECONDS_PER_POSITION, clock=time.monotonic)
        server = SimulatorServer(model, settings=SimulatorSettings(reply_delay_s=delay))
        await server.start()
        servers.append(server)
    ws_port = free_port()
    config = (
        f'[websocket]\nhost = "127.0.0.1"\nport = {ws_port}\n\n'
        f'[http]\nhost = "127.0.0.1"\nport = {free_port()}\n\n'
        + machines_toml([s.port for s in servers], request_timeout_s=max(1.5, delay * 5))
    )
    ids = [f"machine_{i}" for i in range(1, machines + 1)]
    results: dict[str, list[float]] = {"get_status": [], "change": [], "ping": []}
    async with GatewayProcess(config, cpu=cpu):
        await wait_for_port(ws_port)
        url = f"ws://127.0.0.1:{ws_port}"
        async with connect(url) as watcher, connect(url) as driver, connect(url) as prober:
            for ws in (watcher, driver, prober):
                await ws.recv()  # welcome
            await wait_connected(prober, ids)

            # 1. get_status round trip while idle.
            for i in range(samples):
                started = time.perf_counter()
                await prober.send(
                    json.dumps({"type": "get_status", "machine_id": ids[i % machines]})
                )
                await prober.recv()
                results["get_status"].append(time.perf_counter() - started)

            # 2 + 3. Keep every machine moving; measure bucket → broadcast and ping → pong.
            await watcher.send(
                json.dumps({"type": "subscribe", "subscription_type": "status_updates"})
            )
            await driver.send(
                json.dumps({"type": "subscribe", "subscription_type": "command_results"})
            )
            stop = asyncio.Event()
            enough = asyncio.Event()
            tasks = [
                asyncio.create_task(keep_moving(driver, ids, stop)),
                asyncio.create_task(
                    watch_changes(watcher, ids, servers, results["change"], samples, enough)
                ),
            ]
            for _ in range(samples):
                await asyncio.sleep(random.uniform(0.005, 0.02))  # spread the probes
                started = time.perf_counter()
                await prober.send(json.dumps({"type": "ping"}))
                while json.loads(await prober.recv())["type"] != "pong":
                    pass
                results["ping"].append(time.perf_counter() - started)
            async with asyncio.timeout(120):
                await enough.wait()
            stop.set()
            for task in tasks:
                task.cancel()
    for server in servers:
        await server.stop()
    return results


async def wait_connected(ws, ids: list[str]) -> None:
    async with asyncio.timeout(30):
        while True:
            await ws.send(json.dumps({"type": "get_status"}))
            reply = json.loads(await ws.recv())
            states = reply.get("machines", {})
            if all(states.get(i, {}).get("raw_status") is not None for i in ids):
                return
            await asyncio.sleep(0.1)


async def keep_moving(ws, ids: list[str], stop: asyncio.Event) -> None:
    """Send each machine to a random bucket; on arrival, send it on again."""
    for machine_id in ids:
        await ws.send(json.dumps(move(machine_id)))
    async for frame in ws:
        message = json.loads(frame)
        if stop.is_set():
            return
        if message["type"] in ("move_completed", "move_failed") or (
            message["type"] == "command_result" and message["data"].get("skipped")
        ):
            await ws.send(json.dumps(move(message["machine_id"])))
        elif message["type"] == "error" and message["code"] == "BUSY":
            pass  # the arrival will trigger the next move


def move(machine_id: str) -> dict:
    return {
        "type": "send_command",
        "machine_id": machine_id,
        "command": {"command": 1, "argument": random.randint(1, 30)},
    }


async def watch_changes(ws, ids, servers, out: list[float], wanted: int, enough) -> None:
    """For every broadcast position change, how long since the chain reached that bucket."""
    models = dict(zip(ids, (s.model for s in servers), strict=True))
    last: dict[str, int | None] = {}
    async for frame in ws:
        received = time.monotonic()
        message = json.loads(frame)
        if message["type"] != "status_broadcast":
            continue
        for machine_id, state in message["status"].items():
            position = state.get("position")
            previous = last.get(machine_id)
            last[machine_id] = position
            model = models[machine_id]
            if previous is None or position == previous or position != model.position_index + 1:
                continue  # first sight, no change, or already moved on
            out.append(received - model.position_since)
            if len(out) >= wanted:
                enough.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", default="2,10")
    parser.add_argument("--delays", default="0,0.2", help="simulator reply delays, seconds")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--cpu", type=int, default=0, help="pin the gateway to this CPU (-1: no)")
    args = parser.parse_args()
    print(machine_line())
    print(f"# simulators: 30 buckets, {SECONDS_PER_POSITION} s per bucket; polling defaults")
    for machines in (int(x) for x in args.machines.split(",")):
        for delay in (float(x) for x in args.delays.split(",")):
            results = asyncio.run(
                run_case(machines, delay, args.samples, None if args.cpu < 0 else args.cpu)
            )
            print(f"machines={machines:<3} reply_delay={delay * 1000:.0f} ms")
            print(f"  get_status round trip        {summary_ms(results['get_status'])}")
            print(f"  bucket reached → broadcast   {summary_ms(results['change'])}")
            print(f"  JSON ping → pong (moving)    {summary_ms(results['ping'])}")


if __name__ == "__main__":
    main()
