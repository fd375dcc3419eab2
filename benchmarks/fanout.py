"""Fan-out: many subscribed clients, machines changing state at a steady rate.

``--rate`` is the number of state changes per second across the whole fleet, which is also
the number of ``status_broadcast`` messages (one machine's state, ~390 bytes) each client
receives per second: ``--machines 10 --rate 10`` moves each carousel one bucket per second
(the pace of a real carousel) and gives every client a 10 Hz stream. The gateway's
deliveries per second are ``clients x rate``. A stress row with ``--rate 100`` (ten buckets
per second per machine) shows the headroom.

Three processes: the gateway (pinned to CPU 0); this driver (CPU 1) with one PLC stub per
machine, answering after ``--reply-delay`` and kept moving by a commanding client; and the
receiving clients (CPU 1), all subscribed to ``status_updates`` for every machine. Latency is
from the gateway's detection of a change (the broadcast's ``timestamp``, taken when the
PLC's reply is applied; millisecond resolution, so up to 1 ms high) to receipt by a client,
on the host's clock; a fifth of the clients are timed. Messages lost are counted against
what the gateway sent: every client subscribes before the machines start, and at the end
the PLC stubs freeze until the gateway's own count of status broadcasts stops growing; each
client is owed every one of those broadcasts.

    .venv/bin/python benchmarks/fanout.py --clients 100,500,1000 --machines 10 --rate 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from websockets.asyncio.client import connect

from benchmarks._common import (
    CpuMeter,
    EpollReceivers,
    GatewayProcess,
    OtherLoad,
    PlcStub,
    cpu_seconds_of,
    free_port,
    gateway_toml,
    machine_line,
    machines_toml,
    metric,
    percentile,
    pin,
    stamp_of,
    wait_for_port,
)
from carousel_gateway.sim.carousel import CarouselModel

POSITIONS = 30
STATUS_BROADCAST = b'{"type":"status_broadcast"'


# -- the machines ------------------------------------------------------------------------------


async def moving_stubs(machines: int, rate: float, reply_delay: float) -> list[PlcStub]:
    """One PLC stub per machine; each changes bucket every ``machines / rate`` seconds."""
    stubs = []
    for index in range(machines):
        model = CarouselModel(POSITIONS, machines / rate, start_index=index % POSITIONS)
        stub = PlcStub(model, reply_delay)
        await stub.start()
        stubs.append(stub)
    return stubs


def stub_machines_toml(stubs: list[PlcStub], first: int = 1, **settings: object) -> str:
    tables = machines_toml([s.port for s in stubs], move_timeout_s=600.0, **settings)
    if first != 1:  # renumber: machine_{first}...
        for i in range(len(stubs), 0, -1):
            tables = tables.replace(f'"machine_{i}"', f'"machine_{i + first - 1}"')
            tables = tables.replace(f'"Carrusel {i}"', f'"Carrusel {i + first - 1}"')
    return tables


async def wait_connected(url: str, ids: list[str], timeout: float = 60.0) -> None:
    """Until the gateway has a reading from every machine."""
    async with connect(url) as ws, asyncio.timeout(timeout):
        await ws.recv()
        while True:
            await ws.send(json.dumps({"type": "get_status"}))
            while True:
                reply = json.loads(await ws.recv())
                if reply["type"] == "machine_status":
                    break
            states = reply.get("machines", {})
            if all(states.get(i, {}).get("raw_status") is not None for i in ids):
                return
            await asyncio.sleep(0.2)


async def keep_moving(url: str, ids: list[str], stop: asyncio.Event, spread: float = 0.0) -> None:
    """Half turns (15 buckets) on every machine, the next one as each arrives.

    The first moves start ``spread`` seconds apart, so that machines moving at the same
    pace change bucket one after the other rather than all at once (as a real fleet does);
    ``fanout.py`` spreads them over one bucket's time."""
    async with connect(url) as ws:
        await ws.recv()
        await ws.send(
            json.dumps(
                {"type": "subscribe", "subscription_type": "command_results", "machine_ids": ids}
            )
        )
        positions = {machine_id: 1 for machine_id in ids}
        for machine_id in ids:
            await ws.send(json.dumps(half_turn(machine_id, None)))
            await asyncio.sleep(spread)
        async for frame in ws:
            if stop.is_set():
                return
            message = json.loads(frame)
            kind = message["type"]
            if kind in ("move_completed", "move_failed"):
                machine_id = message["machine_id"]
                positions[machine_id] = message.get("position") or positions[machine_id]
                await ws.send(json.dumps(half_turn(machine_id, positions[machine_id])))
            elif kind == "command_result" and message["data"].get("skipped"):
                machine_id = message["machine_id"]
                positions[machine_id] = message["data"]["argument"]
                await ws.send(json.dumps(half_turn(machine_id, positions[machine_id])))
            elif kind == "error" and message.get("machine_id") in positions:
                await asyncio.sleep(0.5)  # e.g. not connected yet: try again
                await ws.send(json.dumps(half_turn(message["machine_id"], None)))


