"""Poll cost: the gateway's CPU per port-3200 STATUS poll, with one idle client.

The gateway's baseline with one client (``fanout.py --compare``'s ``gateway@1`` row) is
its polling: ten PLC stubs that answer at once, asked back to back while their carousels
run (every ``poll_min_gap_s``, 20 ms: ~500 polls/s). This script measures that path alone:
``--machines`` PLC stubs in this process (CPU 1), the gateway in its own process pinned to
CPU 0 with its default poll settings, one WebSocket client subscribed to ``status_updates``
of every machine and otherwise idle. No command is sent, so no MOVE, no journal write and
no interlock reading: the work measured is request, reply, decoding, the reading applied.

Three loads (``--modes``, default ``steady,moving``):

- ``idle``: every carousel at rest, polled every ``poll_idle_s`` only: the gateway's floor
  (everything it does besides polling, spread over ~10 polls/s);
- ``steady``: every stub answers with one fixed reading of a running carousel, so every
  machine stays active (polled back to back) and nothing ever changes: no event, no
  broadcast; the bare poll.
- ``moving``: the carousels are moved from their panels (the stub's model moves; the
  gateway sees them running), one bucket per second each, a new move as each arrives: a
  ``StatusChanged`` and a broadcast to the client per bucket, as in ``gateway@1``.

Per run: polls answered per second (counted by the stubs), the gateway's CPU (all its
threads, from ``/proc/<pid>/task/*/schedstat``, nanoseconds) over the window, and CPU µs per
poll; then the median of ``--runs`` runs with the spread. Runs with more than 5 % of a core
used elsewhere are marked DISTURBED (``OtherLoad``).

On a shared machine, compare against the code before a change in the same session:
``--baseline DIR`` runs the gateway from DIR too (``git archive main | tar -x -C DIR``),
each of its runs right before this checkout's, and prints the ratio pair by pair.
``--py-spy PREFIX`` and ``--strace PREFIX`` profile the window instead (their numbers are
not to be quoted: both slow the gateway down).

    .venv/bin/python benchmarks/poll_cost.py --machines 10 --runs 3
    .venv/bin/python benchmarks/poll_cost.py --runs 5 --baseline /tmp/main
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from websockets.asyncio.client import connect

from benchmarks._common import (
    GatewayProcess,
    OtherLoad,
    PlcStub,
    free_port,
    gateway_toml,
    machine_line,
    machines_toml,
    pin,
    wait_for_port,
)
from benchmarks.fanout import wait_connected
from carousel_gateway.sim.carousel import CarouselModel

POSITIONS = 30


def cpu_ns_of(pid: int) -> int:
    """CPU time of every thread of a process so far, in nanoseconds (``schedstat``)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/schedstat") as stat:
            total += int(stat.read().split()[0])
    return total


async def idle_client(url: str, ready: asyncio.Event) -> None:
    """One client subscribed to every machine's ``status_updates``, reading what comes."""
    async with connect(url, max_queue=None) as ws:
        await ws.recv()
        await ws.send('{"type": "subscribe", "subscription_type": "status_updates"}')
        ready.set()
        async for _ in ws:
            pass


