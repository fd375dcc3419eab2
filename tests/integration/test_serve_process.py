"""`carousel-gateway serve` as a real process: it serves, and SIGTERM/SIGINT close cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.asyncio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(tmp_path: Path, ws_port: int) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[websocket]
host = "127.0.0.1"
port = {ws_port}

[http]
host = "127.0.0.1"
port = {free_port()}

[[machines]]
id = "machine_1"
name = "Carrusel Principal"
kind = "simulator"
port = 0
poll_idle_s = 0.05

[machines.simulator]
embedded = true
seconds_per_position = 0.02
""",
        encoding="utf-8",
    )
    return path


async def start_gateway(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "carousel_gateway",
        "serve",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def wait_for_line(process: asyncio.subprocess.Process, needle: str) -> list[str]:
    lines: list[str] = []
    assert process.stdout is not None
    async with asyncio.timeout(20):
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"process ended before {needle!r}: {''.join(lines)}")
            lines.append(line)
            if needle in line:
                return lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_closes_sessions_with_1001_and_exits_zero(tmp_path, sig):
    port = free_port()
    process = await start_gateway(write_config(tmp_path, port))
    try:
        await wait_for_line(process, "WebSocket API on")
        async with connect(f"ws://127.0.0.1:{port}") as client:
            welcome = json.loads(await client.recv())
            assert welcome["type"] == "welcome"
            await client.send(json.dumps({"type": "get_status", "machine_id": "machine_1"}))
            status = json.loads(await client.recv())
            assert status["type"] == "machine_status"
            process.send_signal(sig)
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        await client.recv()
            assert client.close_code == 1001
        async with asyncio.timeout(10):
            code = await process.wait()
        assert code == 0
        rest = (await process.stdout.read()).decode()
        assert "gateway stopped" in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_bad_config_exits_2_with_one_line_per_problem(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[machines]]\nid = "a"\nname = "A"\nport = 70000\ncolour = "red"\n', encoding="utf-8"
    )
    process = await start_gateway(path)
    async with asyncio.timeout(20):
        output = (await process.stdout.read()).decode()
        code = await process.wait()
    assert code == 2
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 2
    assert all(line.startswith(str(path)) for line in lines)
    assert any("port" in line for line in lines) and any("colour" in line for line in lines)
