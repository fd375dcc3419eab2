"""The OPC UA server under load: 10 sessions × 30 monitored items at 100 ms for 60 s.

The gateway runs in this process (so its event loop's lag can be sampled from inside),
pinned to CPU 0 when possible, with two embedded simulators that a driver process keeps
moving over the WebSocket API; the driver also sends a JSON ping every 50 ms and reports
its round trips. The OPC UA clients are independent ones: node-opcua (tests/opcua/client.js,
``make test`` installs it), one Node process per session, pinned to CPU 1 with the driver.

Printed: notification latency (arrival at the client − the value's SourceTimestamp, the
PLC reading's time; both clocks are this machine's), the gateway process's CPU, the loop
lag (how late a 10 ms timer fires in the gateway's loop), the stall of the OPC UA server's
start, and the WebSocket ping. Goals (issue 19): p95 ≤ 150 ms, CPU ≤ 40 % of a core, loop
lag ≤ 20 ms, ping p99 ≤ 5 ms. The machine is shared: other load is printed with the numbers.

    .venv/bin/python benchmarks/opcua.py [--seconds 60] [--sessions 10] [--items 30]

``--own-process`` serves OPC UA from a process of its own (``[opcua] own_process``).
``--sessions 0`` is the baseline: the same gateway, moves and pings with OPC UA off, so a
ping or loop-lag number can be told apart from what the machine's other load does to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import OtherLoad, cpu_seconds_of, machine_line, percentile, pin

ROOT = Path(__file__).resolve().parents[1]
CLIENT_JS = ROOT / "tests" / "opcua" / "client.js"
USER, PASSWORD = "bench", "bench-password-1"
ITEMS_PER_MACHINE = (
    "Position",
    "TargetPosition",
    "MoveState",
    "StatusWord",
    "Ready",
    "Running",
    "RemoteMode",
    "Alarm",
    "EmergencyStopPressed",
    "DriveFault",
    "PositioningError",
    "Descending",
    "LinkUp",
    "LastResultCode",
    "LastResultMessage",
    "Counters.MovesCompleted",
    "Counters.SecondsInMotion",
)


class LoopLag:
    """How late a 10 ms timer fires in this loop (the gateway's), and how much CPU the loop's
    thread used meanwhile: a late timer with little CPU used was the machine's other load
    (the process waited for a core), one with as much CPU as lateness was our own work."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.busy: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            started, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.01)
            self.samples.append(time.perf_counter() - started - 0.01)
            self.busy.append(time.thread_time() - cpu)

    def take(self) -> list[float]:
        samples, self.samples, self.busy = self.samples, [], []
        return samples

    def take_busy(self) -> list[float]:
        return list(self.busy)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


def ms(values: list[float], scale: float = 1000.0) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {percentile(values, 50) * scale:6.1f} ms  p95 {percentile(values, 95) * scale:6.1f}"
        f" ms  p99 {percentile(values, 99) * scale:6.1f} ms  max {max(values) * scale:6.1f} ms"
        f"  (n={len(values)})"
    )


def process_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def config_for(pki: Path, ws_port: int, *, opcua: bool = True, own_process: bool = False) -> Any:
    from asyncua.crypto.cert_gen import generate_private_key  # noqa: F401 (asyncua present)

    from carousel_gateway.api.opcua.passwords import hash_password
    from carousel_gateway.config import parse_config

    machine = {
        "host": "127.0.0.1",
        "port": 0,
        "kind": "simulator",
        "positions": 30,
        "simulator": {"embedded": True, "seconds_per_position": 0.1},
    }
    return parse_config(
        {
            "log_level": "WARNING",
            "websocket": {"host": "127.0.0.1", "port": ws_port},
            "http": {"host": "127.0.0.1", "port": 0},
            "journal": {"path": ":memory:"},
            "limits": {"commands_per_machine_per_second": 1000.0, "command_burst": 1000},
            "opcua": {
                "enabled": opcua,
                "own_process": own_process,
                "host": "127.0.0.1",
                "port": 0,
                "pki_dir": str(pki),
                "users": [
                    {"name": USER, "role": "viewer", "password_hash": hash_password(PASSWORD)}
                ],
            },
            "machines": [
                {**machine, "id": "machine_1", "name": "Carrusel 1"},
                {**machine, "id": "machine_2", "name": "Carrusel 2"},
            ],
        }
    )


