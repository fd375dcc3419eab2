"""``[opcua] own_process``: the OPC UA server in a child process, off the gateway's loop.

asyncua's work (encoding, signing and encrypting every publish of every session) then runs
on its own core. The gateway keeps the one command path: the child asks it for each MOVE
over a pipe and answers the OPC UA client with what the gateway says; the gateway sends it
the fleet's events as they are published. Frames on the child's stdin/stdout are
length-prefixed pickles between this process and the child it started (nobody else writes
to those pipes); the child logs to the same stderr as the gateway.

Frames, gateway → child: ``("init", config, machines, counters, log_level)``, ``("event",
event)``, ``("reply", id, text, None)`` or ``("reply", id, None, (code, message, reasons))``,
``("stop",)``. Child → gateway: ``("ready", port, url)``, ``("failed", errno, text)``,
``("move", id, machine_id, target, client)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pickle  # nosec B403: frames between the gateway and the child it started
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any

from carousel_gateway.api.opcua.backend import Backend, Counters, MachineView
from carousel_gateway.config import OpcUaConfig
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import Event, Handler

__all__ = ["OpcUaProcess", "main"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
#: The child's own start (its Python, asyncua, the address space) may take this long.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
#: Unsent events past this many bytes (a child that stopped reading) are dropped, logged.
MAX_BACKLOG_BYTES = 16 * 2**20


def _frame(message: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def _read_frame(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next frame, or None at the end of the stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
        (length,) = _HEADER.unpack(header)
        data = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return None
    message: tuple[Any, ...] = pickle.loads(data)  # nosec B301: our own child's frames
    return message


class OpcUaProcess:
    """The gateway's side: starts the child, feeds it events, runs its MOVEs."""

    def __init__(self, config: OpcUaConfig, backend: Backend, *, log_level: str) -> None:
        self.config = config
        self.backend = backend
        self.log_level = log_level
        self.port = config.port
        self.url = ""
        self.process: asyncio.subprocess.Process | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._moves: set[asyncio.Task[None]] = set()
        self._dropping = False
        self._stopping = False

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "carousel_gateway.api.opcua.process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        counters = await self.backend.counters()
        machines = self.backend.machines()
        self._send(("init", self.config, machines, counters, self.log_level))
        async with asyncio.timeout(START_TIMEOUT_S):
            answer = await _read_frame(self.process.stdout)
        if answer is None or answer[0] != "ready":
            await self.stop()
            if answer is not None and answer[0] == "failed":
                raise OSError(answer[1], answer[2]) if answer[1] else OSError(answer[2])
            raise OSError("the OPC UA process ended before it listened")
        _, self.port, self.url = answer
        self._unsubscribe = self.backend.subscribe(self._on_event)
        self._reader = asyncio.create_task(self._serve(), name="opcua-process")
        log.info("OPC UA server (own process %d) on %s", self.process.pid, self.url)

    async def stop(self) -> None:
        self._stopping = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        process, self.process = self.process, None
        if process is None:
            return
        if process.returncode is None and process.stdin is not None:
            with contextlib.suppress(ConnectionError):
                process.stdin.write(_frame(("stop",)))
                process.stdin.close()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for task in list(self._moves):
            task.cancel()

    def _send(self, message: tuple[Any, ...]) -> None:
        process = self.process
        if process is None or process.stdin is None or process.stdin.is_closing():
            return
        if process.stdin.transport.get_write_buffer_size() > MAX_BACKLOG_BYTES:
            if not self._dropping:
                log.error("OPC UA process: not reading; its values are no longer updated")
                self._dropping = True
            return
        process.stdin.write(_frame(message))

    def _on_event(self, event: Event) -> None:
        self._send(("event", event))

    async def _serve(self) -> None:
        """The child's requests: each MOVE through the backend, answered by its id."""
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        while (message := await _read_frame(stdout)) is not None:
            if message[0] == "move":
                task = asyncio.create_task(self._move(*message[1:]))
                self._moves.add(task)
                task.add_done_callback(self._moves.discard)
        if not self._stopping:
            log.error("the OPC UA process ended; OPC UA clients are not served")

    async def _move(self, request_id: int, machine_id: str, target: int, client: str) -> None:
        try:
            text = await self.backend.move(machine_id, target, client)
        except GatewayError as exc:
            self._send(("reply", request_id, None, (exc.code.value, exc.message, exc.reasons)))
        except Exception as exc:  # answered all the same: the child must not wait forever
            log.exception("OPC UA process: a MOVE failed")
            error = (ErrorCode.INTERNAL_ERROR.value, str(exc) or type(exc).__name__, ())
            self._send(("reply", request_id, None, error))
        else:
            self._send(("reply", request_id, text, None))


class _PipeBackend:
    """The child's side: the gateway's machines, events and MOVEs over the pipe."""

    def __init__(
        self, machines: list[MachineView], counters: Counters, writer: Callable[[bytes], None]
    ) -> None:
        self._machines = machines
        self._counters = counters
        self._write = writer
        self._handlers: list[Handler] = []
        self._waiting: dict[int, asyncio.Future[str]] = {}
        self._ids = itertools.count(1)

    def machines(self) -> list[MachineView]:
        return self._machines

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler)

    async def counters(self) -> Counters:
        return self._counters

    async def move(self, machine_id: str, target: int, client: str) -> str:
        request_id = next(self._ids)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        self._write(_frame(("move", request_id, machine_id, target, client)))
        try:
            return await future
        finally:
            self._waiting.pop(request_id, None)

    def deliver(self, message: tuple[Any, ...]) -> None:
        if message[0] == "event":
            for handler in tuple(self._handlers):
                handler(message[1])
        elif message[0] == "reply":
            _, request_id, text, error = message
            future = self._waiting.get(request_id)
            if future is None or future.done():
                return
            if error is None:
                future.set_result(text)
            else:
                code, text, reasons = error
                future.set_exception(GatewayError(ErrorCode(code), text, reasons=reasons))

    def gateway_gone(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(
                    GatewayError(ErrorCode.CONNECTION_ERROR, "the gateway is stopping")
                )


async def _child() -> int:
    """The OPC UA process: serve until the gateway says stop (or goes away)."""
    from carousel_gateway.api.opcua.server import OpcUaServer

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, sys.stdout
    )
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    init = await _read_frame(reader)
    if init is None or init[0] != "init":
        return 2
    _, config, machines, counters, log_level = init
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    backend = _PipeBackend(machines, counters, writer.write)
    server = OpcUaServer(config, backend)
    try:
        await server.start()
    except OSError as exc:
        writer.write(_frame(("failed", exc.errno, exc.strerror or str(exc))))
        await writer.drain()
        await server.stop()
        return 1
    writer.write(_frame(("ready", server.port, server.url)))
    try:
        while (message := await _read_frame(reader)) is not None and message[0] != "stop":
            backend.deliver(message)
    finally:
        backend.gateway_gone()
        await server.stop()
    return 0


def main() -> None:
    # Ctrl+C (the whole process group) and a service manager's SIGTERM reach this child too:
    # it stops when the gateway tells it, or when the gateway's end of the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(asyncio.run(_child()))


if __name__ == "__main__":
    main()
