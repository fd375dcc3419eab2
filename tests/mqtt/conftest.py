"""Fixtures for the MQTT tests: a real mosquitto on a free loopback port with its own
config, and an independent Sparkplug B consumer (Node, Eclipse Tahu's payload library)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import itertools
import json
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
NODE = shutil.which("node")
#: What `make test` installs (tests/mqtt/deps.mk); checked once, at import.
HAVE_MOSQUITTO = Path(MOSQUITTO).exists()
HAVE_CONSUMER = NODE is not None and (HERE / "node_modules" / "sparkplug-payload").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    """A mosquitto process of our own (not the system service)."""

    def __init__(self, directory: Path, port: int, extra: str = "") -> None:
        self.directory = directory
        self.port = port
        self.extra = extra  # more listener settings (TLS, a password file)
        self.process: asyncio.subprocess.Process | None = None
        self.log: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        config = self.directory / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"{self.extra or 'allow_anonymous true'}\n"
            "persistence false\n"
            # Run as whoever runs the tests: as root, mosquitto would otherwise drop to a
            # user that cannot read this test's files (its password file, certificates).
            f"user {getpass.getuser()}\n"
            "log_dest stderr\n"
            "log_type all\n",
            encoding="utf-8",
        )
        self.process = await asyncio.create_subprocess_exec(
            MOSQUITTO,
            "-c",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,  # its log, unbuffered (stdout to a pipe is not)
        )
        assert self.process.stderr is not None
        async with asyncio.timeout(20):
            while True:
                line = (await self.process.stderr.readline()).decode()
                if not line:
                    raise AssertionError(f"mosquitto ended: {''.join(self.log)}")
                self.log.append(line)
                if " running" in line:
                    break
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.log.append(line.decode())

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    if not HAVE_MOSQUITTO:
        pytest.fail("mosquitto is not installed: `make test` installs it (tests/mqtt/deps.mk)")
    server = Broker(tmp_path, free_port())
    await server.start()
    yield server
    await server.stop()


class Consumer:
    """tests/mqtt/consumer.js: decodes with Tahu, checks the contract, can publish."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.messages: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._changed = asyncio.Event()
        self._ids = itertools.count(1)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            if message.get("op") == "error":
                self.errors.append(message["text"])
            self.messages.append(message)
            self._changed.set()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0, *, start: int = 0
    ) -> dict[str, Any]:
        """The first message from index ``start`` on that matches (waits for it)."""
        async with asyncio.timeout(timeout):
            index = start
            while True:
                while index < len(self.messages):
                    message = self.messages[index]
                    index += 1
                    if predicate(message):
                        return message
                self._changed.clear()
                await self._changed.wait()

    def mark(self) -> int:
        """An index to wait from (messages after this point)."""
        return len(self.messages)

    def sparkplug(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if "kind" in m]

    def problems(self) -> list[str]:
        return [f"{m['topic']}: {p}" for m in self.sparkplug() for p in m.get("problems", [])]

    async def _command(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        command_id = next(self._ids)
        start = self.mark()
        self.process.stdin.write((json.dumps({**command, "id": command_id}) + "\n").encode())
        await self.process.stdin.drain()
        sent = await self.wait_for(
            lambda m: m.get("op") == "sent" and m.get("id") == command_id, start=start
        )
        assert sent["error"] is None, sent

    async def publish(self, topic: str, metrics: list[dict[str, Any]]) -> None:
        """A Sparkplug payload encoded by Tahu (DCMD, NCMD)."""
        await self._command({"op": "publish", "topic": topic, "metrics": metrics})

    async def raw(self, topic: str, text: str, *, retain: bool = False, qos: int = 0) -> None:
        await self._command(
            {"op": "raw", "topic": topic, "text": text, "retain": retain, "qos": qos}
        )

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def start_consumer(url: str, *topics: str) -> Consumer:
    """tests/mqtt/consumer.js on the broker at ``url``, once it has subscribed."""
    if not HAVE_CONSUMER:
        pytest.fail("Node packages missing: `make test` installs them (tests/mqtt/deps.mk)")
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(HERE / "consumer.js"),
        url,
        *topics,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=HERE,
    )
    consumer = Consumer(process)
    try:
        await consumer.wait_for(lambda m: m.get("op") == "ready")
    except BaseException:
        await consumer.close()
        raise
    return consumer


@pytest.fixture
async def consumer_factory(broker: Broker) -> AsyncIterator[Callable[..., Any]]:
    consumers: list[Consumer] = []

    async def make(*topics: str) -> Consumer:
        consumer = await start_consumer(broker.url, *topics)
        consumers.append(consumer)
        return consumer

    yield make
    for consumer in consumers:
        await consumer.close()


@pytest.fixture
async def consumer(consumer_factory: Callable[..., Any]) -> Consumer:
    return await consumer_factory()


def mqtt_settings(broker: Broker, **overrides: Any) -> dict[str, Any]:
    """An [mqtt] table for a gateway on this broker (fast timings for tests)."""
    return {
        "enabled": True,
        "host": "127.0.0.1",
        "port": broker.port,
        "group_id": "site",
        "edge_node_id": "cell_a",
        "keepalive_s": 5,
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.5,
        "device_death_s": 0.5,
        "rebirth_min_interval_s": 0.5,
        **overrides,
    }


def metrics_of(message: dict[str, Any]) -> dict[str, Any]:
    """A birth's or a DDATA's metrics by name (the consumer resolved DDATA aliases)."""
    return {m["name"]: m["value"] for m in message["payload"]["metrics"]}


@pytest.fixture
async def gateway_factory() -> AsyncIterator[Callable[..., Any]]:
    """A real Gateway (embedded simulators, fleet, servers, MQTT link) on loopback."""
    from carousel_gateway.app import Gateway
    from tests.integration.conftest import wait_until

    gateways: list[Gateway] = []

    async def make(config: Any) -> Gateway:
        gateway = Gateway(config)
        await gateway.start()
        gateways.append(gateway)
        assert gateway.fleet is not None
        await wait_until(
            gateway.fleet.bus,
            lambda: all(m.snapshot.raw_status is not None for m in gateway.fleet or ()),
        )
        return gateway

    yield make
    for gateway in gateways:
        await gateway.stop()
