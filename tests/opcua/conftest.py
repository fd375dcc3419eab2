"""Fixtures for the OPC UA tests: a real gateway with its OPC UA server on loopback, and an
independent client (node-opcua, ``client.js``) driven line by line with JSON."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from asyncua.crypto.cert_gen import (
    dump_private_key_as_pem,
    generate_private_key,
    generate_self_signed_app_certificate,
)
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from carousel_gateway.api.opcua.passwords import hash_password
from tests.integration.conftest import gateway_config, wait_until

__all__ = [
    "OPERATOR",
    "PASSWORD_HASHES",
    "VIEWER",
    "ClientCertificate",
    "NodeClient",
    "opcua_config",
]

HERE = Path(__file__).parent
CLIENT_JS = HERE / "client.js"
NODE_MODULES = HERE / "node_modules" / "node-opcua-client"

OPERATOR = ("op", "op-secret-1")
VIEWER = ("view", "view-secret-1")
PASSWORD_HASHES = {name: hash_password(password) for name, password in (OPERATOR, VIEWER)}

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not NODE_MODULES.exists(),
    reason="node-opcua-client is not installed (make test installs it: tests/opcua/deps.mk)",
)


def opcua_config(pki_dir: Path, machines: int | list[dict[str, Any]] = 1, **opcua: Any) -> Any:
    """A gateway config with the OPC UA server on a free loopback port."""
    table = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": 0,
        "pki_dir": str(pki_dir),
        "users": [
            {
                "name": OPERATOR[0],
                "role": "operator",
                "password_hash": PASSWORD_HASHES[OPERATOR[0]],
            },
            {"name": VIEWER[0], "role": "viewer", "password_hash": PASSWORD_HASHES[VIEWER[0]]},
        ],
        **opcua,
    }
    return gateway_config(machines, opcua=table)


class ClientCertificate:
    """A client application certificate made for one test (``trust`` puts it in the
    server's trust list)."""

    def __init__(self, folder: Path, uri: str = "urn:carousel-gateway:tests:client") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        key = generate_private_key()
        certificate = generate_self_signed_app_certificate(
            key,
            "carousel-gateway test client",
            {},
            [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")],
            extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
            days=30,
        )
        self.uri = uri
        self.der = certificate.public_bytes(Encoding.DER)
        self.certificate_file = folder / "client-cert.pem"
        self.private_key_file = folder / "client-key.pem"
        self.certificate_file.write_bytes(certificate.public_bytes(Encoding.PEM))
        self.private_key_file.write_bytes(dump_private_key_as_pem(key))
        self.pki_root = folder / "pki"

    def trust(self, server_pki: Path) -> None:
        trusted = server_pki / "trusted"
        trusted.mkdir(parents=True, exist_ok=True)
        (trusted / "test-client.der").write_bytes(self.der)

    def options(self) -> dict[str, Any]:
        return {
            "certificateFile": str(self.certificate_file),
            "privateKeyFile": str(self.private_key_file),
            "applicationUri": self.uri,
            "pkiRoot": str(self.pki_root),
        }


class NodeClient:
    """node-opcua in a child process: one JSON command a line, one JSON answer a line."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.notifications: list[dict[str, Any]] = []
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.stderr = b""

    async def start(self) -> NodeClient:
        self.process = await asyncio.create_subprocess_exec(
            "node",
            str(CLIENT_JS),
            cwd=str(HERE),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=2**24,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            if not line.startswith(b"{"):
                continue  # node-opcua's own notes (its Node version warning) go to stdout
            message = json.loads(line)
            if "notification" in message:
                self.notifications.append(message["notification"])
                self._changed.set()
            elif (future := self._waiting.pop(message.get("id"), None)) is not None:
                future.set_result(message)
        for future in self._waiting.values():
            future.set_exception(RuntimeError("the node-opcua client ended"))

    async def request(self, op: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self.process.stdin.write(
            (json.dumps({"id": request_id, "op": op, **fields}) + "\n").encode()
        )
        await self.process.stdin.drain()
        async with asyncio.timeout(timeout):
            return await future

    async def wait_notification(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0, start: int = 0
    ) -> dict[str, Any]:
        """The first notification from index ``start`` on that matches (waits for it)."""
        index = start
        async with asyncio.timeout(timeout):
            while True:
                while index < len(self.notifications):
                    note = self.notifications[index]
                    index += 1
                    if predicate(note):
                        return note
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(Exception):
            await self.request("exit", timeout=20)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()
        if self._reader is not None:
            await self._reader
        self.process = None


@pytest.fixture
async def node_client() -> AsyncIterator[Callable[[], Any]]:
    clients: list[NodeClient] = []

    async def make() -> NodeClient:
        client = await NodeClient().start()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def opcua_gateway(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start a real Gateway with its OPC UA server; stopped at the end."""
    from carousel_gateway.app import Gateway

    gateways: list[Gateway] = []

    async def make(config: Any = None, **opcua: Any) -> Gateway:
        gateway = Gateway(config or opcua_config(tmp_path / "server-pki", **opcua))
        await gateway.start()
        gateways.append(gateway)
        assert gateway.fleet is not None
        fleet = gateway.fleet
        await wait_until(fleet.bus, lambda: all(m.snapshot.raw_status is not None for m in fleet))
        return gateway

    yield make
    for gateway in gateways:
        await gateway.stop()
