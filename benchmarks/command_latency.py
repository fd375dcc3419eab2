"""Command round trip: ``send_command`` → ``command_result``, alone and under fan-out.

The command machine is a PLC stub answering at once (reply delay 0), so what is measured is
the gateway's own cost. For comparison, a process on the gateway's CPU times raw port-3200
STATUS exchanges on a connection of its own to the same stub, under the same load; the
part the gateway adds is the round trip minus the PLC exchanges it needs (one for a STATUS
command; two for a MOVE: the fresh reading for the interlocks, then the MOVE), and it
includes committing the command to the journal (SQLite, ``synchronous=FULL``: an fsync) as
the gateway does before any result goes out.

"Under fan-out" is the load of ``fanout.py``: ``--clients`` (1000) sessions subscribed to
``status_updates`` in another process, ``--machines`` (10) carousels changing bucket at
``--rate`` (10) changes/s in all. The gateway is pinned to CPU 0; this driver and the
clients share CPU 1.

    .venv/bin/python benchmarks/command_latency.py
    .venv/bin/python benchmarks/command_latency.py --journal memory   # without the fsync
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
    CpuMeter,
    GatewayProcess,
    OtherLoad,
    PlcStub,
    free_port,
    gateway_toml,
    machine_line,
    metric,
    percentile,
    pin,
    raw_exchange,
    summary_ms,
    wait_for_port,
)
from benchmarks.fanout import (
    BROADCASTS,
    ClientsProcess,
    keep_moving,
    moving_stubs,
    quiet_broadcast_count,
    settings_of,
    strict_losses,
    stub_machines_toml,
    wait_connected,
)
from carousel_gateway.sim.carousel import CarouselModel


async def round_trips(
    url: str, machine_id: str, stub: PlcStub, samples: int, rng: random.Random
) -> dict[str, list[float]]:
    """STATUS and MOVE command round trips and JSON pings, interleaved."""
    out: dict[str, list[float]] = {"status": [], "move": [], "ping": []}
    async with connect(url) as ws:
        await ws.recv()  # welcome

        seen: list[dict] = []

        async def request(message: dict) -> dict:
            request_id = f"r{rng.random()}"
            await ws.send(json.dumps({**message, "request_id": request_id}))
            while True:
                reply = json.loads(await ws.recv())
                seen.append(reply)
                if reply.get("request_id") == request_id and reply["type"] != "move_completed":
                    return reply

        async def wait_arrival() -> None:
            while True:
                reply = json.loads(await ws.recv())
                seen.append(reply)
                if reply["type"] in ("move_completed", "move_failed"):
                    return

        position = 1
        for i in range(samples):
            await asyncio.sleep(rng.uniform(0.005, 0.02))
            started = time.perf_counter()
            reply = await request(
                {"type": "send_command", "machine_id": machine_id, "command": {"command": 0}}
            )
            out["status"].append(time.perf_counter() - started)
            assert reply["type"] == "command_result", (reply, seen[-8:])

            await asyncio.sleep(rng.uniform(0.005, 0.02))
            position = (position - 1 + rng.randint(1, 29)) % 30 + 1  # never the current one
            started = time.perf_counter()
            reply = await request(
                {
                    "type": "send_command",
                    "machine_id": machine_id,
                    "command": {"command": 1, "argument": position},
                }
            )
            out["move"].append(time.perf_counter() - started)
            assert reply["type"] == "command_result" and not reply["data"]["skipped"], reply
            await wait_arrival()

            await asyncio.sleep(rng.uniform(0.005, 0.02))
            started = time.perf_counter()
            await request({"type": "ping"})
            out["ping"].append(time.perf_counter() - started)
            if i % 100 == 99:
                print(f"  ... {i + 1} samples", file=sys.stderr, flush=True)
    return out


async def raw_exchanges(port: int, samples: int) -> list[float]:
    """STATUS exchanges with the command stub from a process on the gateway's CPU, with the
    same pauses as the commands: the PLC exchange as the gateway sees it, cross-CPU wake-ups
    included (on this VM an idle wake-up costs 0.1-1 ms)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--raw-process",
        str(port),
        str(samples),
        stdout=asyncio.subprocess.PIPE,
    )
    pin(process.pid, {0})
    output, _ = await process.communicate()
    return json.loads(output)


async def raw_main(port: int, samples: int) -> None:
    rng = random.Random(2)
    times = await raw_exchange(port, samples, lambda: rng.uniform(0.005, 0.02))
    print(json.dumps(times))


