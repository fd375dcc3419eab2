"""How responsive the gateway stays: get_status, change → broadcast, JSON ping while moving.

The simulators run in this process (so the exact moment each bucket reaches the window is
known on this process's clock); the gateway runs in its own process, pinned to CPU 0 when
possible; the WebSocket clients run here, pinned to CPU 1.

"bucket reached → broadcast" is from the moment the chain reaches a bucket (computed from the
model's travel, whatever happened since) to a subscribed client reading the
``status_broadcast`` that shows it. Its floor is the PLC's: the gateway cannot know before
the PLC's next reply. While a machine moves the gateway polls back to back (the next STATUS
as soon as the reply is in, at most one every ``poll_min_gap_s``), so the target is p99 ≤
one PLC round trip + 5 ms; ``--poll-min-gap`` overrides the gap (default 20 ms), which is the
floor when the PLC answers faster than that.

    .venv/bin/python benchmarks/responsiveness.py --machines 2,10 --delays 0,0.2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from websockets.asyncio.client import connect

from benchmarks._common import (
    GatewayProcess,
    OtherLoad,
    free_port,
    gateway_toml,
    machine_line,
    machines_toml,
    percentile,
    pin,
    summary_ms,
    wait_for_port,
)
from carousel_gateway.config import MachineConfig
from carousel_gateway.sim.carousel import CarouselModel, MoveResponse
from carousel_gateway.sim.server import SimulatorServer, SimulatorSettings

SECONDS_PER_POSITION = 0.25


class HistoryModel(CarouselModel):
    """A model that can tell when the chain last reached a bucket (its travels recorded)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.travels: list[tuple[float, int, int, int]] = []

    def move(self, index: int) -> MoveResponse:
        outcome = super().move(index)
        travel = self._travel
        if outcome is MoveResponse.STARTED and travel is not None:
            self.travels.append(
                (travel.started_at, travel.start_index, travel.direction, travel.distance)
            )
            del self.travels[:-3]
        return outcome

    def reached_at(self, index: int, now: float) -> float | None:
        """When the chain last reached bucket ``index`` during a travel, up to ``now``."""
        best = None
        for started_at, start, direction, distance in self.travels:
            for step in range(1, distance + 1):
                at = started_at + step * self.seconds_per_position
                if at > now:
                    break
                if (start + direction * step) % self.positions == index and (
                    best is None or at > best
                ):
                    best = at
        return best


async def run_case(
    machines: int, delay: float, samples: int, cpu: int | None, min_gap: float | None
) -> dict:
    servers = []
    for _ in range(machines):
        model = HistoryModel(30, SECONDS_PER_POSITION, clock=time.monotonic)
        server = SimulatorServer(model, settings=SimulatorSettings(reply_delay_s=delay))
        await server.start()
        servers.append(server)
    ws_port = free_port()
    settings: dict[str, object] = {"request_timeout_s": max(1.5, delay * 5)}
    if min_gap is not None and "poll_min_gap_s" in MachineConfig.model_fields:
        settings["poll_min_gap_s"] = min_gap
    config = gateway_toml(ws_port, machines_toml([s.port for s in servers], **settings))
    ids = [f"machine_{i}" for i in range(1, machines + 1)]
    results: dict[str, list[float]] = {"get_status": [], "change": [], "ping": []}
    others = OtherLoad()
    others.start()
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
        # While the gateway still runs: a process of ours that ended would count as other load.
        results["other"] = others.describe(others.stop())  # type: ignore[assignment]
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
            if previous is None or position is None or position == previous:
                continue  # first sight or no change of bucket
            reached = models[machine_id].reached_at(position - 1, received)
            if reached is None:
                continue  # not reached by a travel (never the case while moving)
            out.append(received - reached)
            if len(out) >= wanted:
                enough.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", default="2,10")
    parser.add_argument("--delays", default="0,0.2", help="simulator reply delays, seconds")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--cpu", type=int, default=0, help="pin the gateway to this CPU (-1: no)")
    parser.add_argument(
        "--poll-min-gap", type=float, default=None, help="poll_min_gap_s for every machine, s"
    )
    args = parser.parse_args()
    if args.cpu >= 0:
        pin(os.getpid(), {1 - args.cpu if args.cpu in (0, 1) else 0})
    print(machine_line())
    gap = "default" if args.poll_min_gap is None else f"{args.poll_min_gap * 1000:g} ms"
    print(
        f"# simulators: 30 buckets, {SECONDS_PER_POSITION} s per bucket; polling defaults "
        f"(poll_min_gap_s: {gap})"
    )
    for machines in (int(x) for x in args.machines.split(",")):
        for delay in (float(x) for x in args.delays.split(",")):
            results = asyncio.run(
                run_case(
                    machines,
                    delay,
                    args.samples,
                    None if args.cpu < 0 else args.cpu,
                    args.poll_min_gap,
                )
            )
            change = results["change"]
            print(f"machines={machines:<3} reply_delay={delay * 1000:.0f} ms")
            print(f"  get_status round trip        {summary_ms(results['get_status'])}")
            print(f"  bucket reached → broadcast   {summary_ms(change)}")
            print(
                f"      p99 - reply delay = {(percentile(change, 99) - delay) * 1000:.1f} ms "
                f"(target ≤ 5 ms)"
            )
            print(f"  JSON ping → pong (moving)    {summary_ms(results['ping'])}")
            print(f"  ({results['other']})", flush=True)


if __name__ == "__main__":
    main()