def half_turn(machine_id: str, position: int | None) -> dict:
    """A move of 15 buckets from ``position`` (or to bucket 16 when unknown)."""
    target = 16 if position is None else (position - 1 + 15) % POSITIONS + 1
    return {
        "type": "send_command",
        "machine_id": machine_id,
        "command": {"command": 1, "argument": target},
    }


# -- the receiving clients (their own process) -------------------------------------------------


def clients_main(
    port: int,
    count: int,
    seconds: float,
    compression: bool,
    machines: int = 0,
    settle: float = 1.0,
) -> None:
    """Open ``count`` sessions, subscribe each to ``status_updates`` (of ``machine_1`` to
    ``machine_{machines}``; 0: all machines); print one JSON line when
    all are ready (``window``: the measuring window, epoch seconds) and one with the results
    (per-client counts of broadcasts stamped inside the window, sampled latencies, and
    ``total``: every status_broadcast each client got, from its subscription until stdin
    closes, to be counted against what the gateway sent).

    The window opens ``settle`` seconds after every client is subscribed. ``seconds`` 0:
    it lasts until stdin closes (another benchmark drives it); otherwise the clients keep
    reading (and counting ``total``) after it until stdin closes."""
    received = [0] * count
    total = [0] * count
    latencies: list[float] = []
    receivers = EpollReceivers(port, deflate=compression)
    subscribe: dict[str, object] = {"type": "subscribe", "subscription_type": "status_updates"}
    if machines:
        subscribe["machine_ids"] = [f"machine_{i}" for i in range(1, machines + 1)]
    receivers.open(count, json.dumps(subscribe).encode())
    start = time.time() + settle
    end = start + seconds if seconds > 0 else float("inf")
    print(json.dumps({"window": [start, end]}), flush=True)

    def on_message(index: int, payload: bytes, now: float) -> None:
        if payload.startswith(STATUS_BROADCAST):
            total[index] += 1
            stamp = stamp_of(payload)
            if stamp is not None and start <= stamp < end:
                received[index] += 1
                if index % 5 == 0:
                    latencies.append(now - stamp)

    if seconds > 0:
        receivers.run(on_message, lambda: time.time() > end)
    receivers.run(on_message, lambda: False, stop_fd=sys.stdin.fileno())
    if seconds <= 0:
        end = time.time()
    grace = time.time() + 1.0  # frames still in flight
    receivers.run(on_message, lambda: time.time() > grace)
    print(
        json.dumps(
            {
                "received": received,
                "total": total,
                "latencies": latencies,
                "elapsed": end - start,
                "closed": receivers.closed,
            }
        ),
        flush=True,
    )
    receivers.close()