async def panel_mover(models: list[CarouselModel]) -> None:
    """Keep every carousel running, as if moved from its panel: a half turn at a time."""
    while True:
        for model in models:
            if not model.moving:
                model.move((model.position_index + POSITIONS // 2) % POSITIONS)
        await asyncio.sleep(0.05)


async def one_run(args: argparse.Namespace, mode: str, source: str | None) -> dict:
    stubs = []
    for index in range(args.machines):
        model = CarouselModel(POSITIONS, 1.0, start_index=index % POSITIONS)
        stub = PlcStub(model, args.reply_delay)
        await stub.start()
        stubs.append(stub)
    if mode == "idle":
        for stub in stubs:
            stub.freeze()  # a carousel at rest: polled every poll_idle_s only
    if mode == "steady":
        for stub in stubs:
            stub.model.move((stub.model.position_index + POSITIONS // 2) % POSITIONS)
            stub.freeze()  # a running carousel's reading, answered forever
    ids = [f"machine_{i}" for i in range(1, args.machines + 1)]
    ws_port = free_port()
    url = f"ws://127.0.0.1:{ws_port}"
    tables = machines_toml([s.port for s in stubs], move_timeout_s=600.0)
    config = gateway_toml(ws_port, tables)
    tasks: list[asyncio.Task[None]] = []
    label = mode if source is None else f"{mode}@base"
    try:
        async with GatewayProcess(config, cpu=0, source=source) as gateway:
            await wait_for_port(ws_port)
            await wait_connected(url, ids)
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(idle_client(url, ready)))
            await asyncio.wait_for(ready.wait(), 10)
            if mode == "moving":
                tasks.append(asyncio.create_task(panel_mover([s.model for s in stubs])))
            await asyncio.sleep(args.settle)  # every machine seen running, polled back to back
            others = OtherLoad()
            requests = sum(s.requests for s in stubs)
            cpu = cpu_ns_of(gateway.pid)
            wall = time.perf_counter()
            others.start()
            if args.py_spy:
                await py_spy(gateway.pid, args.seconds, f"{args.py_spy}.{label}.txt")
            elif args.strace:
                await strace(gateway.pid, args.seconds, f"{args.strace}.{label}.txt")
            else:
                await asyncio.sleep(args.seconds)
            cpu = cpu_ns_of(gateway.pid) - cpu
            polls = sum(s.requests for s in stubs) - requests
            elapsed = time.perf_counter() - wall
            other = others.stop()
    finally:
        for task in tasks:
            task.cancel()
        for stub in stubs:
            await stub.stop()
    return {
        "mode": label,
        "polls_per_s": polls / elapsed,
        "cpu_pct": cpu / 1e9 / elapsed * 100,
        "us_per_poll": cpu / 1e3 / max(1, polls),
        "disturbed": others.disturbed,
        "other": others.describe(other),
    }


async def py_spy(pid: int, seconds: float, out: str) -> None:
    """Sample the gateway with py-spy over the window (collapsed stacks, native frames):
    its sampling costs the gateway CPU too, so a profiled run's numbers are not quoted."""
    process = await asyncio.create_subprocess_exec(
        "py-spy",
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(round(seconds)),
        "--native",
        "--rate",
        "250",
        "--format",
        "raw",
        "--output",
        out,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await process.wait()


async def strace(pid: int, seconds: float, out: str) -> None:
    """Count the gateway's system calls over the window (``strace -c``; slows it down)."""
    process = await asyncio.create_subprocess_exec(
        "strace",
        "-c",
        "-f",
        "-p",
        str(pid),
        "-o",
        out,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(seconds)
    process.send_signal(signal.SIGINT)
    await process.wait()


def line(r: dict) -> str:
    return (
        f"{r['mode']:<12} polls/s {r['polls_per_s']:6.0f}   gateway CPU {r['cpu_pct']:5.2f} %"
        f"   {r['us_per_poll']:6.1f} µs per poll   ({r['other']})"
    )


def median_line(mode: str, runs: list[dict]) -> str:
    parts = []
    for key, unit in (
        ("us_per_poll", "µs per poll"),
        ("cpu_pct", "% CPU"),
        ("polls_per_s", "polls/s"),
    ):
        values = sorted(r[key] for r in runs)
        parts.append(f"{statistics.median(values):.1f} {unit} ({values[0]:.1f}–{values[-1]:.1f})")
    disturbed = sum(1 for r in runs if r["disturbed"])
    return (
        f"{mode:<12} median of {len(runs)}: "
        + ", ".join(parts)
        + (f", {disturbed} DISTURBED" if disturbed else "")
    )


def ratio_line(mode: str, results: list[dict]) -> str:
    """This checkout against the baseline, run by run (each pair ran back to back)."""
    base = {r["run"]: r for r in results if r["mode"] == f"{mode}@base"}
    ratios = sorted(
        r["us_per_poll"] / base[r["run"]]["us_per_poll"]
        for r in results
        if r["mode"] == mode and r["run"] in base
    )
    return (
        f"{mode:<12} this checkout / baseline, CPU per poll, median of {len(ratios)} pairs: "
        f"x{statistics.median(ratios):.2f} ({ratios[0]:.2f}–{ratios[-1]:.2f})"
    )


async def main_async(args: argparse.Namespace) -> list[dict]:
    results = []
    sources = [None] if args.baseline is None else [args.baseline, None]
    for run in range(1, args.runs + 1):
        for mode in args.modes.split(","):  # interleaved: steady, moving, steady, ...
            for source in sources:  # the baseline's run right before this checkout's
                result = await one_run(args, mode, source) | {"run": run}
                print(f"run {run} {line(result)}", flush=True)
                results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring window")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds before the window")
    parser.add_argument("--modes", default="steady,moving", help="idle, steady and/or moving")
    parser.add_argument("--reply-delay", type=float, default=0.0, help="PLC reply delay, s")
    parser.add_argument(
        "--py-spy",
        metavar="PREFIX",
        help="profile each window with py-spy (in the bench extra) into PREFIX.MODE.txt",
    )
    parser.add_argument(
        "--strace", metavar="PREFIX", help="count system calls with strace into PREFIX.MODE.txt"
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run the gateway from DIR (another copy of the package, e.g. `git archive "
        "main | tar -x -C DIR`), each of its runs right before this checkout's (rows @base)",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    pin(os.getpid(), {1})  # the gateway gets CPU 0 to itself
    print(machine_line())
    results = asyncio.run(main_async(args))
    print(f"machines={args.machines} reply_delay={args.reply_delay * 1000:g} ms, one idle client")
    for mode in args.modes.split(","):
        for name in (f"{mode}@base", mode) if args.baseline else (mode,):
            print(median_line(name, [r for r in results if r["mode"] == name]))
        if args.baseline:
            print(ratio_line(mode, results))
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
