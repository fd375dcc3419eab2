"""Shared helpers for the benchmark scripts.

- what the numbers were measured on (:func:`machine_line`), percentiles;
- the gateway in its own process on a generated config (:class:`GatewayProcess`,
  :func:`gateway_toml`), with limits opened up so a benchmark's thousand clients from one
  address are not refused;
- :class:`PlcStub`: a port-3200 PLC (a :class:`CarouselModel` behind the PLC's wire
  protocol) that answers after a fixed or drawn delay and timestamps what it sees, so the
  gateway's polling can be watched from the outside;
- :class:`RawWsClient`: a minimal WebSocket client for load generation (a thousand of them
  fit in one process without becoming the bottleneck).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import platform
import random
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from carousel_gateway.plc.protocol import Command, RequestParser, encode_reply
from carousel_gateway.sim.carousel import CarouselModel

# -- what and where ------------------------------------------------------------------------------


def machine_line() -> str:
    """What the numbers were measured on (and how busy it was when the run started)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        websockets_version = version("websockets")
    except Exception:  # pragma: no cover - a benchmark still runs without it
        websockets_version = "?"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"# {platform.node()} | {cpu} | {os.cpu_count()} CPUs | "
        f"Python {platform.python_version()} | websockets {websockets_version} | "
        f"{platform.system()} {platform.release()} | load avg {load}"
    )


def pin(pid: int, cpus: set[int]) -> None:
    """Pin a process to CPUs when the platform allows it (silently not otherwise)."""
    if hasattr(os, "sched_setaffinity") and max(cpus) < (os.cpu_count() or 1):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)


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


# -- the gateway process -------------------------------------------------------------------------


class GatewayProcess:
    """`carousel-gateway serve` in its own process on a generated config.

    Without a ``[journal]`` table in the config, the journal is a SQLite file in the
    process's temporary directory (on disk, as in production). The gateway's stderr goes to a
    file there too (a pipe nobody reads would block the gateway once full); its tail is
    printed if the gateway dies.

    ``source``: a directory holding another copy of the ``carousel_gateway`` package (e.g.
    ``git archive main`` unpacked) to run instead of this checkout's, so that a change can be
    measured against the code before it in the same session, runs interleaved.
    """

    def __init__(
        self, config_toml: str, *, cpu: int | None = None, source: str | None = None
    ) -> None:
        self.config_toml = config_toml
        self.cpu = cpu
        self.source = source
        self.process: asyncio.subprocess.Process | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="carousel-bench-")
        self._stderr_path = Path(self._dir.name) / "gateway.log"
        self._stderr = None

    async def __aenter__(self) -> GatewayProcess:
        path = Path(self._dir.name) / "gateway.toml"
        config = self.config_toml
        if "[journal]" not in config:
            config += f'\n\n[journal]\npath = "{Path(self._dir.name) / "journal.db"}"\n'
        path.write_text(config, encoding="utf-8")
        self._stderr = self._stderr_path.open("wb")
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
            stderr=self._stderr,
            # ``-m`` imports from the working directory first.
            cwd=self.source,
        )
        if self.cpu is not None:
            pin(self.process.pid, {self.cpu})
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
        elif self.process is not None and exc[0] is not None:
            print(self.log_tail(), file=sys.stderr)
        if self._stderr is not None:
            self._stderr.close()
        self._dir.cleanup()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self._stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the gateway process so far."""
        return cpu_seconds_of(self.pid)

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


def cpu_seconds_of(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU share of one core used by a process between :meth:`start` and :meth:`stop`."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway
        self._cpu = 0.0
        self._wall = 0.0

    def start(self) -> None:
        self._cpu, self._wall = self.gateway.cpu_seconds(), time.perf_counter()

    def stop(self) -> float:
        return (self.gateway.cpu_seconds() - self._cpu) / (time.perf_counter() - self._wall)


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


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def limits_toml() -> str:
    """A ``[limits]`` table that lets a benchmark's clients and commands through.

    Benchmarks open a thousand sessions from one address and send commands back to back;
    the per-address and per-machine limits that protect production would refuse them. Empty
    when this version of the gateway has no limits.
    """
    from carousel_gateway.config import GatewayConfig

    field = GatewayConfig.model_fields.get("limits")
    if field is None:
        return ""
    known = field.annotation.model_fields  # type: ignore[union-attr]
    wanted = {
        "messages_per_second": 1_000_000.0,
        "message_burst": 1_000_000,
        "commands_per_machine_per_second": 1_000_000.0,
        "command_burst": 1_000_000,
        "max_sessions": 1_000_000,
        "max_sessions_per_address": 1_000_000,
    }
    lines = [f"{k} = {_toml_value(v)}" for k, v in wanted.items() if k in known]
    return "[limits]\n" + "\n".join(lines) + "\n" if lines else ""


def gateway_toml(
    ws_port: int, machines: str, *, http_port: int | None = None, **websocket: object
) -> str:
    """A whole gateway config: loopback WebSocket and HTTP ports, open limits, machines."""
    ws_lines = "".join(f"{k} = {_toml_value(v)}\n" for k, v in websocket.items())
    return (
        f'[websocket]\nhost = "127.0.0.1"\nport = {ws_port}\n{ws_lines}\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http_port or free_port()}\n\n'
        f"{limits_toml()}\n{machines}\n"
    )


async def metric(http_port: int, name: str) -> float | None:
    """One sample of the gateway's ``/metrics`` (the first line for ``name``), or None."""
    reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
    try:
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        body = (await reader.read()).decode("utf-8", "replace")
    finally:
        writer.close()
    for line in body.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return float(value)
    return None


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
        lines += [f"{key} = {_toml_value(value)}" for key, value in settings.items()]
        # Already listening: not a simulator the gateway starts itself (kind alone would be).
        lines += ["[machines.simulator]", "embedded = false"]
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


