"""Asyncio client for a PLC's port 3200: one persistent connection, one request at a time.

A supervisor task keeps the connection up (exponential backoff with jitter, a circuit
breaker). Requests never connect by themselves: when the link is down they fail at once, so
a dead PLC costs its callers nothing. A request that gets no reply in time marks the link as
broken (it is re-established) and fails with :class:`PlcTimeout`; nothing is ever retried
here, so a MOVE is sent at most once. So does a reply that cannot be right (a position
outside the machine): with no framing on the wire, the byte stream can no longer be trusted
to be in step, and a fresh connection is the only way back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from carousel_gateway.plc.protocol import (
    DEFAULT_LAYOUT,
    Reply,
    ReplyLayout,
    decode_reply,
    encode_move_request,
    encode_raw_request,
    encode_status_request,
)
from carousel_gateway.plc.resilience import Backoff, CircuitBreaker

log = logging.getLogger(__name__)


class ConnectionState(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    ERROR = "error"  # repeated failures: the circuit breaker is open


class PlcError(Exception):
    """Base of every error talking to a PLC."""


class PlcNotConnected(PlcError):
    """The link is down (or the breaker is open); nothing was sent."""


class PlcTimeout(PlcError):
    """No complete reply in time; the request may or may not have been acted on."""


class PlcConnectionLost(PlcError):
    """The link closed while waiting for a reply (the request may have been acted on)."""


class PlcBadReply(PlcError):
    """A reply that cannot be right; the link is re-established."""


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    host: str
    port: int
    layout: ReplyLayout = DEFAULT_LAYOUT
    connect_timeout_s: float = 2.0
    request_timeout_s: float = 1.5
    backoff: Backoff = field(default_factory=Backoff)
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 5.0
    #: The machine's bucket count: a reply with a position index at or past it is refused
    #: (None: not checked).
    positions: int | None = None


StateListener = Callable[[ConnectionState, str | None], None]


class _LinkProtocol(asyncio.Protocol):
    """Buffers the PLC's bytes and completes a waiter once a whole reply is in."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._waiter: asyncio.Future[bytes] | None = None
        self._expected = 0
        self.stale_bytes_discarded = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer.extend(data)
        self._complete()

    def connection_lost(self, exc: Exception | None) -> None:
        reason = str(exc) if exc else "closed by peer"
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(
                PlcConnectionLost(f"connection lost before the reply: {reason}")
            )
        if not self.closed.done():
            self.closed.set_result(reason)

    @property
    def usable(self) -> bool:
        """False once the link is closed or closing (even before the supervisor knows)."""
        transport = self.transport
        return transport is not None and not transport.is_closing() and not self.closed.done()

    @property
    def buffered(self) -> int:
        """Bytes received toward the reply awaited."""
        return len(self._buffer)

    def expect(self, length: int) -> asyncio.Future[bytes]:
        """Drop anything stale, then wait for the next ``length`` bytes."""
        if self._buffer:
            self.stale_bytes_discarded += len(self._buffer)
            self._buffer.clear()
        self._expected = length
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    def _complete(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done() and len(self._buffer) >= self._expected:
            reply = bytes(self._buffer[: self._expected])
            del self._buffer[: self._expected]
            self._waiter = None
            waiter.set_result(reply)


class PlcConnection:
    """The gateway's single link to one PLC."""

    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        name: str = "",
        on_state_change: StateListener | None = None,
    ) -> None:
        self.settings = settings
        self.name = name or f"{settings.host}:{settings.port}"
        self.state = ConnectionState.DISCONNECTED
        self.last_error: str | None = None
        self.connected_since: float | None = None  # wall clock (time.time())
        self.connects = 0
        self.latencies_s: deque[float] = deque(maxlen=1024)
        #: Replies refused as impossible (the link was re-established after each).
        self.bad_replies = 0
        self.breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown_s)
        self._on_state_change = on_state_change
        self._protocol: _LinkProtocol | None = None
        self._lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._state_changed = asyncio.Event()
        self._replies_on_link = 0
        self._link_failure_counted = False

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start keeping the link up in the background."""
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(
                self._supervise(), name=f"plc-link-{self.name}"
            )

    async def close(self) -> None:
        """Close the link for good (shutdown)."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        self._drop_link()
        self._set_state(ConnectionState.DISCONNECTED, "closed by the gateway")

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    async def wait_state_change(self) -> ConnectionState:
        """Wait until the connection state changes (no polling)."""
        self._state_changed.clear()
        await self._state_changed.wait()
        return self.state

    # -- requests -------------------------------------------------------------------------

    async def status(self) -> Reply:
        return await self.request(encode_status_request())

    async def move(self, index: int) -> Reply:
        return await self.request(encode_move_request(index))

    async def raw(self, command: int, argument: int | None) -> Reply:
        return await self.request(encode_raw_request(command, argument))

    async def request(self, payload: bytes) -> Reply:
        """Send one request and read exactly one reply; fails fast when the link is down."""
        async with self._lock:
            protocol = self._protocol
            if (
                self.state is ConnectionState.CONNECTED
                and protocol is not None
                and not protocol.usable
            ):
                # Closed, and the supervisor has not run yet: say so now, so nobody writes
                # into a dead link (nor loops on it) meanwhile.
                reason = protocol.closed.result() if protocol.closed.done() else "closing"
                self.last_error = self.last_error or f"connection lost: {reason}"
                self._set_state(ConnectionState.DISCONNECTED, self.last_error)
                protocol = None
            if self.state is not ConnectionState.CONNECTED or protocol is None:
                raise PlcNotConnected(self._not_connected_reason())
            assert protocol.transport is not None
            layout = self.settings.layout
            waiter = protocol.expect(layout.reply_length)
            started = time.perf_counter()
            protocol.transport.write(payload)
            try:
                async with asyncio.timeout(self.settings.request_timeout_s):
                    data = await waiter
            except TimeoutError:
                timeout = self.settings.request_timeout_s
                got = protocol.buffered
                message = (
                    f"incomplete reply ({got} of {layout.reply_length} bytes) within {timeout:g} s"
                    if got
                    else f"no reply within {timeout:g} s"
                )
                self._fail(protocol, message)
                raise PlcTimeout(message) from None
            except PlcConnectionLost as exc:
                self._fail(protocol, str(exc))
                raise
            reply = decode_reply(data, layout)
            positions = self.settings.positions
            if positions is not None and reply.position_index >= positions:
                self.bad_replies += 1
                message = (
                    f"invalid reply: position index {reply.position_index} outside "
                    f"0..{positions - 1}"
                )
                self._fail(protocol, message)
                raise PlcBadReply(message)
            self.latencies_s.append(time.perf_counter() - started)
            self._replies_on_link += 1
            self.breaker.record_success()
            return reply

    def _not_connected_reason(self) -> str:
        if self.state is ConnectionState.ERROR:
            return f"PLC {self.name} unreachable (circuit open): {self.last_error}"
        detail = f": {self.last_error}" if self.last_error else ""
        return f"PLC {self.name} not connected{detail}"

    def _fail(self, protocol: _LinkProtocol, reason: str) -> None:
        """A request failed: count it and break its link so it is re-established cleanly.

        Only the link the request used is broken (never one re-established meanwhile), and
        the state says so at once: requests queued behind this one fail fast instead of
        writing into a dead link.
        """
        self.last_error = reason
        self.breaker.record_failure(time.monotonic())
        if protocol.transport is not None:
            protocol.transport.abort()
        if protocol is self._protocol:
            self._link_failure_counted = True
            self._set_state(ConnectionState.DISCONNECTED, reason)

    def _drop_link(self) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()

    # -- supervision ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            wait = self.breaker.remaining(time.monotonic())
            if wait > 0:
                self._set_state(ConnectionState.ERROR, self.last_error)
                await asyncio.sleep(wait)
                continue
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    _, protocol = await loop.create_connection(
                        _LinkProtocol, self.settings.host, self.settings.port
                    )
            except (OSError, TimeoutError) as exc:
                attempt += 1
                reason = str(exc) or "connect timed out"
                self.last_error = f"connect failed: {reason}"
                self.breaker.record_failure(time.monotonic())
                state = (
                    ConnectionState.ERROR
                    if self.breaker.remaining(time.monotonic()) > 0
                    else ConnectionState.DISCONNECTED
                )
                self._set_state(state, self.last_error)
                await asyncio.sleep(self.settings.backoff.delay(attempt))
                continue
            self._protocol = protocol
            self._replies_on_link = 0
            self._link_failure_counted = False
            self.connects += 1
            self.connected_since = time.time()
            self._set_state(ConnectionState.CONNECTED, None)
            try:
                reason = await asyncio.shield(protocol.closed)
            finally:
                self._protocol = None
                self.connected_since = None
            self.last_error = self.last_error or f"connection lost: {reason}"
            self._set_state(ConnectionState.DISCONNECTED, self.last_error)
            if self._replies_on_link:
                attempt = 0  # a link that worked: try again at once
                continue
            # A link that never answered (accepts then closes, or never replies): back off,
            # or a flapping PLC would be hammered in a tight loop.
            attempt += 1
            if not self._link_failure_counted:
                self.breaker.record_failure(time.monotonic())
            await asyncio.sleep(self.settings.backoff.delay(attempt))

    def _set_state(self, state: ConnectionState, reason: str | None) -> None:
        if state is ConnectionState.CONNECTED:
            self.last_error = None
        if state is self.state:
            return
        self.state = state
        self._state_changed.set()
        if state is ConnectionState.CONNECTED:
            log.debug("PLC %s connected", self.name)  # the machine's event is the log line
        else:
            log.debug("PLC %s %s: %s", self.name, state.value, reason)
        if self._on_state_change is not None:
            self._on_state_change(state, reason)
