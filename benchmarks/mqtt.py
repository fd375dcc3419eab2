"""MQTT / Sparkplug B: a state change inside the gateway → decoded at an independent consumer.

As in ``fleet_scale.py``: one PLC stub per machine in this process (CPU 1), answering after
a delay drawn from ``--delay`` (default 0.2–0.8 s, the field's); the gateway in its own
process pinned to CPU 0, polling at ``poll_idle_s = --interval``, with ``[mqtt]`` on and a
mosquitto of our own on a free loopback port. A tenth of the machines (at least 3) keep
moving (half turns at ``--bucket-s`` per bucket, commanded over the WebSocket API).

Two observers at once, each timing the same thing: from the PLC stub writing the first
reply that shows a new state (``PlcStub.last_change``) to the observer holding that state:

- the WebSocket path: a client subscribed to ``status_updates`` (as in ``fleet_scale.py``);
- the MQTT path: ``tests/mqtt/consumer.js`` (Node: the ``mqtt`` client and Eclipse Tahu's
  ``sparkplug-payload`` decoder) subscribed to ``spBv1.0/#``; it stamps each message with
  CLOCK_MONOTONIC, the clock of ``time.monotonic`` here (Linux).

Prints p50/p99/max of both, the difference, and the gateway's CPU (% of one core) while it
serves both. ``--kills N`` also times ``kill -9`` of a gateway (``keepalive_s = 5``) to the
broker's NDEATH (its Will) reaching the consumer, N times. Needs ``make test``'s
prerequisites (mosquitto, tests/mqtt/node_modules).

    .venv/bin/python benchmarks/mqtt.py --machines 10,300 --kills 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
from benchmarks.fleet_scale import watch
from carousel_gateway.sim.carousel import CarouselModel

ROOT = Path(__file__).resolve().parents[1]
CONSUMER = ROOT / "tests" / "mqtt" / "consumer.js"


@contextlib.asynccontextmanager
async def mosquitto(port: int) -> Any:
    """Debian's mosquitto on ``port`` (loopback), with a config of our own."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory(prefix="carousel-mqtt-") as directory:
        config = Path(directory) / "mosquitto.conf"
        config.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n",
            encoding="utf-8",
        )
        process = await asyncio.create_subprocess_exec(
            binary, "-c", str(config), stdout=asyncio.subprocess.DEVNULL
        )
        try:
            await wait_for_port(port)
            yield process
        finally:
            process.terminate()
            await process.wait()