# -- a PLC stub that timestamps what it sees -----------------------------------------------------

Delay = Callable[[], float]


def fixed(seconds: float) -> Delay:
    return lambda: seconds


def uniform(low: float, high: float, seed: int = 1) -> Delay:
    rng = random.Random(seed)
    return lambda: rng.uniform(low, high)


class PlcStub:
    """A port-3200 PLC for benchmarks: a :class:`CarouselModel` on the PLC's wire protocol.

    Like the simulator (``sim/server.py``), a STATUS is answered after the reply delay with
    the state at that moment, and a MOVE is acted on when read and answered after the delay.
    Unlike it, it accepts any number of connections (a benchmark compares the gateway with a
    raw exchange on the same PLC) and records, on its own clock (``time.monotonic``):

    - ``gaps``: seconds from each reply written to the next request read on that connection
      (how soon the gateway asks again), with whether the chain was moving at the reply;
    - ``last_change``: ``(position_index, status_byte, time)`` of the last reply whose
      reading differed from the one before (when the gateway could first know of a change).
    """

    def __init__(self, model: CarouselModel, delay: Delay | float = 0.0) -> None:
        self.model = model
        self.delay = fixed(delay) if isinstance(delay, int | float) else delay
        self.port = 0
        self.record = False
        self.gaps: list[tuple[float, bool]] = []
        self.last_change: tuple[int, int, float] | None = None
        self.requests = 0
        self._last_reading: tuple[int, int] | None = None
        self._server: asyncio.Server | None = None
        #: The reading every request gets once :meth:`freeze` was called.
        self.frozen: tuple[int, int] | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _StubLink(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()
            self._server = None

    def freeze(self) -> None:
        """From now on answer every request with the reading of this moment and act on no
        MOVE: the gateway sees nothing change, so it publishes nothing more (a benchmark's
        quiet end, to count what was sent against what arrived)."""
        self.frozen = (self.model.position_index, self.model.status_byte())

    def _answer(self, command: int, argument: int | None) -> tuple[int, int] | None:
        """The reading a request is answered with (None: no answer)."""
        if self.frozen is not None:
            return self.frozen if command in (Command.STATUS, Command.MOVE) else None
        if command == Command.MOVE and argument is not None:
            self.model.move(argument)
        elif command != Command.STATUS:
            return None
        return (self.model.position_index, self.model.status_byte())

    def _written(self, reading: tuple[int, int]) -> None:
        if reading != self._last_reading:
            self._last_reading = reading
            self.last_change = (reading[0], reading[1], time.monotonic())


class _StubLink(asyncio.Protocol):
    def __init__(self, stub: PlcStub) -> None:
        self.stub = stub
        self.parser = RequestParser()
        self.transport: asyncio.Transport | None = None
        self.queue: list[tuple[int, int | None]] = []
        self.busy = False
        self.replied_at: float | None = None
        self.replied_moving = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        stub = self.stub
        for request in self.parser.feed(data):
            stub.requests += 1
            if self.replied_at is not None and stub.record:
                stub.gaps.append((now - self.replied_at, self.replied_moving))
            self.replied_at = None
            self.queue.append((request.command, request.argument))
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if not self.queue or self.transport is None:
            self.busy = False
            return
        self.busy = True
        command, argument = self.queue.pop(0)
        delay = self.stub.delay()
        if command == Command.MOVE:
            reply = self.stub._answer(command, argument)  # acted on when read
            self._later(delay, lambda: reply)
        else:
            self._later(delay, lambda: self.stub._answer(command, argument))

    def _later(self, delay: float, answer: Callable[[], tuple[int, int] | None]) -> None:
        def reply() -> None:
            reading = answer()
            if reading is not None and self.transport is not None:
                self.transport.write(encode_reply(reading[1], reading[0]))
                self.stub._written(reading)
                self.replied_at = time.monotonic()
                self.replied_moving = self.stub.model.moving
            self._next()

        if delay <= 0:
            reply()
        else:
            asyncio.get_running_loop().call_later(delay, reply)


async def raw_exchange(port: int, count: int, pause: Delay | None = None) -> list[float]:
    """Round trips of ``count`` STATUS requests on a connection of our own (seconds)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            writer.write(b"\x00")
            await reader.readexactly(2)
            times.append(time.perf_counter() - started)
            await asyncio.sleep(pause() if pause is not None else 0.0)
    finally:
        writer.close()
    return times


# -- a minimal WebSocket client for load ---------------------------------------------------------


class RawWsClient(asyncio.Protocol):
    """A bare WebSocket client: handshake, text frames out, frames in, nothing else.

    It answers pings and closes, and hands every text or binary payload to ``on_message``.
    It exists so that a thousand receiving clients fit in one process with CPU to spare (the
    ``websockets`` client spends ~10x more per message): the benchmark must measure the
    gateway, not its own clients. Frames it sends are masked with a zero key (allowed by
    RFC 6455; a server cannot tell).
    """

    def __init__(
        self,
        on_message: Callable[[RawWsClient, bytes], None] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 80,
        path: str = "/",
        deflate: bool = False,
    ) -> None:
        self.on_message = on_message
        self._request = _handshake_request(host, port, path, deflate)
        self.transport: asyncio.Transport | None = None
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.started = 0.0
        self.frames = 0
        self._buffer = b""
        self._upgraded = False

    @classmethod
    async def connect(
        cls,
        port: int,
        on_message: Callable[[RawWsClient, bytes], None] | None = None,
        **kwargs: object,
    ) -> RawWsClient:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        _, client = await loop.create_connection(
            lambda: cls(on_message, port=port, **kwargs),  # type: ignore[arg-type]
            "127.0.0.1",
            port,
        )
        client.started = started
        await client.open
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.open.done():
            self.open.set_exception(ConnectionError(f"closed during the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send_text(self, payload: bytes) -> None:
        if self.transport is not None:
            self.transport.write(_masked_frame(0x1, payload))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buffer
                return
            status = buffer[: buffer.find(b"\r\n")]
            if b" 101 " not in status:
                self.open.set_exception(ConnectionError(status.decode(errors="replace")))
                if self.transport is not None:
                    self.transport.abort()
                return
            self._upgraded = True
            self.open.set_result(None)
            buffer = buffer[end + 4 :]
        offset, size = 0, len(buffer)
        while size - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1] & 0x7F
            if second < 126:
                head = 2
            elif second == 126:
                if size - offset < 4:
                    break
                head, second = 4, struct.unpack_from("!H", buffer, offset + 2)[0]
            else:
                if size - offset < 10:
                    break
                head, second = 10, struct.unpack_from("!Q", buffer, offset + 2)[0]
            end = offset + head + second
            if end > size:
                break
            opcode = first & 0x0F
            payload = buffer[offset + head : end]
            offset = end
            if opcode in (0x1, 0x2, 0x0):
                self.frames += 1
                if self.on_message is not None:
                    self.on_message(self, payload)
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(_masked_frame(0xA, payload))
            elif opcode == 0x8 and self.transport is not None:
                self.transport.write(_masked_frame(0x8, payload[:2]))
                self.transport.close()
        self._buffer = buffer[offset:] if offset < size else b""


def _handshake_request(host: str, port: int, path: str, deflate: bool) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    extensions = (
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        if deflate
        else ""
    )
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extensions}\r\n"
    ).encode()


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return head + b"\x00\x00\x00\x00" + payload  # a zero mask leaves the payload as is


def stamp_of(payload: bytes) -> float | None:
    """The ``timestamp`` of an outgoing message as epoch seconds (ms resolution)."""
    start = payload.find(b'"timestamp":"')
    if start < 0:
        return None
    text = payload[start + 13 : start + 36].decode()
    return _parse_utc(text)


def _parse_utc(text: str) -> float:
    # "2025-01-27T10:30:00.000" (the Z follows): calendar arithmetic without datetime.
    year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    seconds = int(text[11:13]) * 3600 + int(text[14:16]) * 60 + float(text[17:23])
    return _days_from_civil(year, month, day) * 86400 + seconds


def _days_from_civil(year: int, month: int, day: int) -> int:
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


# -- many receiving clients on one epoll loop ----------------------------------------------------


class EpollReceivers:
    """Many WebSocket clients that mostly receive, driven by one ``epoll`` loop.

    asyncio spends ~10-15 µs of Python per received message and socket; with a thousand
    clients in one process the last one reads a broadcast ~15 ms after the first, which a
    benchmark would charge to the gateway. A bare epoll loop with one ``recv`` per ready
    socket costs a few µs, so receipt times stay close to the gateway's writes. Linux only.
    """

    def __init__(self, port: int, *, deflate: bool = False) -> None:
        import select

        self.port = port
        self.deflate = deflate
        self.epoll = select.epoll()
        self.sockets: dict[int, socket.socket] = {}
        self.buffers: dict[int, bytes] = {}
        self.inflaters: dict[int, object] = {}
        self.index: dict[int, int] = {}
        self.closed = 0

    def open(self, count: int, first_text: bytes | None = None) -> None:
        """Open ``count`` connections (handshake, welcome read); send ``first_text`` on each
        and read up to the replies that end with a status_broadcast (subscribe)."""
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(_handshake_request("127.0.0.1", self.port, "/", self.deflate))
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed during the handshake")
                buffer += chunk
            head, _, rest = buffer.partition(b"\r\n\r\n")
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
            fd = sock.fileno()
            if self.deflate and b"permessage-deflate" in head.lower():
                import zlib

                self.inflaters[fd] = zlib.decompressobj(-zlib.MAX_WBITS)
            self.sockets[fd] = sock
            self.index[fd] = len(self.index)
            self.buffers[fd] = rest
            self._read_until(fd, b'"welcome"')
            if first_text is not None:
                sock.sendall(_masked_frame(0x1, first_text))
                self._read_until(fd, b'"status_broadcast"')
            sock.setblocking(False)
            self.epoll.register(fd, 0x001)  # EPOLLIN

    def _read_until(self, fd: int, marker: bytes) -> None:
        sock = self.sockets[fd]
        while True:
            for payload in self._frames(fd, b""):
                if marker in payload[:40]:
                    return
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed while opening")
            self.buffers[fd] += chunk

    def _frames(self, fd: int, data: bytes) -> list[bytes]:
        buffer = self.buffers[fd] + data if self.buffers[fd] else data
        out = []
        offset, size = 0, len(buffer)
        inflater = self.inflaters.get(fd)
        while size - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1] & 0x7F
            if second < 126:
                head = 2
            elif second == 126:
                if size - offset < 4:
                    break
                head, second = 4, struct.unpack_from("!H", buffer, offset + 2)[0]
            else:
                if size - offset < 10:
                    break
                head, second = 10, struct.unpack_from("!Q", buffer, offset + 2)[0]
            end = offset + head + second
            if end > size:
                break
            payload = buffer[offset + head : end]
            offset = end
            opcode = first & 0x0F
            if opcode in (0x0, 0x1, 0x2):
                if first & 0x40 and inflater is not None:
                    payload = inflater.decompress(payload + b"\x00\x00\xff\xff")  # type: ignore[attr-defined]
                out.append(payload)
            elif opcode == 0x9:
                self.sockets[fd].send(_masked_frame(0xA, payload))
        self.buffers[fd] = buffer[offset:] if offset < size else b""
        return out

    def run(
        self,
        on_message: Callable[[int, bytes, float], None],
        until: Callable[[], bool],
        *,
        stop_fd: int | None = None,
    ) -> None:
        """Deliver every message to ``on_message(client_index, payload, receipt_time)``
        until ``until()`` says so (or ``stop_fd`` becomes readable: its peer closed)."""
        if stop_fd is not None:
            self.epoll.register(stop_fd, 0x001)
        try:
            self._run(on_message, until, stop_fd)
        finally:
            if stop_fd is not None:
                self.epoll.unregister(stop_fd)

    def _run(
        self,
        on_message: Callable[[int, bytes, float], None],
        until: Callable[[], bool],
        stop_fd: int | None,
    ) -> None:
        now = time.time
        sockets, index = self.sockets, self.index
        while not until():
            for fd, _ in self.epoll.poll(0.2):
                if fd == stop_fd:
                    return
                try:
                    data = sockets[fd].recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                received = now()
                if not data:
                    self.epoll.unregister(fd)
                    self.closed += 1
                    continue
                for payload in self._frames(fd, data):
                    on_message(index[fd], payload, received)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.epoll.close()


# -- what else ran meanwhile ---------------------------------------------------------------------


def _process_ticks() -> dict[int, tuple[int, int]]:
    """``pid: (parent pid, user + system ticks)`` of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return out


class OtherLoad:
    """CPU used outside this benchmark's process tree during a window.

    The benchmarks run on a shared machine; a number measured while something else was busy
    says so rather than passing for the gateway's. The machine's own total (``/proc/stat``)
    minus this benchmark's processes counts everything else, including processes that
    started or ended inside the window; above :attr:`DISTURBED_PCT` the run is marked
    disturbed. Call :meth:`stop` while the benchmark's own processes still run: the CPU of
    one of ours that ended inside the window can no longer be told from anyone else's.
    """

    #: Other load (percent of one core) above which a run is marked DISTURBED.
    DISTURBED_PCT = 5.0

    def __init__(self) -> None:
        self._start: dict[int, tuple[int, int]] = {}
        self._busy = 0
        self._wall = 0.0
        self._steal = 0
        #: Percent of one core the hypervisor took from this VM during the window.
        self.steal_pct = 0.0
        #: Whether other load went over :attr:`DISTURBED_PCT` (set by :meth:`stop`).
        self.disturbed = False

    def start(self) -> None:
        self._start, self._wall = _process_ticks(), time.perf_counter()
        self._busy, self._steal = _busy_ticks(), _steal_ticks()

    def stop(self) -> float:
        """Percent of one core used by other processes since :meth:`start`."""
        end = _process_ticks()
        busy = _busy_ticks() - self._busy
        elapsed = time.perf_counter() - self._wall
        ours = {os.getpid()}
        changed = True
        while changed:  # our descendants
            changed = False
            for pid, (parent, _) in end.items():
                if parent in ours and pid not in ours:
                    ours.add(pid)
                    changed = True
        our_ticks = sum(
            total - self._start.get(pid, (0, 0))[1]
            for pid, (_, total) in end.items()
            if pid in ours
        )
        hertz = os.sysconf("SC_CLK_TCK") * max(elapsed, 1e-9)
        self.steal_pct = (_steal_ticks() - self._steal) / hertz * 100
        other_pct = max(0, busy - our_ticks) / hertz * 100
        self.disturbed = other_pct > self.DISTURBED_PCT
        return other_pct

    def describe(self, other_pct: float) -> str:
        mark = f" DISTURBED (over {self.DISTURBED_PCT:g} %)" if self.disturbed else ""
        return (
            f"other load meanwhile: {other_pct:.1f} % of a core{mark}, "
            f"VM steal {self.steal_pct:.0f} %"
        )


def _busy_ticks() -> int:
    """Ticks all CPUs spent busy (user, nice, system, irq, softirq), from /proc/stat."""
    try:
        with open("/proc/stat", encoding="utf-8") as stat:
            fields = [int(x) for x in stat.readline().split()[1:8]]
    except (OSError, ValueError):
        return 0
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return user + nice + system + irq + softirq


def _steal_ticks() -> int:
    """Ticks stolen from this VM by its host, all CPUs (the ``steal`` of /proc/stat)."""
    try:
        with open("/proc/stat", encoding="utf-8") as stat:
            fields = stat.readline().split()
        return int(fields[8]) if len(fields) > 8 else 0
    except OSError:
        return 0
