"""Asyncio client for a PLC's port 3200: one persistent connection, one request at a time.

A :class:`~carousel_gateway.plc.supervisor.LinkSupervisor` keeps the connection up
(exponential backoff with jitter, a circuit breaker); this module opens the socket and
carries the exchange. Requests never connect by themselves: when the link is down they fail
at once, so a dead PLC costs its callers nothing. A request that gets no reply in time
marks the link as broken (it is re-established) and fails with :class:`PlcTimeout`; nothing
is ever retried here, so a MOVE is sent at most once. So does a reply that cannot be right
(a position outside the machine): with no framing on the wire, the byte stream can no
longer be trusted to be in step, and a fresh connection is the only way back.

The same holds for bytes nobody asked for. The link only ever holds the bytes of the one
reply it waits for: a byte that arrives while no request is outstanding, or one past the
reply's length, means a later reply would be read shifted (a status taken for a position,
a stale reply for a fresh one). Such a stream is "out of step": the reading it was part of
is discarded, the link is re-opened, and nothing is ever buffered beyond one reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from carousel_gateway.plc.errors import ConnectFailed, PlcBadReply, PlcConnectionLost, PlcOutOfStep
from carousel_gateway.plc.errors import PlcError as PlcError
from carousel_gateway.plc.errors import PlcNotConnected as PlcNotConnected
from carousel_gateway.plc.errors import PlcTimeout as PlcTimeout
from carousel_gateway.plc.link_lock import LinkLock
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
from carousel_gateway.plc.supervisor import ConnectionState as ConnectionState
from carousel_gateway.plc.supervisor import (
    LinkSupervisor,
    StateListener,
    SupervisedConnection,
    SupervisedLink,
)

__all__ = [
    "OUT_OF_STEP",
    "ConnectionSettings",
    "ConnectionState",
    "PlcConnection",
    "PlcError",
    "PlcNotConnected",
    "PlcTimeout",
    "ReplyMark",
]

#: A STATUS request (one byte).
_STATUS_REQUEST = encode_status_request()

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


class _LinkProtocol(SupervisedLink, asyncio.Protocol):
    """Holds the bytes of the one reply awaited, and nothing else.

    Bytes with no request outstanding, or past the awaited reply's length, put the stream
    out of step: the waiter fails, ``on_out_of_step`` is told, and the link is aborted.
    """

    def __init__(self, on_out_of_step: Callable[[_LinkProtocol, str], None]) -> None:
        super().__init__()
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[bytes] | None = None
        self._expected = 0
        self._on_out_of_step = on_out_of_step
        #: Why the stream was found out of step (None while it is in step).
        self.out_of_step: str | None = None
        #: Replies read on this link, and the loop time of the last (or of the link's start).
        self.replies = 0
        #: The loop the link runs on, looked up once: on Python 3.11 every
        #: ``asyncio.get_running_loop()`` is a ``getpid`` system call, and a poll would make
        #: several.
        self.loop = asyncio.get_running_loop()
        self.last_reply_at = self.loop.time()
        #: Loop time at which the reply awaited is late (see :meth:`expect`).
        self._deadline = 0.0
        #: The one timer that enforces deadlines on this link (None: not armed).
        self._deadline_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.last_reply_at = self.loop.time()

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
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(
                PlcConnectionLost(f"connection lost before the reply: {reason}")
            )
        self.lost(reason)

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

    def abort(self, reason: str) -> None:
        if self.transport is not None:
            self.transport.abort()

    def expect(self, length: int, timeout: float) -> asyncio.Future[bytes]:
        """Wait for the next ``length`` bytes (the buffer is empty between replies); the
        future fails with ``TimeoutError`` if they are not all in within ``timeout`` s.

        The deadline is enforced lazily by one timer per link, re-armed only when it fires
        early: a poll every 20 ms with a 1.5 s timeout would otherwise add and cancel a timer
        per request, and every cancelled one stays in the loop's heap (hundreds across a
        fleet, each push and pop comparing against them) until its time comes.
        """
        self._expected = length
        self._waiter = waiter = self.loop.create_future()
        self._deadline = self.loop.time() + timeout
        timer = self._deadline_timer
        if timer is None or timer.when() > self._deadline:
            if timer is not None:
                timer.cancel()  # armed for a later deadline (a longer timeout before)
            self._deadline_timer = self.loop.call_at(self._deadline, self._deadline_due)
        return waiter

    def _deadline_due(self) -> None:
        """The deadline timer fired: fail the reply awaited if it is late, else re-arm.

        A timer armed for an earlier request fires before the current request's deadline
        and is re-armed for it; with no request outstanding it stays off until the next.
        """
        self._deadline_timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self.loop.time() >= self._deadline:
            waiter.set_exception(TimeoutError())
        else:
            self._deadline_timer = self.loop.call_at(self._deadline, self._deadline_due)

    def _fault(self, reason: str) -> None:
        self.out_of_step = reason
        self._buffer.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(PlcOutOfStep(reason))
        self._on_out_of_step(self, reason)
        if self.transport is not None:
            self.transport.abort()


class PlcConnection(SupervisedConnection[_LinkProtocol]):
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
        self.latencies_s: deque[float] = deque(maxlen=1024)
        #: Replies refused as impossible (the link was re-established after each).
        self.bad_replies = 0
        #: Links dropped because the PLC sent bytes no request explains.
        self.out_of_step_faults = 0
        #: The last two replies with their place in the stream (see :class:`ReplyMark`).
        self.recent_replies: deque[tuple[ReplyMark, Reply]] = deque(maxlen=2)
        self.supervisor = LinkSupervisor(
            self._open,
            title="PLC",
            name=self.name,
            backoff=settings.backoff,
            breaker=CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown_s),
            task_name=f"plc-link-{self.name}",
            on_state_change=on_state_change,
            quiet=True,  # the machine's connection event is the log line
        )
        self._lock = LinkLock()

    async def _open(self) -> _LinkProtocol:
        """One TCP connection to port 3200, or :class:`ConnectFailed`."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: _LinkProtocol(self._out_of_step),
                    self.settings.host,
                    self.settings.port,
                )
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"connect failed: {str(exc) or 'connect timed out'}") from None
        return protocol

    # -- requests -------------------------------------------------------------------------

    async def status(self) -> Reply:
        return await self.request(_STATUS_REQUEST)

    async def move(self, index: int) -> Reply:
        return await self.request(encode_move_request(index))

    async def raw(self, command: int, argument: int | None) -> Reply:
        return await self.request(encode_raw_request(command, argument))

    async def request(self, payload: bytes) -> Reply:
        """Send one request and read exactly one reply; fails fast when the link is down."""
        async with self._lock:
            protocol, waiter, started = self._send(payload)
            with contextlib.suppress(Exception):  # its outcome is read by _complete
                await waiter
            return self._complete(protocol, waiter, started)

    def try_status(self, done: Callable[[Reply | PlcError], None]) -> bool:
        """Send a STATUS now, from a loop callback, if the link is free; ``done`` gets the
        reply or the :class:`PlcError` (after the link was dropped, as :meth:`request`
        would have). False, and nothing sent, when a request holds the link or waits for
        it. Raises :class:`PlcNotConnected` like :meth:`request`.

        The same exchange as :meth:`request` (the link's lock held from the write to the
        reply, the same checks on the reply), without a task: a busy machine's back-to-back
        polls cost no task switch (see ``MachinePolling``).
        """
        if not self._lock.try_acquire():
            return False
        try:
            protocol, waiter, started = self._send(_STATUS_REQUEST)
        except BaseException:
            self._lock.release()
            raise

        def finished(_: asyncio.Future[bytes]) -> None:
            outcome: Reply | PlcError
            try:
                outcome = self._complete(protocol, waiter, started)
            except PlcError as exc:
                outcome = exc
            except Exception as exc:  # not expected; ``done`` must hear of it all the same
                self._fail(protocol, f"reply not read: {exc!r}")
                outcome = PlcError(f"reply not read: {exc!r}")
            finally:
                self._lock.release()
            done(outcome)

        waiter.add_done_callback(finished)
        return True

    def _send(self, payload: bytes) -> tuple[_LinkProtocol, asyncio.Future[bytes], float]:
        """Write one request on the live link (the lock held); its waiter and start time."""
        protocol = self.supervisor.usable_link()
        assert protocol.transport is not None
        waiter = protocol.expect(self.settings.layout.reply_length, self.settings.request_timeout_s)
        started = time.perf_counter()
        protocol.transport.write(payload)
        return protocol, waiter, started

    def _complete(
        self, protocol: _LinkProtocol, waiter: asyncio.Future[bytes], started: float
    ) -> Reply:
        """The reply of a finished exchange, or its :class:`PlcError` (the link dropped)."""
        layout = self.settings.layout
        try:
            if waiter.cancelled():
                raise PlcConnectionLost("request abandoned before its reply")
            data = waiter.result()
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
        protocol.replies += 1
        self.recent_replies.append((ReplyMark(self.connects, protocol.replies), reply))
        protocol.last_reply_at = protocol.loop.time()
        self.supervisor.succeeded()
        return reply

    async def quiet_for(self, seconds: float) -> None:
        """Let the link carry nothing for ``seconds`` after its last reply.

        Holds the link meanwhile (no request goes out), so any byte the PLC still sends
        arrives with no request outstanding and faults the link: then this raises.
        """
        async with self._lock:
            protocol = self.supervisor.usable_link()
            remaining = protocol.last_reply_at + seconds - asyncio.get_running_loop().time()
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

    def _fail(self, protocol: _LinkProtocol, reason: str) -> None:
        """A request failed: count it and break its link so it is re-established cleanly."""
        self.supervisor.fail(protocol, reason)

    def _out_of_step(self, protocol: _LinkProtocol, reason: str) -> None:
        """The link's stream showed bytes no request explains (called by the protocol)."""
        self.out_of_step_faults += 1
        self._fail(protocol, reason)