def client_certificate(folder: Path, pki: Path) -> dict[str, str]:
    from asyncua.crypto.cert_gen import (
        dump_private_key_as_pem,
        generate_private_key,
        generate_self_signed_app_certificate,
    )
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    uri = "urn:carousel-gateway:bench:client"
    key = generate_private_key()
    certificate = generate_self_signed_app_certificate(
        key,
        "bench client",
        {},
        [x509.UniformResourceIdentifier(uri)],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cert.pem").write_bytes(certificate.public_bytes(Encoding.PEM))
    (folder / "key.pem").write_bytes(dump_private_key_as_pem(key))
    (pki / "trusted").mkdir(parents=True, exist_ok=True)
    (pki / "trusted" / "bench.der").write_bytes(certificate.public_bytes(Encoding.DER))
    return {
        "certificateFile": str(folder / "cert.pem"),
        "privateKeyFile": str(folder / "key.pem"),
        "applicationUri": uri,
        "pkiRoot": str(folder / "pki"),
    }


class NodeSession:
    """One node-opcua session in its own process (tests/opcua/client.js)."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self._ids = 0

    async def start(self, cpu: int | None) -> None:
        self.process = await asyncio.create_subprocess_exec(
            "node",
            str(CLIENT_JS),
            cwd=str(CLIENT_JS.parent),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=2**26,
        )
        if cpu is not None:
            pin(self.process.pid, {cpu})

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin and self.process.stdout
        self._ids += 1
        line = json.dumps({"id": self._ids, "op": op, **fields}) + "\n"
        self.process.stdin.write(line.encode())
        await self.process.stdin.drain()
        async with asyncio.timeout(60):
            while True:
                answer = await self.process.stdout.readline()
                if not answer:
                    raise RuntimeError("the node-opcua client ended")
                if answer.startswith(b"{"):
                    message = json.loads(answer)
                    if message.get("id") == self._ids:
                        if not message["ok"]:
                            raise RuntimeError(message["error"])
                        return message

    async def close(self) -> None:
        if self.process is not None:
            try:
                await self.request("exit")
            except Exception:
                self.process.kill()
            await self.process.wait()


async def driver(ws_port: int, seconds: float) -> None:
    """Child process: keep both machines moving; print the JSON ping round trips."""
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{ws_port}"
    pings: list[float] = []
    async with connect(url) as mover, connect(url) as prober:
        await mover.recv()
        await prober.recv()
        await mover.send(json.dumps({"type": "subscribe", "subscription_type": "command_results"}))

        def move(machine_id: str) -> str:
            return json.dumps(
                {
                    "type": "send_command",
                    "machine_id": machine_id,
                    "command": {"command": 1, "argument": random.randint(1, 30)},
                }
            )

        async def keep_moving() -> None:
            for machine_id in ("machine_1", "machine_2"):
                await mover.send(move(machine_id))
            async for frame in mover:
                message = json.loads(frame)
                if message["type"] in ("move_completed", "move_failed") or (
                    message["type"] == "command_result" and message["data"].get("skipped")
                ):
                    await mover.send(move(message["machine_id"]))

        task = asyncio.create_task(keep_moving())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            await prober.send(json.dumps({"type": "ping"}))
            while json.loads(await prober.recv())["type"] != "pong":
                pass
            pings.append(time.perf_counter() - started)
        task.cancel()
    print(json.dumps(pings))


async def run(args: argparse.Namespace) -> None:
    from benchmarks._common import free_port
    from carousel_gateway.api.opcua.model import node_id
    from carousel_gateway.app import Gateway

    logging.basicConfig(level=logging.WARNING)
    pin(os.getpid(), {0})
    client_cpu = 1 if (os.cpu_count() or 1) > 1 else None
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="opcua-bench-") as folder:
        pki = Path(folder) / "pki"
        options = client_certificate(Path(folder) / "client", pki)
        ws_port = free_port()
        lag = LoopLag()
        lag.start()
        gateway = Gateway(
            config_for(pki, ws_port, opcua=args.sessions > 0, own_process=args.own_process)
        )
        started = time.perf_counter()
        await gateway.start()
        start_s = time.perf_counter() - started
        start_lag = lag.take()
        child = getattr(gateway.opcua, "process", None)
        if child is not None and client_cpu is not None:
            pin(child.pid, {client_cpu})  # off the gateway's core
        url = gateway.opcua.url if gateway.opcua is not None else ""
        per_machine = max(1, args.items // 2)
        items = [
            f"ns=2;s={node_id(m, path)}"
            for m in ("machine_1", "machine_2")
            for path in ITEMS_PER_MACHINE[:per_machine]
        ][: args.items]
        sessions = [NodeSession() for _ in range(args.sessions)]
        try:
            for session in sessions:
                await session.start(client_cpu)
                await session.request("connect", url=url, user=USER,
                                      password=PASSWORD, **options)  # fmt: skip
                await session.request(
                    "subscribe", nodeIds=items, interval=args.interval, collect=True
                )
            drive = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--driver",
                str(ws_port),
                "--seconds",
                str(args.seconds),
                stdout=asyncio.subprocess.PIPE,
            )
            if client_cpu is not None:
                pin(drive.pid, {client_cpu})
            for session in sessions:
                await session.request("stats")  # drop what came before the window
            lag.take()
            others = OtherLoad()
            others.start()
            child_before = cpu_seconds_of(child.pid) if child is not None else 0.0
            cpu_before, wall_before = process_cpu_seconds(), time.perf_counter()
            output, _ = await drive.communicate()
            wall = time.perf_counter() - wall_before
            cpu = (process_cpu_seconds() - cpu_before) / wall
            child_cpu = (cpu_seconds_of(child.pid) - child_before) / wall if child else None
            window_busy = lag.take_busy()
            window_lag = lag.take()
            other = others.describe(others.stop())
            latencies: list[float] = []
            for session in sessions:
                latencies += (await session.request("stats"))["latencies"]
        finally:
            for session in sessions:
                await session.close()
            await lag.stop()
            await gateway.stop()
    pings = json.loads(output)
    if not args.sessions:
        print("# BASELINE: OPC UA off, no sessions; the same machines, moves and pings")
    print(
        f"# {args.sessions} sessions × {len(items)} monitored items, publishing "
        f"{args.interval:g} ms, {args.seconds:g} s, 2 simulated carousels kept moving"
    )
    print(f"# {other}")
    print(f"gateway start (with OPC UA: asyncua init, address space): {start_s * 1000:.0f} ms; "
          f"longest loop stall meanwhile {max(start_lag, default=0) * 1000:.0f} ms")  # fmt: skip
    print(f"notification latency (source → client)  {ms([x / 1000 for x in latencies])}")
    print(f"gateway process CPU                     {cpu * 100:.1f} % of a core")
    if child_cpu is not None:
        print(f"OPC UA process CPU (own_process)        {child_cpu * 100:.1f} % of a core")
    print(f"event loop lag (10 ms timer)            {ms(window_lag)}")
    print(f"loop thread's CPU per 10 ms tick        {ms(window_busy)}")
    print(f"WebSocket JSON ping → pong              {ms(pings)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--interval", type=float, default=100.0, help="publishing (ms)")
    parser.add_argument(
        "--own-process", action="store_true", help="[opcua] own_process = true (CPU 1)"
    )
    parser.add_argument("--driver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        asyncio.run(driver(args.driver, args.seconds))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
