"""Asyncio client for a PLC's port 3200: one persistent connection, one request at a time.

A supervisor task keeps the connection up (exponential backoff with jitter, a circuit
breaker). Requests never connect by themselves: when the link is down they fail at once, so
a dead PLC costs its callers nothing. A request that gets no reply in time marks the link as
broken (it is re-established) and fails with :class:`PlcTimeout`; nothing is ever retried
here, so a MOVE is sent at most once. So does a reply that cannot be right (a position
outside the machine): with no framing on the wire, the byte stream can no longer be trusted
to be in step, and a fresh connection is the only way back.

The same holds for bytes nobody asked for. The link only ever holds the bytes of the one
reply it waits for: a byte that arrives while no request is outstanding, or one past the
reply's length, means a later reply would be read shifted (a status taken for a position,
a stale reply for a fresh one). Such a stream is "out of step": the reading it was part of
is discarded, the link is re-opened, and nothing is ever buffered beyond one reply.
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


class PlcOutOfStep(PlcError):
    """The PLC sent bytes no request explains; the link is re-established."""


#: The reason every out-of-step fault starts with (logs, ``machine_event``, diagnostics).
OUT_OF_STEP = "unrequested bytes from the PLC: link re-opened"


@dataclass(frozen=True, slots=True, order=True)
class ReplyMark:
    """Where a reply sits in the PLC's byte stream: the link it came on (one number per
    connection) and its place among that link's replies (1, 2, ...). Two replies are
    consecutive in one stream when ``link`` is equal and ``index`` differs by one."""

    link: int
    index: int

    def follows(self, other: ReplyMark | None) -> bool:
        return other is not None and other.link == self.link and other.index == self.index - 1


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
    """Holds the bytes of the one reply awaited, and nothing else.

    Bytes with no request outstanding, or past the awaited reply's length, put the stream
    out of step: the waiter fails, ``on_out_of_step`` is told, and the link is aborted.
    """

    def __init__(self, on_out_of_step: Callable[[_LinkProtocol, str], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._buffer = bytearray()
        self._waiter: asyncio.Future[bytes] | None = None
        self._expected = 0
        self._on_out_of_step = on_out_of_step
        #: Why the stream was found out of step (None while it is in step).
        self.out_of_step: str | None = None
        #: The connection has counted this link's failure (once per link).
        self.failed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.out_of_step is not None:
            return  # already being dropped
        waiter = self._waiter
        if waiter is None or waiter.done():
            self._fault(f"{OUT_OF_STEP} ({len(data)} bytes with no request outstanding)")
            return
        if len(self._buffer) + len(data) > self._expected:
            got = len(self._buffer) + len(data)
            self._fault(f"{OUT_OF_STEP} ({got} bytes for a {self._expected}-byte reply)")
            return
        self._buffer.extend(data)
        if len(self._buffer) == self._expected:
            reply = bytes(self._buffer)
            self._buffer.clear()
            waiter.set_result(reply)

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
        return (
            transport is not None
            and not transport.is_closing()
            and not self.closed.done()
            and self.out_of_step is None
        )

    @property
    def buffered(self) -> int:
        """Bytes received toward the reply awaited."""
        return len(self._buffer)

    def expect(self, length: int) -> asyncio.Future[bytes]:
        """Wait for the next ``length`` bytes (the buffer is empty between replies)."""
        self._expected = length
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    def _fault(self, reason: str) -> None:
        self.out_of_step = reason
        self._buffer.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(PlcOutOfStep(reason))
        self._on_out_of_step(self, reason)
        if self.transport is not None:
            self.transport.abort()


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
        #: Links dropped because the PLC sent bytes no request explains.
        self.out_of_step_faults = 0
        #: The last two replies with their place in the stream (see :class:`ReplyMark`).
        self.recent_replies: deque[tuple[ReplyMark, Reply]] = deque(maxlen=2)
        self.breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown_s)
        self._on_state_change = on_state_change
        self._protocol: _LinkProtocol | None = None
        self._lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._state_changed = asyncio.Event()
        self._replies_on_link = 0
        self._link_failure_counted = False
        self._last_reply_at = 0.0  # loop time of the last reply (or of the link coming up)

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
            protocol = self._usable_protocol()
            assert protocol.transport is not None
            layout = self.settings.layout
            waiter = protocol.expect(layout.reply_length)
            started = time.perf_counter()
            protocol.transport.write(payload)
            try:
                async with asyncio.timeout(self.settings.request_timeout_s):
                    data = await waiter
                if protocol.out_of_step is not None:
                    # Bytes came after the reply, before this request resumed: the reply
                    # may itself be shifted, so it is discarded.
                    raise PlcOutOfStep(protocol.out_of_step)
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
            except (PlcConnectionLost, PlcOutOfStep) as exc:
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
            self.recent_replies.append((ReplyMark(self.connects, self._replies_on_link), reply))
            self._last_reply_at = asyncio.get_running_loop().time()
            self.breaker.record_success()
            return reply

    async def quiet_for(self, seconds: float) -> None:
        """Let the link carry nothing for ``seconds`` after its last reply.

        Holds the link meanwhile (no request goes out), so any byte the PLC still sends
        arrives with no request outstanding and faults the link: then this raises.
        """
        async with self._lock:
            protocol = self._usable_protocol()
            remaining = self._last_reply_at + seconds - asyncio.get_running_loop().time()
            if remaining > 0:
                await asyncio.wait({protocol.closed}, timeout=remaining)
            if protocol.out_of_step is not None:
                raise PlcOutOfStep(protocol.out_of_step)
            if not protocol.usable:
                raise PlcConnectionLost(self.last_error or "connection lost")

    def confirmed_pair(self) -> tuple[Reply, Reply] | None:
        """The last two replies if they are consecutive on one link, else None.

        The later one completing with exactly its own bytes proves the earlier was read in
        step (TCP keeps order: a byte left over from the earlier would have come first).
        """
        if len(self.recent_replies) < 2:
            return None
        (first_mark, first), (second_mark, second) = self.recent_replies
        return (first, second) if second_mark.follows(first_mark) else None

    def _usable_protocol(self) -> _LinkProtocol:
        """The live link, or :class:`PlcNotConnected` (called with the lock held)."""
        protocol = self._protocol
        if self.state is ConnectionState.CONNECTED and protocol is not None and not protocol.usable:
            # Closed, and the supervisor has not run yet: say so now, so nobody writes into
            # a dead link (nor loops on it) meanwhile.
            reason = protocol.closed.result() if protocol.closed.done() else "closing"
            self.last_error = self.last_error or f"connection lost: {reason}"
            self._set_state(ConnectionState.DISCONNECTED, self.last_error)
            protocol = None
        if self.state is not ConnectionState.CONNECTED or protocol is None:
            raise PlcNotConnected(self._not_connected_reason())
        return protocol

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
        if protocol.failed:
            return  # already counted (an out-of-step fault, then its request's error)
        protocol.failed = True
        self.last_error = reason
        self.breaker.record_failure(time.monotonic())
        if protocol.transport is not None:
            protocol.transport.abort()
        if protocol is self._protocol:
            self._link_failure_counted = True
            self._set_state(ConnectionState.DISCONNECTED, reason)

    def _out_of_step(self, protocol: _LinkProtocol, reason: str) -> None:
        """The link's stream showed bytes no request explains (called by the protocol)."""
        self.out_of_step_faults += 1
        self._fail(protocol, reason)

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
                        lambda: _LinkProtocol(self._out_of_step),
                        self.settings.host,
                        self.settings.port,
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
            self._last_reply_at = loop.time()
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
