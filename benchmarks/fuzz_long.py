"""The long fuzz: many more generated frames than CI runs, and the gateway's memory over it.

The gateway runs as ``carousel-gateway serve`` in its own process (two embedded simulators,
limits out of the way), so its resident memory (RSS, from /proc) is its own. The frames are
the CI fuzz's (tests/integration/test_ws_fuzz.py: every client message model, malformed in
every way hypothesis finds, plus hand-picked nasties), sent through one session with a marked
ping after each, with bursts of connections opened and closed in between. It prints RSS at
the start, after each round and after the load has stopped, and fails (exit 1) if the
gateway died, a frame went unanswered, a MOVE reached a simulator, or RSS did not settle.

    .venv/bin/python benchmarks/fuzz_long.py --examples 100000 --rounds 5 --seed 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, seed, settings
from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import connect

from tests.integration.test_ws_fuzz import _exchange, frames


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def config(ws_port: int, http_port: int, journal: Path) -> str:
    machines = "\n".join(
        f"""
[[machines]]
id = "machine_{i}"
name = "Carrusel {i}"
kind = "simulator"
port = 0
poll_idle_s = 0.1

[machines.simulator]
embedded = true
seconds_per_position = 0.02
"""
        for i in (1, 2)
    )
    return f"""log_level = "WARNING"

[websocket]
host = "127.0.0.1"
port = {ws_port}

[http]
host = "127.0.0.1"
port = {http_port}

[journal]
path = "{journal}"

[limits]
messages_per_second = 1000000
message_burst = 1000000
commands_per_machine_per_second = 1000000
command_burst = 1000000
max_sessions_per_address = 1000
{machines}"""


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"the gateway did not listen on {port} within {timeout:g} s")


def fuzz(url: str, examples: int, round_seed: int) -> None:
    with connect(url, max_size=2**22) as session:
        session.recv(5)  # welcome

        @seed(round_seed)
        @settings(
            max_examples=examples,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(frame=frames)
        def run(frame: str | bytes) -> None:
            _exchange(session, frame)

        run()


async def burst(url: str, count: int) -> int:
    async def one() -> bool:
        try:
            async with async_connect(url, open_timeout=30) as connection:
                await connection.recv()
            return True
        except Exception:
            return False

    return sum(await asyncio.gather(*(one() for _ in range(count))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000, help="frames per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--burst", type=int, default=500, help="connections per burst")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--rss-growth-mib", type=float, default=20.0, help="RSS growth allowed after warm-up"
    )
    args = parser.parse_args()
    ws_port, http_port = free_port(), free_port()
    url = f"ws://127.0.0.1:{ws_port}"
    with tempfile.TemporaryDirectory(prefix="carousel-fuzz-") as folder:
        path = Path(folder) / "gateway.toml"
        path.write_text(config(ws_port, http_port, Path(folder) / "journal.db"), "utf-8")
        process = subprocess.Popen(
            [sys.executable, "-m", "carousel_gateway", "serve", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=open(Path(folder) / "gateway.log", "wb"),  # noqa: SIM115 - closed at exit
        )
        try:
            wait_for_port(ws_port)
            started = rss_mib(process.pid)
            print(f"# gateway pid {process.pid}, RSS at start {started:.1f} MiB")
            fuzz(url, min(2_000, args.examples), args.seed)  # warm-up: caches, pools
            asyncio.run(burst(url, args.burst))
            time.sleep(1.0)
            baseline = rss_mib(process.pid)
            print(f"# after warm-up {baseline:.1f} MiB")
            total = 0
            for round_number in range(1, args.rounds + 1):
                began = time.monotonic()
                fuzz(url, args.examples, args.seed + round_number)
                opened = asyncio.run(burst(url, args.burst))
                total += args.examples
                if process.poll() is not None:
                    print(f"FAIL: the gateway exited with {process.returncode}")
                    return 1
                print(
                    f"round {round_number}: {args.examples} frames + {opened}/{args.burst} "
                    f"connections in {time.monotonic() - began:.1f} s, "
                    f"RSS {rss_mib(process.pid):.1f} MiB"
                )
            time.sleep(2.0)  # idle: closing sessions finish
            settled = rss_mib(process.pid)
            growth = settled - baseline
            print(
                f"# {total} frames in all; RSS after the load {settled:.1f} MiB "
                f"({growth:+.1f} MiB over the warm-up baseline)"
            )
            moves = _moves_received(http_port)
            if moves:
                print(f"FAIL: {moves} MOVEs reached the simulators")
                return 1
            if growth > args.rss_growth_mib:
                print(f"FAIL: RSS grew by {growth:.1f} MiB (over {args.rss_growth_mib:g})")
                return 1
            print("OK")
            return 0
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _moves_received(http_port: int) -> int:
    """MOVE commands the gateway journalled (the fuzz sends none that are valid)."""
    with urllib.request.urlopen(
        f"http://127.0.0.1:{http_port}/v1/events?kinds=command&limit=1000", timeout=10
    ) as response:
        entries = json.load(response)["data"]["entries"]
    return sum(1 for entry in entries if entry.get("command") == 1 and not entry.get("skipped"))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