async def run_case(args: argparse.Namespace, clients: int) -> tuple[dict, dict]:
    fleet = await moving_stubs(args.machines, args.rate, args.reply_delay)
    # The command machine: answers at once, moves fast (a MOVE round trip, not its travel,
    # is what is measured), idle between commands.
    command_stub = PlcStub(CarouselModel(30, 0.002), 0.0)
    await command_stub.start()
    command_id = f"machine_{args.machines + 1}"
    # The quiet time before a MOVE's interlock reading (default: the gateway's own).
    guard = {} if args.stray_guard is None else {"stray_guard_s": args.stray_guard}
    ids = [f"machine_{i}" for i in range(1, args.machines + 1)]
    ws_port, http_port = free_port(), free_port()
    url = f"ws://127.0.0.1:{ws_port}"
    tables = (
        stub_machines_toml(fleet)
        + "\n\n"
        + stub_machines_toml([command_stub], first=args.machines + 1, **guard)
    )
    config = gateway_toml(
        ws_port, tables, http_port=http_port, **dict(settings_of(args.ws_setting))
    )
    if args.journal == "memory":
        config += '\n[journal]\npath = ":memory:"\n'
    elif args.journal == "off":
        config += "\n[journal]\nenabled = false\n"
    extra: dict = {"clients": clients}
    try:
        async with GatewayProcess(config, cpu=0) as gateway:
            await wait_for_port(ws_port)
            await wait_connected(url, [*ids, command_id])
            stop = asyncio.Event()
            mover = None
            receivers = None
            try:
                before = 0.0
                if clients:
                    # Every client subscribes before anything moves (each is owed every
                    # broadcast); the moves then settle in before the round trips start.
                    settle = 2.0 + args.machines / args.rate
                    receivers = ClientsProcess(
                        ws_port, clients, 0, False, 1, args.machines, settle=settle
                    )
                    before = await metric(http_port, BROADCASTS) or 0.0
                    start, _ = await receivers.start()
                    mover = asyncio.create_task(keep_moving(url, ids, stop, 1 / args.rate))
                    await asyncio.sleep(max(0.0, start - time.time()))
                meter, others = CpuMeter(gateway), OtherLoad()
                meter.start()
                others.start()
                results = await round_trips(
                    url, command_id, command_stub, args.samples, random.Random(args.seed)
                )
                results["raw"] = await raw_exchanges(command_stub.port, args.samples)
                extra["cpu_pct"] = meter.stop() * 100
                extra["other"] = others.describe(others.stop())
                if receivers is not None:
                    stop.set()
                    if mover is not None:
                        mover.cancel()
                    # The command machine's own changes go to no subscriber, so the count
                    # is the fan-out machines' broadcasts.
                    broadcasts = await quiet_broadcast_count(fleet, http_port) - before
                    fanout = await receivers.result()
                    expected = max(fanout["received"], default=0)
                    _, lost = strict_losses(fanout, broadcasts, clients)
                    extra |= {
                        "per_client_per_s": expected / fanout["elapsed"],
                        "lost": lost,
                        "fanout_p99_ms": percentile(fanout["latencies"], 99) * 1000,
                    }
            finally:
                if receivers is not None:
                    receivers.kill()
                stop.set()
                if mover is not None:
                    mover.cancel()
    finally:
        for stub in [*fleet, command_stub]:
            await stub.stop()
    return results, extra


def report(results: dict, extra: dict) -> str:
    raw50 = percentile(results["raw"], 50)
    lines = []
    if extra["clients"]:
        lines.append(
            f"under fan-out: {extra['clients']} clients at {extra['per_client_per_s']:.1f} "
            f"broadcasts/s each, lost {extra['lost']}, change → client p99 "
            f"{extra['fanout_p99_ms']:.1f} ms; gateway CPU {extra['cpu_pct']:.1f} %"
        )
    else:
        lines.append(f"alone (no subscribers, machines idle); gateway CPU {extra['cpu_pct']:.1f} %")
    lines.append(f"  raw port-3200 exchange      {summary_ms(results['raw'])}")
    for key, label, exchanges in (("status", "STATUS command", 1), ("move", "MOVE command  ", 2)):
        values = results[key]
        lines.append(f"  {label} round trip   {summary_ms(values)}")
        share = (percentile(values, 50) - exchanges * raw50) * 1000
        lines.append(
            f"      gateway's part at p50: {share:.2f} ms "
            f"(round trip minus {exchanges} x raw exchange p50)"
        )
    lines.append(f"  JSON ping → pong            {summary_ms(results['ping'])}")
    lines.append(f"  ({extra['other']})")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--raw-process":
        asyncio.run(raw_main(int(sys.argv[2]), int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="0,1000", help="fan-out clients per case")
    parser.add_argument("--machines", type=int, default=10, help="machines of the fan-out")
    parser.add_argument("--rate", type=float, default=10.0, help="fan-out changes/s (fleet)")
    parser.add_argument("--reply-delay", type=float, default=0.0, help="fan-out PLC delay, s")
    parser.add_argument("--samples", type=int, default=300, help="round trips of each kind")
    parser.add_argument("--journal", choices=("disk", "memory", "off"), default="disk")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--stray-guard",
        type=float,
        default=None,
        help="stray_guard_s of the command machine (default: the gateway's, 0.05 s)",
    )
    parser.add_argument(
        "--ws-setting", action="append", metavar="KEY=VALUE", help="[websocket] setting"
    )
    args = parser.parse_args()
    pin(os.getpid(), {1})
    print(machine_line())
    print(
        f"# command machine: PLC stub, reply delay 0 | journal: {args.journal} | "
        f"{args.samples} samples of each kind"
    )
    for clients in (int(x) for x in args.clients.split(",")):
        results, extra = asyncio.run(run_case(args, clients))
        print(report(results, extra), flush=True)


if __name__ == "__main__":
    main()