async def consume(
    broker_port: int,
    stubs: dict[str, PlcStub],
    out: list[float],
    problems: list[str],
    ready: asyncio.Event,
) -> None:
    """The Node consumer: per device, the state it holds after each message; a change is
    timed when the state it shows is the PLC stub's latest change (once per change)."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(CONSUMER),
        f"mqtt://127.0.0.1:{broker_port}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=CONSUMER.parent,
        limit=2**24,
    )
    assert process.stdout is not None
    state: dict[str, dict[str, Any]] = {}
    matched: dict[str, float] = {}
    try:
        while line := await process.stdout.readline():
            message = json.loads(line)
            if message.get("op") == "ready":
                ready.set()  # subscribed: the gateway may start (its births are seen)
            problems.extend(message.get("problems", []))
            device = message.get("device")
            if message.get("kind") not in ("DBIRTH", "DDATA") or device not in stubs:
                continue
            values = state.setdefault(device, {})
            for metric in message["payload"]["metrics"]:
                values[metric["name"]] = metric["value"]
            stub = stubs[device]
            change = stub.last_change
            if change is None or matched.get(device) == change[2]:
                continue
            index, raw, at = change
            if values.get("Position") == index + 1 and values.get("RawStatus") == raw:
                matched[device] = at
                if stub.record and message["kind"] == "DDATA":
                    out.append(message["received_at"] - at)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def run(args: argparse.Namespace, machines: int) -> dict[str, Any]:
    moving = max(3, round(machines * args.moving))
    stubs = []
    for i in range(machines):
        bucket_s = args.bucket_s if i < moving else 1.0
        stub = PlcStub(CarouselModel(30, bucket_s, start_index=i % 30), uniform(*args.delay, i))
        await stub.start()
        stubs.append(stub)
    ids = [f"machine_{i}" for i in range(1, machines + 1)]
    by_id = dict(zip(ids, stubs, strict=True))
    ws_port, broker_port = free_port(), free_port()
    url = f"ws://127.0.0.1:{ws_port}"
    tables = machines_toml(
        [s.port for s in stubs],
        poll_idle_s=args.interval,
        request_timeout_s=max(1.5, args.delay[1] * 2),
        move_timeout_s=600.0,
    )
    mqtt = (
        f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker_port}\n'
        'group_id = "bench"\nedge_node_id = "gw"\n\n'
    )
    ws_delays: list[float] = []
    mqtt_delays: list[float] = []
    problems: list[str] = []
    try:
        async with mosquitto(broker_port):
            ready = asyncio.Event()
            consumer = asyncio.create_task(
                consume(broker_port, by_id, mqtt_delays, problems, ready)
            )
            async with asyncio.timeout(20):
                await ready.wait()
            config = gateway_toml(ws_port, mqtt + tables)
            async with GatewayProcess(config, cpu=0) as gateway:
                await wait_for_port(ws_port)
                await wait_connected(url, ids, timeout=120)
                stop = asyncio.Event()
                tasks = [
                    asyncio.create_task(keep_moving(url, ids[:moving], stop)),
                    asyncio.create_task(watch(url, by_id, ws_delays)),
                    consumer,
                ]
                await asyncio.sleep(3.0)  # moves under way, births received, polling settled
                for stub in stubs:
                    stub.record = True
                meter, others = CpuMeter(gateway), OtherLoad()
                meter.start()
                others.start()
                await asyncio.sleep(args.seconds)
                cpu = meter.stop()
                other = others.stop()
                for stub in stubs:
                    stub.record = False
                stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for stub in stubs:
            await stub.stop()
    return {
        "machines": machines,
        "moving": moving,
        "cpu_pct": cpu * 100,
        "ws": ws_delays,
        "mqtt": mqtt_delays,
        "problems": problems,
        "other": others.describe(other),
    }


async def will_delays(kills: int, keepalive_s: int = 5) -> list[float]:
    """``kill -9`` of a gateway → its NDEATH (the broker's Will) at the consumer, seconds."""
    broker_port = free_port()
    delays: list[float] = []
    async with mosquitto(broker_port):
        process = await asyncio.create_subprocess_exec(
            "node",
            str(CONSUMER),
            f"mqtt://127.0.0.1:{broker_port}",
            "spBv1.0/#",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=CONSUMER.parent,
        )
        assert process.stdout is not None

        async def until(kind: str) -> dict[str, Any]:
            assert process.stdout is not None
            while line := await process.stdout.readline():
                message = json.loads(line)
                if message.get("kind") == kind or message.get("op") == kind:
                    return dict(message)
            raise RuntimeError("the consumer ended")

        try:
            await until("ready")
            mqtt = (
                f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker_port}\n'
                f'group_id = "bench"\nedge_node_id = "gw"\nkeepalive_s = {keepalive_s}\n\n'
            )
            machine = (
                '[[machines]]\nid = "machine_1"\nname = "M1"\nkind = "simulator"\n'
                "[machines.simulator]\nseconds_per_position = 0.1\n"
            )
            for _ in range(kills):
                gateway = GatewayProcess(gateway_toml(free_port(), mqtt + machine), cpu=0)
                async with gateway:
                    await until("DBIRTH")
                    assert gateway.process is not None
                    killed = time.monotonic()
                    gateway.process.kill()
                    death = await until("NDEATH")
                    delays.append(death["received_at"] - killed)
        finally:
            process.kill()
            await process.wait()
    return delays


def ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {percentile(values, 50) * 1000:6.1f} ms  p99 {percentile(values, 99) * 1000:6.1f} ms"
        f"  max {max(values) * 1000:6.1f} ms  (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--machines", default="10,300")
    parser.add_argument("--interval", type=float, default=0.2, help="poll_idle_s, seconds")
    parser.add_argument(
        "--delay", type=float, nargs=2, default=(0.2, 0.8), metavar="S", help="PLC reply delay"
    )
    parser.add_argument("--moving", type=float, default=0.1, help="share of machines moving")
    parser.add_argument("--bucket-s", type=float, default=0.5, help="seconds per bucket, moving")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring window")
    parser.add_argument("--kills", type=int, default=0, help="kill -9 → NDEATH, this often")
    args = parser.parse_args()
    pin(os.getpid(), {1})
    print(machine_line())
    print(
        f"# PLC stubs: reply delay {args.delay[0]:g}–{args.delay[1]:g} s | poll_idle_s "
        f"{args.interval:g} | moving machines: {args.bucket_s:g} s per bucket | "
        f"{args.seconds:g} s window | Debian's mosquitto | consumer: Node + Tahu"
    )
    if args.kills:
        delays = asyncio.run(will_delays(args.kills))
        print(
            f"kill -9 → NDEATH (the Will) at the consumer, keepalive_s = 5 (bound 1.5 × 5 s): "
            f"{ms(delays)}",
            flush=True,
        )
    for machines in (int(x) for x in args.machines.split(",") if x):
        r = asyncio.run(run(args, machines))
        ws, mq = r["ws"], r["mqtt"]
        gap = f"{(percentile(mq, 99) - percentile(ws, 99)) * 1000:+.1f} ms" if ws and mq else "n/a"
        print(
            f"machines={r['machines']:<4} ({r['moving']} moving)  gateway CPU "
            f"{r['cpu_pct']:5.1f} % of one core (WebSocket watcher and MQTT both served)\n"
            f"  change → WebSocket status_broadcast received   {ms(ws)}\n"
            f"  change → MQTT DDATA decoded by the consumer     {ms(mq)}\n"
            f"  MQTT p99 − WebSocket p99: {gap}   contract problems seen: {len(r['problems'])}\n"
            f"  ({r['other']})"
            + (f"\n  first problems: {r['problems'][:3]}" if r["problems"] else ""),
            flush=True,
        )


if __name__ == "__main__":
    main()
