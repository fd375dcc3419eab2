"""Fleet size: many machines polled at 0.2 s on one core, against PLCs with field delays.

One PLC stub per machine in this process (CPU 1), answering each request after a delay
drawn from ``--delay`` (default 0.2–0.8 s, as measured in the field); the gateway in its own
process pinned to CPU 0 polls them with ``poll_idle_s = --interval``. A tenth of the
machines (at least 3) keep moving, commanded by a client (half turns at ``--bucket-s`` per
bucket); a watcher client is subscribed to ``status_updates`` of every machine. Prints:

- gateway CPU (% of one core) and STATUS polls per second;
- poll jitter of idle machines: the time from a reply leaving the PLC to the next request
  reaching it, minus the interval (how late the gateway asks again: loop delay, not the PLC's
  own delay); p50/p99/max;
- while a machine moves (back-to-back polling): the same gap, reply → next request;
- change → broadcast: from the PLC writing the first reply that shows a new state to the
  watcher reading the ``status_broadcast`` with it (the gateway's own delay; the PLC's reply
  delay comes before and is not in it).

    .venv/bin/python benchmarks/fleet_scale.py --machines 10,100,300
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

from websockets.asyncio.client import connect

from benchmarks._common import (
    CpuMeter,
    GatewayProcess,
    OtherLoad,
    PlcStub,
    free_port,
    gateway_toml,
    machine_line,
    machines_toml,
    percentile,
    pin,
    uniform,
    wait_for_port,
)
from benchmarks.fanout import keep_moving, wait_connected
from carousel_gateway.sim.carousel import CarouselModel


async def watch(url: str, stubs: dict[str, PlcStub], out: list[float]) -> None:
    """For each broadcast state that is a PLC's latest change: seconds since that reply."""
    matched: dict[str, float] = {}
    async with connect(url, max_queue=None) as ws:
        await ws.recv()
        await ws.send('{"type": "subscribe", "subscription_type": "status_updates"}')
        async for frame in ws:
            received = time.monotonic()
            message = json.loads(frame)
            if message["type"] != "status_broadcast":
                continue
            for machine_id, state in message["status"].items():
                stub = stubs.get(machine_id)
                change = stub.last_change if stub is not None else None
                if change is None or matched.get(machine_id) == change[2]:
                    continue
                index, raw, at = change
                if state.get("position") == index + 1 and state.get("raw_status") == raw:
                    matched[machine_id] = at
                    if stub is not None and stub.record:
                        out.append(received - at)


async def run(args: argparse.Namespace, machines: int) -> dict:
    moving = max(3, round(machines * args.moving))
    stubs = []
    for i in range(machines):
        bucket_s = args.bucket_s if i < moving else 1.0
        stub = PlcStub(CarouselModel(30, bucket_s, start_index=i % 30), uniform(*args.delay, i))
        await stub.start()
        stubs.append(stub)
    ids = [f"machine_{i}" for i in range(1, machines + 1)]
    ws_port = free_port()
    url = f"ws://127.0.0.1:{ws_port}"
    tables = machines_toml(
        [s.port for s in stubs],
        poll_idle_s=args.interval,
        request_timeout_s=max(1.5, args.delay[1] * 2),
        move_timeout_s=600.0,
    )
    delays: list[float] = []
    try:
        async with GatewayProcess(gateway_toml(ws_port, tables), cpu=0) as gateway:
            await wait_for_port(ws_port)
            await wait_connected(url, ids, timeout=120)
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(keep_moving(url, ids[:moving], stop)),
                asyncio.create_task(watch(url, dict(zip(ids, stubs, strict=True)), delays)),
            ]
            await asyncio.sleep(3.0)  # moves under way, polling settled
            requests = sum(s.requests for s in stubs)
            for stub in stubs:
                stub.record = True
            meter, others = CpuMeter(gateway), OtherLoad()
            meter.start()
            others.start()
            await asyncio.sleep(args.seconds)
            cpu = meter.stop()
            other = others.stop()
            polls = (sum(s.requests for s in stubs) - requests) / args.seconds
            for stub in stubs:
                stub.record = False
            stop.set()
            for task in tasks:
                task.cancel()
    finally:
        for stub in stubs:
            await stub.stop()
    idle = [gap - args.interval for s in stubs[moving:] for gap, _ in s.gaps]
    busy = [gap for s in stubs[:moving] for gap, was_moving in s.gaps if was_moving]
    return {
        "machines": machines,
        "moving": moving,
        "cpu_pct": cpu * 100,
        "polls_per_s": polls,
        "jitter": idle,
        "back_to_back": busy,
        "change": delays,
        "other": others.describe(other),
    }


def ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {percentile(values, 50) * 1000:6.1f} ms  p99 {percentile(values, 99) * 1000:6.1f} ms"
        f"  max {max(values) * 1000:6.1f} ms  (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", default="10,100,300")
    parser.add_argument("--interval", type=float, default=0.2, help="poll_idle_s, seconds")
    parser.add_argument(
        "--delay", type=float, nargs=2, default=(0.2, 0.8), metavar="S", help="PLC reply delay"
    )
    parser.add_argument("--moving", type=float, default=0.1, help="share of machines moving")
    parser.add_argument("--bucket-s", type=float, default=0.5, help="seconds per bucket, moving")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring window")
    args = parser.parse_args()
    pin(os.getpid(), {1})
    print(machine_line())
    print(
        f"# PLC stubs: reply delay {args.delay[0]:g}–{args.delay[1]:g} s | poll_idle_s "
        f"{args.interval:g} | moving machines: {args.bucket_s:g} s per bucket | "
        f"{args.seconds:g} s window"
    )
    for machines in (int(x) for x in args.machines.split(",")):
        r = asyncio.run(run(args, machines))
        print(
            f"machines={r['machines']:<4} ({r['moving']} moving)  gateway CPU "
            f"{r['cpu_pct']:5.1f} % of one core   {r['polls_per_s']:6.0f} polls/s\n"
            f"  idle poll jitter (late by)     {ms(r['jitter'])}\n"
            f"  moving: reply → next request   {ms(r['back_to_back'])}\n"
            f"  change → broadcast received    {ms(r['change'])}\n"
            f"  ({r['other']})",
            flush=True,
        )


if __name__ == "__main__":
    main()