class ClientsProcess:
    """The receiving clients in their own process, pinned to ``cpu``."""

    def __init__(
        self,
        port: int,
        count: int,
        seconds: float,
        compression: bool,
        cpu: int,
        machines: int = 0,
        settle: float = 1.0,
    ) -> None:
        self.args = [str(port), str(count), str(seconds), "1" if compression else "0"]
        self.args += [str(machines), str(settle)]
        self.cpu = cpu
        self.process: asyncio.subprocess.Process | None = None
        self.window = (0.0, 0.0)

    async def start(self) -> tuple[float, float]:
        """Start them; returns once every client is subscribed, with the measuring window."""
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--client-process",
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.PIPE,
        )
        pin(self.process.pid, {self.cpu})
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError("the client process failed (see above)")
        start, end = json.loads(line)["window"]
        self.window = (start, end)
        return self.window

    async def result(self) -> dict:
        """End an open window (``seconds`` 0) and collect the results."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.close()
        output, _ = await self.process.communicate()
        return json.loads(output.decode().strip().splitlines()[-1])

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()


#: The gateway's count of status broadcasts written to all their subscribers.
BROADCASTS = "carousel_ws_broadcast_delay_seconds_count"


async def quiet_broadcast_count(stubs: list[PlcStub], http_port: int) -> float:
    """Freeze every PLC stub (nothing changes any more), wait until the gateway's count of
    status broadcasts stops growing, and return it."""
    for stub in stubs:
        stub.freeze()
    last = await metric(http_port, BROADCASTS)
    while True:
        await asyncio.sleep(0.5)  # many poll intervals: a change still in flight shows
        now = await metric(http_port, BROADCASTS)
        if now == last:
            return now or 0.0
        last = now


def strict_losses(result: dict, broadcasts: float, clients: int) -> tuple[int, int]:
    """(deliveries the gateway owed, deliveries lost): every client is owed every status
    broadcast the gateway sent after all had subscribed, by the gateway's own count (the
    snapshot each gets on subscribing is read while opening, not counted); a message that
    reached no client counts as lost for each."""
    owed = int(broadcasts) * clients
    return owed, owed - sum(result["total"])


# -- one run -----------------------------------------------------------------------------------


async def sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()))


async def run(args: argparse.Namespace, clients: int, source: str | None = None) -> dict:
    stubs = await moving_stubs(args.machines, args.rate, args.reply_delay)
    ids = [f"machine_{i}" for i in range(1, args.machines + 1)]
    ws_port, http_port = free_port(), free_port()
    url = f"ws://127.0.0.1:{ws_port}"
    websocket: dict[str, object] = {
        "compression": args.compression,
        "max_send_buffer_bytes": 16 * 2**20,
    }
    websocket |= dict(settings_of(args.ws_setting))
    tables = stub_machines_toml(stubs, **dict(settings_of(args.machine_setting)))
    config = gateway_toml(ws_port, tables, http_port=http_port, **websocket)
    try:
        async with GatewayProcess(config, cpu=0, source=source) as gateway:
            await wait_for_port(ws_port)
            await wait_connected(url, ids)
            stop = asyncio.Event()
            rss_before = gateway.rss_bytes()
            # Every client subscribes before anything moves, so each is owed every broadcast.
            settle = 2.0 + args.machines / args.rate
            receivers = ClientsProcess(
                ws_port, clients, args.seconds, args.compression, 1, settle=settle
            )
            mover = None
            try:
                before = await metric(http_port, BROADCASTS) or 0.0
                start, end = await receivers.start()
                rss_connected = gateway.rss_bytes()
                mover = asyncio.create_task(keep_moving(url, ids, stop, 1 / args.rate))
                meter, others = CpuMeter(gateway), OtherLoad()
                await sleep_until(start)
                meter.start()
                others.start()
                await sleep_until(end)
                cpu = meter.stop()
                other = others.stop()
                rss_loaded = gateway.rss_bytes()
                stop.set()
                mover.cancel()
                broadcasts = await quiet_broadcast_count(stubs, http_port) - before
                result = await receivers.result()
            finally:
                receivers.kill()
                stop.set()
                if mover is not None:
                    mover.cancel()
    finally:
        for stub in stubs:
            await stub.stop()
    owed, lost = strict_losses(result, broadcasts, clients)
    return _result(clients, result, owed, lost, cpu, others, other) | {
        "rss_mib": rss_loaded / 2**20,
        "kib_per_connection": (rss_connected - rss_before) / max(1, clients) / 1024,
    }


# -- the anchors: plain broadcast servers in the same harness ----------------------------------

ANCHORS = Path(__file__).resolve().parent / "anchors"
SERVERS = ("gateway", "websockets", "picows")


async def run_anchor(args: argparse.Namespace, clients: int, server: str) -> dict:
    """The same clients against ``benchmarks/anchors/<server>_server.py`` (pinned to the
    gateway's CPU), broadcasting the same message at the same rate."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ANCHORS / f"{server}_server.py"),
        str(args.rate),
        str(args.machines),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    receivers = ClientsProcess(0, clients, args.seconds, False, 1, settle=1.0)
    try:
        pin(process.pid, {0})
        line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {server} anchor did not start (is it installed? see --help)")
        receivers.args[0] = str(json.loads(line)["port"])
        start, end = await receivers.start()
        process.stdin.write(b"go\n")
        await process.stdin.drain()
        meter, others = ProcessCpu(process.pid), OtherLoad()
        await sleep_until(start)
        meter.start()
        others.start()
        await sleep_until(end)
        cpu = meter.stop()
        other = others.stop()
        process.stdin.close()
        broadcasts = json.loads(await process.stdout.readline())["broadcasts"]
        result = await receivers.result()
    finally:
        receivers.kill()
        if process.returncode is None:
            process.kill()
            await process.wait()
    owed, lost = strict_losses(result, broadcasts, clients)
    return _result(clients, result, owed, lost, cpu, others, other) | {"server": server}


class ProcessCpu:
    """CPU share of one core used by a process between :meth:`start` and :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu = self._wall = 0.0

    def start(self) -> None:
        self._cpu, self._wall = cpu_seconds_of(self.pid), time.perf_counter()

    def stop(self) -> float:
        return (cpu_seconds_of(self.pid) - self._cpu) / (time.perf_counter() - self._wall)


def _result(
    clients: int, result: dict, owed: int, lost: int, cpu: float, others: OtherLoad, other: float
) -> dict:
    latencies = result["latencies"]
    delivered = sum(result["received"])
    return {
        "clients": clients,
        "deliveries_per_s": delivered / result["elapsed"],
        "per_client_per_s": max(result["received"], default=0) / result["elapsed"],
        "lost": lost,
        "owed": owed,
        "disturbed": others.disturbed,
        "closed": result["closed"],
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies, default=0.0) * 1000,
        "samples": len(latencies),
        "cpu_pct": cpu * 100,
        "us_per_delivery": cpu * result["elapsed"] / max(1, delivered) * 1e6,
        "other": others.describe(other),
    }


async def compare(args: argparse.Namespace, clients: int) -> list[dict]:
    """``--cycles`` interleaved cycles of the gateway and the anchors; every run's result."""
    results = []
    servers = SERVERS if args.baseline is None else ("base", *SERVERS)
    for cycle in range(1, args.cycles + 1):
        for server in servers:
            if server in ("gateway", "base"):
                source = args.baseline if server == "base" else None
                result = await run(args, clients, source) | {"server": server}
                # The same gateway with one client: its polling, journal and moves, so that
                # the fan-out's own work can be told apart.
                name = f"{server}@1"
                alone = await run(args, 1, source) | {"server": name, "cycle": cycle}
                print(f"cycle {cycle} {name:<10} {one_line(alone)}", flush=True)
                results.append(alone)
            else:
                result = await run_anchor(args, clients, server)
            result["cycle"] = cycle
            print(f"cycle {cycle} {server:<10} {one_line(result)}", flush=True)
            results.append(result)
    return results


def one_line(r: dict) -> str:
    return (
        f"CPU {r['cpu_pct']:5.1f} %  {r['us_per_delivery']:5.1f} µs/delivery  "
        f"p50 {r['p50_ms']:5.1f}  p99 {r['p99_ms']:5.1f} ms  lost {r['lost']} of {r['owed']}"
        + ("  DISTURBED" if r["disturbed"] else "")
    )


def summary(results: list[dict]) -> str:
    """Medians (with the spread) per server over the cycles, and the gateway's ratios."""
    lines = []
    medians: dict[str, dict[str, float]] = {}
    for server in ("base", "base@1", "gateway", "gateway@1", *SERVERS[1:]):
        runs = [r for r in results if r["server"] == server]
        if not runs:
            continue
        row = {}
        parts = []
        for key, unit in (
            ("cpu_pct", "%"),
            ("us_per_delivery", "µs"),
            ("p50_ms", "ms"),
            ("p99_ms", "ms"),
        ):
            values = sorted(r[key] for r in runs)
            row[key] = statistics.median(values)
            parts.append(f"{key} {row[key]:.1f} {unit} ({values[0]:.1f}–{values[-1]:.1f})")
        medians[server] = row
        lost = sum(r["lost"] for r in runs)
        disturbed = sum(1 for r in runs if r["disturbed"])
        lines.append(
            f"{server:<10} median of {len(runs)}: "
            + ", ".join(parts)
            + f", lost {lost}"
            + (f", {disturbed} disturbed" if disturbed else "")
        )
    for name in ("base", "gateway"):
        gateway = medians.get(name)
        fanout_alone = _fanout_work(results, name)
        if fanout_alone is not None:
            lines.append(
                f"{name}'s fan-out work alone: {fanout_alone:.1f} µs per delivery (median over "
                "cycles of: CPU with N clients minus CPU with one, per extra delivery)"
            )
        if gateway:
            for anchor in SERVERS[1:]:
                if anchor in medians:
                    a = medians[anchor]
                    cpu = gateway["us_per_delivery"] / a["us_per_delivery"]
                    p50, p99 = gateway["p50_ms"] / a["p50_ms"], gateway["p99_ms"] / a["p99_ms"]
                    lines.append(
                        f"{name} / {anchor}: CPU per delivery x{cpu:.2f}, p50 x{p50:.2f}, "
                        f"p99 x{p99:.2f}"
                    )
                    paired = _paired_ratios(results, name, anchor)
                    if paired:
                        lines.append(
                            "  cycle by cycle (each pair ran in the same cycle): "
                            + ", ".join(f"x{x:.2f}" for x in paired)
                            + f"; median x{statistics.median(paired):.2f}"
                        )
    return "\n".join(lines)


def _paired_ratios(results: list[dict], name: str, anchor: str) -> list[float]:
    """CPU per delivery of ``name`` over ``anchor``'s, cycle by cycle (a slow drift of the
    machine between cycles cancels out in each pair, not in the ratio of the medians)."""
    ratios = []
    for cycle in sorted({r["cycle"] for r in results}):
        ours = [r for r in results if r["cycle"] == cycle and r["server"] == name]
        theirs = [r for r in results if r["cycle"] == cycle and r["server"] == anchor]
        if ours and theirs and theirs[0]["us_per_delivery"] > 0:
            ratios.append(ours[0]["us_per_delivery"] / theirs[0]["us_per_delivery"])
    return ratios


def _fanout_work(results: list[dict], name: str = "gateway") -> float | None:
    """A gateway's CPU per delivery for the fan-out alone, median over cycles."""
    values = []
    for cycle in {r["cycle"] for r in results}:
        full = [r for r in results if r["cycle"] == cycle and r["server"] == name]
        one = [r for r in results if r["cycle"] == cycle and r["server"] == f"{name}@1"]
        if full and one:
            extra = full[0]["deliveries_per_s"] - one[0]["deliveries_per_s"]
            if extra > 0:
                cpu = (full[0]["cpu_pct"] - one[0]["cpu_pct"]) / 100
                values.append(cpu / extra * 1e6)
    return statistics.median(values) if values else None


def report(args: argparse.Namespace, r: dict) -> str:
    return (
        f"clients={r['clients']:<5} machines={args.machines} rate={args.rate:g}/s (fleet) "
        f"reply_delay={args.reply_delay * 1000:g} ms "
        f"compression={'on' if args.compression else 'off'}\n"
        f"  deliveries/s {r['deliveries_per_s']:8.0f}   per client {r['per_client_per_s']:6.2f}/s"
        f"   lost {r['lost']} of {r['owed']} owed   connections lost {r['closed']}\n"
        f"  change → client  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms"
        f"  max {r['max_ms']:6.1f} ms  (n={r['samples']})\n"
        f"  gateway CPU {r['cpu_pct']:5.1f} % of one core   RSS {r['rss_mib']:6.1f} MiB"
        f"   {r['kib_per_connection']:5.1f} KiB per subscribed connection\n"
        f"  ({r['other']})"
    )


def settings_of(items: list[str] | None) -> list[tuple[str, object]]:
    """``key=value`` options as TOML values (numbers and booleans as such)."""
    out: list[tuple[str, object]] = []
    for item in items or []:
        key, _, text = item.partition("=")
        value: object = text
        if text in ("true", "false"):
            value = text == "true"
        else:
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    value = text
        out.append((key.strip(), value))
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client-process":
        port, count, seconds = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
        clients_main(port, count, seconds, sys.argv[5] == "1", int(sys.argv[6]), float(sys.argv[7]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="100,500,1000")
    parser.add_argument("--machines", type=int, default=10)
    parser.add_argument(
        "--rate",
        type=float,
        default=10.0,
        help="state changes per second across the fleet (= messages/s each client receives)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring window")
    parser.add_argument("--reply-delay", type=float, default=0.0, help="PLC reply delay, s")
    parser.add_argument("--compression", action="store_true", help="permessage-deflate on")
    parser.add_argument("--json", action="store_true", help="also print each result as JSON")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also run plain websockets and picows broadcast servers (benchmarks/anchors/; "
        "pip install -e '.[bench]') in the same harness, interleaved, and print medians",
    )
    parser.add_argument("--cycles", type=int, default=3, help="with --compare: interleaved cycles")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="with --compare: also run, first in each cycle, the gateway from DIR (another copy "
        "of the package, e.g. `git archive main | tar -x -C DIR`), rows base and base@1",
    )
    parser.add_argument(
        "--machine-setting", action="append", metavar="KEY=VALUE", help="for every machine"
    )
    parser.add_argument(
        "--ws-setting", action="append", metavar="KEY=VALUE", help="[websocket] setting"
    )
    args = parser.parse_args()
    pin(os.getpid(), {1})  # the gateway gets CPU 0 to itself
    print(machine_line())
    for clients in (int(x) for x in args.clients.split(",")):
        if args.compare:
            results = asyncio.run(compare(args, clients))
            print(f"clients={clients} machines={args.machines} rate={args.rate:g}/s")
            print(summary(results), flush=True)
            if args.json:
                print(json.dumps(results))
            continue
        result = asyncio.run(run(args, clients))
        print(report(args, result), flush=True)
        if args.json:
            print(json.dumps(result))


if __name__ == "__main__":
    main()
