"""`carousel-gateway serve` with `[opcua] enabled` as a real process: it prints the OPC UA
endpoint once listening, an independent client reads through it, and SIGTERM ends it
cleanly (exit 0, no traceback, no asyncua chatter in the log)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.integration.test_serve_process import free_port, wait_for_line
from tests.opcua.conftest import OPERATOR, PASSWORD_HASHES, ClientCertificate


async def start_gateway(config: Path) -> asyncio.subprocess.Process:
    """``serve`` in a process group of its own (as a terminal would start it), so that a
    Ctrl+C can be sent to the group: the gateway and, with own_process, its OPC UA child."""
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
        start_new_session=True,
    )


@pytest.mark.parametrize("own_process", [False, True])
async def test_serve_prints_the_endpoint_and_serves_it(
    node_client, tmp_path: Path, own_process: bool
) -> None:
    pki = tmp_path / "pki"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[websocket]
host = "127.0.0.1"
port = {free_port()}

[http]
host = "127.0.0.1"
port = {free_port()}

[journal]
path = ":memory:"

[opcua]
enabled = true
host = "127.0.0.1"
port = 0
pki_dir = "{pki}"
own_process = {"true" if own_process else "false"}

[[opcua.users]]
name = "{OPERATOR[0]}"
role = "operator"
password_hash = "{PASSWORD_HASHES[OPERATOR[0]]}"

[[machines]]
id = "machine_1"
name = "Carrusel Principal"
kind = "simulator"
poll_idle_s = 0.05
""",
        encoding="utf-8",
    )
    process = await start_gateway(config)
    try:
        lines = await wait_for_line(process, "OPC UA ")
        url = lines[-1].split()[-1]
        assert url.startswith("opc.tcp://127.0.0.1:")
        assert (pki / "own" / "certs" / "server.der").exists()
        certificate = ClientCertificate(tmp_path / "client")
        certificate.trust(pki)
        client = await node_client()
        answer = await client.request(
            "connect", url=url, user=OPERATOR[0], password=OPERATOR[1], **certificate.options()
        )
        assert answer["ok"], answer
        read = await client.request("read", nodeIds=["ns=2;s=machine_1.Identification.Name"])
        assert read["values"][0]["value"] == "Carrusel Principal"
        await client.request("disconnect")
    finally:
        if process.returncode is None:
            # Ctrl+C in a terminal: SIGINT to the whole process group (the OPC UA process
            # of own_process too, which leaves the stopping to the gateway).
            if own_process:
                os.killpg(process.pid, signal.SIGINT)
            else:
                process.send_signal(signal.SIGTERM)
    assert process.stdout is not None
    rest = (await process.stdout.read()).decode()
    assert await process.wait() == 0
    log = "".join(lines) + rest
    assert "Traceback" not in log
    assert "asyncua" not in log
    if own_process:
        with pytest.raises(ProcessLookupError):  # the OPC UA process ended with the gateway
            os.killpg(process.pid, 0)
