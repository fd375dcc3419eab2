"""Shared helpers for the benchmark scripts: machine info, percentiles, a gateway process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import socket
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path


def machine_line() -> str:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"# {platform.node()} | {cpu} | {os.cpu_count()} CPUs | "
        f"Python {platform.python_version()} | {platform.system()} {platform.release()}"
    )


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: Sequence[float]) -> str:
    """p50/p99/max of seconds, printed in milliseconds."""
    if not values:
        return "n/a"
    return (
        f"p50 {percentile(values, 50) * 1000:7.2f} ms  p99 {percentile(values, 99) * 1000:7.2f} ms"
        f"  max {max(values) * 1000:7.2f} ms  (n={len(values)}, mean "
        f"{statistics.fmean(values) * 1000:.2f} ms)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GatewayProcess:
    """`carousel-gateway serve` in its own process on a generated config."""

    def __init__(self, config_toml: str, *, cpu: int | None = None) -> None:
        self.config_toml = config_toml
        self.cpu = cpu
        self.process: asyncio.subprocess.Process | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="carousel-bench-")

    async def __aenter__(self) -> GatewayProcess:
        path = Path(self._dir.name) / "gateway.toml"
        path.write_text(self.config_toml, encoding="utf-8")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "carousel_gateway",
            "serve",
            "--config",
            str(path),
            "--log-level",
            "WARNING",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        if self.cpu is not None and hasattr(os, "sched_setaffinity"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.process.pid, {self.cpu})
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._dir.cleanup()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the gateway process so far."""
        with open(f"/proc/{self.pid}/stat", encoding="utf-8") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


async def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """Wait until something listens on 127.0.0.1:port (the gateway finished starting)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


def machines_toml(ports: Sequence[int], **settings: object) -> str:
    """[[machines]] tables for simulators already listening on ``ports``."""
    tables = []
    for index, port in enumerate(ports, start=1):
        lines = [
            "[[machines]]",
            f'id = "machine_{index}"',
            f'name = "Carrusel {index}"',
            'host = "127.0.0.1"',
            f"port = {port}",
            'kind = "simulator"',
        ]
        lines += [f"{key} = {value!r}" for key, value in settings.items()]
        tables.append("\n".join(lines))
    return "\n\n".join(tables)
