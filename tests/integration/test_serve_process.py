"""`carousel-gateway serve` as a real process: it serves, and SIGTERM/SIGINT close cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.asyncio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(tmp_path: Path, ws_port: int, http_port: int | None = None) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[websocket]
host = "127.0.0.1"
port = {ws_port}

[http]
host = "127.0.0.1"
port = {http_port or free_port()}

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


async def start_gateway(config: Path, *options: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "carousel_gateway",
        "serve",
        "--config",
        str(config),
        *options,
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


async def test_tokens_in_request_targets_are_redacted_in_the_real_log(tmp_path):
    """`serve` installs the log redaction: neither uvicorn's access log (INFO) nor
    websockets' handshake dump (DEBUG) shows a ``?token=`` value."""
    secret = "Zm9vYmFyLXNlY3JldC10b2tlbg"
    ws_port, http_port = free_port(), free_port()
    process = await start_gateway(
        write_config(tmp_path, ws_port, http_port), "--log-level", "DEBUG"
    )
    try:
        lines = await wait_for_line(process, "REST API on")
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{http_port}/v1/health?token={secret}")
        assert response.status_code == 200
        lines += await wait_for_line(process, "GET /v1/health?token=")
        async with connect(f"ws://127.0.0.1:{ws_port}/?token={secret}") as client:
            assert json.loads(await client.recv())["type"] == "welcome"
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            lines.append((await process.stdout.read()).decode())
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = "".join(lines)
    assert secret not in log
    assert "GET /v1/health?token=[redacted]" in log  # uvicorn.access
    assert "GET /?token=[redacted]" in log  # websockets' DEBUG request dump


async def test_serve_prints_addresses_that_answer_once_listening(tmp_path):
    """The banner comes after every server listens, with the real bound ports (here picked
    by the OS through the --ws-port/--http-port overrides) and the bind host."""
    process = await start_gateway(
        write_config(tmp_path, free_port()), "--host", "127.0.0.1", "--ws-port", "0",
        "--http-port", "0",
    )  # fmt: skip
    try:
        lines = await wait_for_line(process, "Press Ctrl+C to stop.")
        banner = {
            words[0]: words[-1]
            for words in (line.split() for line in lines[-5:])
            if words and words[-1].startswith(("http://", "ws://"))
        }
        dashboard, api, docs = banner["dashboard"], banner["WebSocket"], banner["API"]
        assert dashboard.startswith("http://127.0.0.1:") and dashboard.endswith("/")
        assert docs == dashboard + "docs"
        assert api.startswith("ws://127.0.0.1:")
        assert any("is running (1 machine)" in line for line in lines)
        async with httpx.AsyncClient() as http:
            assert (await http.get(dashboard)).status_code == 200
            assert (await http.get(docs)).status_code == 200
        async with connect(api) as client:
            assert json.loads(await client.recv())["type"] == "welcome"
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize(
    ("server", "setting", "flag"),
    [("WebSocket API", "[websocket] port", "--ws-port"), ("HTTP", "[http] port", "--http-port")],
)
async def test_a_busy_port_is_named_with_its_server_and_setting(tmp_path, server, setting, flag):
    """A real listener holds the port; the real `serve` exits 1 with one line that names
    the port, the server and how to move it (no bare "[Errno 98]")."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        if server == "HTTP":
            config = write_config(tmp_path, free_port(), http_port=port)
        else:
            config = write_config(tmp_path, port)
        process = await start_gateway(config)
        async with asyncio.timeout(20):
            output = (await process.stdout.read()).decode()
            code = await process.wait()
    assert code == 1, output
    (line,) = [line for line in output.splitlines() if "cannot start" in line]
    assert line.startswith(f"carousel-gateway: cannot start: port {port} ({server}")
    assert line.endswith(f"is in use; set {setting} in the config or pass {flag}")
    assert "Errno" not in output and "Traceback" not in output
    assert "Press Ctrl+C" not in output


async def test_an_unreachable_postgresql_journal_is_one_clear_line(tmp_path):
    """Nothing listens at the journal's PostgreSQL address: `serve` exits 1 saying so."""
    config = write_config(tmp_path, free_port())
    dead = free_port()
    journal = f'[journal]\nurl = "postgresql://gateway@127.0.0.1:{dead}/carousel"\n'
    config.write_text(journal + config.read_text(encoding="utf-8"), encoding="utf-8")
    process = await start_gateway(config)
    async with asyncio.timeout(30):
        output = (await process.stdout.read()).decode()
        code = await process.wait()
    assert code == 1, output
    (line,) = [line for line in output.splitlines() if "cannot start" in line]
    assert line.startswith(
        f"carousel-gateway: cannot start: journal: cannot connect to "
        f"postgresql://gateway@127.0.0.1:{dead}/carousel"
    )
    assert "Traceback" not in output and "Press Ctrl+C" not in output
