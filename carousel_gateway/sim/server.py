"""Serve a :class:`CarouselModel` over TCP with the PLC's port-3200 protocol.

The server behaves like the field PLC where it matters to a client: replies come after a
configurable delay, in a configurable layout, and it is a single-session server (while a
client is connected, and for ``release_time_s`` after it closes, new connections are
refused). Where the field PLC drops a session that has gone silent is not known, so that
is a setting (``idle_drop_s``, off by default). It can also drop the link or stall (stop
answering) on demand, and play the ways a PLC link fails in the field (:class:`FaultMode`)
for chaos tests. Every request it reads is counted by command byte, and every MOVE is
logged with the session it came on, so a test can prove a MOVE was never sent twice, nor
by a client that should not hold the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from carousel_gateway.plc.protocol import (
    DEFAULT_LAYOUT,
    Command,
    ReplyLayout,
    Request,
    RequestParser,
    encode_reply,
)
from carousel_gateway.sim.carousel import CarouselModel

__all__ = [
    "EXTRA_BYTES",
    "FaultMode",
    "LinkAction",
    "MoveRecord",
    "SimulatorServer",
    "SimulatorSettings",
]

log = logging.getLogger(__name__)


class LinkAction(StrEnum):
    """Link faults a simulator can be told to produce."""

    DROP = "drop"  # close the current connection now
    STALL = "stall"  # keep the connection but stop answering
    RESUME = "resume"  # answer again


class FaultMode(StrEnum):
    """How the simulated PLC link misbehaves (``NONE``: it does not)."""

    NONE = "none"
    REFUSE = "refuse"  # nothing listens: every connection attempt is refused
    SILENT = "silent"  # accepts and reads, never answers (nor acts on a MOVE)
    SHORT = "short"  # answers with too few bytes (the reply without its last byte)
    GARBAGE = "garbage"  # answers with bytes that cannot be a reply (all 0xFF)
    EXTRA = "extra"  # answers, then sends bytes nobody asked for
    CLOSE_MID_REPLY = "close_mid_reply"  # sends the first byte of the reply, then closes
    SLOW = "slow"  # answers after ``slow_reply_s`` (2 s: past the default 1.5 s timeout)
    FLAP = "flap"  # up for ``flap_period_s``, then down (dropped, refusing), and again
    # Bytes that put a client's stream out of step if it is not careful:
    TRAILING_BYTE = "trailing_byte"  # answers, then ``stray_byte`` ``stray_delay_s`` later
    DOUBLE_REPLY = "double_reply"  # answers, then the same reply again ``stray_delay_s`` later
    STREAM_JUNK = "stream_junk"  # answers, and sends junk every ``junk_period_s`` regardless


@dataclass(frozen=True, slots=True)
class MoveRecord:
    """One MOVE as the simulated PLC read it: on which session, from where, when."""

    session: int  # 1 for the first session accepted, 2 for the next...
    peer: str  # the client's address and port
    argument: int  # the target index as sent
    at: float  # wall clock


#: What EXTRA mode sends after each reply.
EXTRA_BYTES = b"\xaa\x55\x00"


@dataclass(slots=True)
class SimulatorSettings:
    """How the simulated PLC behaves on the wire (mutable: tests change it live)."""

    reply_delay_s: float = 0.0
    layout: ReplyLayout = field(default_factory=lambda: DEFAULT_LAYOUT)
    single_session: bool = True
    release_time_s: float = 0.0
    #: A session that sends nothing for this long is closed by the PLC (None: never).
    idle_drop_s: float | None = None
    #: Reply delay in ``FaultMode.SLOW``.
    slow_reply_s: float = 2.0
    #: Seconds up, then seconds down, in ``FaultMode.FLAP``.
    flap_period_s: float = 3.0
    #: A command byte: the reply faults (SILENT, SHORT, GARBAGE, EXTRA, CLOSE_MID_REPLY,
    #: SLOW, TRAILING_BYTE, DOUBLE_REPLY) hit only its replies, e.g. ``Command.MOVE`` to
    #: break a MOVE in flight.
    fault_only_on: int | None = None
    #: When TRAILING_BYTE and DOUBLE_REPLY send their extra bytes, after the reply. With a
    #: reply delay longer than this, they arrive while the client waits for its next reply.
    stray_delay_s: float = 0.02
    #: The byte TRAILING_BYTE sends: by default 0x15, "ready, stopped" as a status byte,
    #: the worst a shifted reading can show.
    stray_byte: int = 0x15
    #: STREAM_JUNK: seconds between junk writes, bytes per write, and the seed of the junk.
    junk_period_s: float = 0.05
    junk_length: int = 1
    junk_seed: int = 0


class SimulatorServer:
    """A TCP listener serving one carousel model, like the PLC on port 3200."""

    def __init__(
        self,
        model: CarouselModel,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: SimulatorSettings | None = None,
    ) -> None:
        self.model = model
        self.host = host
        self.port = port
        self.settings = settings or SimulatorSettings()
        self.stalled = False
        self.requests_served = 0
        self.connections_accepted = 0
        #: Every request read, by command byte (answered or not): ``[Command.MOVE]`` counts
        #: the MOVEs that reached the PLC.
        self.requests_received: Counter[int] = Counter()
        self.fault_mode = FaultMode.NONE
        self._listener: asyncio.Server | None = None
        self._session: _Session | None = None
        self._reopen: asyncio.TimerHandle | None = None
        self._stopping = False
        self._down = False  # REFUSE, or the down half of FLAP: not listening
        self._flapper: asyncio.Task[None] | None = None
        self._junker: asyncio.Task[None] | None = None
        #: Bytes written that answer no request (TRAILING_BYTE, DOUBLE_REPLY, STREAM_JUNK).
        self.stray_bytes_sent = 0
        #: Every MOVE read, in order, with the session it came on.
        self.move_log: list[MoveRecord] = []
        #: Sessions closed by the PLC because they were silent for ``idle_drop_s``.
        self.idle_drops = 0
        #: Told of every session opened, closed or refused, each session's first request
        #: and every MOVE read (a dict with
        #: ``event``, ``port``, ``at`` in wall-clock seconds and the event's details), so
        #: another process can follow the PLC (``simulate --move-log``).
        self.on_event: Callable[[dict[str, object]], None] | None = None

    def _tell(self, event: str, **details: object) -> None:
        if self.on_event is not None:
            self.on_event({"event": event, "port": self.port, "at": time.time(), **details})

    @property
    def moves_received(self) -> int:
        return self.requests_received[Command.MOVE]

    def faulty_for(self, command: int) -> FaultMode:
        """The fault mode that applies to the reply to ``command``."""
        only = self.settings.fault_only_on
        return self.fault_mode if only is None or only == command else FaultMode.NONE

    @property
    def session_open(self) -> bool:
        return self._session is not None

    @property
    def listening(self) -> bool:
        return self._listener is not None

    async def start(self) -> int:
        """Start listening; returns the bound port (useful with port 0)."""
        self._stopping = False
        await self._listen()
        return self.port

    async def stop(self) -> None:
        """Stop listening and close any session (like switching the PLC off)."""
        self._stopping = True
        self._stop_background()
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        await self._close_listener()
        if self._session is not None:
            self._session.abort()
            self._session = None

    def link(self, action: LinkAction | str) -> None:
        """Apply a link fault: drop the connection, stall, or resume answering."""
        action = LinkAction(action)
        if action is LinkAction.DROP:
            if self._session is not None:
                self._session.abort()
        else:
            self.stalled = action is LinkAction.STALL

    def set_fault_mode(self, mode: FaultMode | str) -> None:
        """Misbehave from now on as ``mode`` says (``FaultMode.NONE`` ends it)."""
        mode = FaultMode(mode)
        self.fault_mode = mode
        self._stop_background()
        if mode is FaultMode.REFUSE:
            self._go_down()
        elif mode is FaultMode.FLAP:
            self._flapper = asyncio.get_running_loop().create_task(self._flap())
        else:
            self._go_up()
            if mode is FaultMode.STREAM_JUNK:
                self._junker = asyncio.get_running_loop().create_task(self._junk())

    def _stop_background(self) -> None:
        for task in (self._flapper, self._junker):
            if task is not None:
                task.cancel()
        self._flapper = self._junker = None

    async def _junk(self) -> None:
        """STREAM_JUNK: bytes nobody asked for, at a steady pace, whatever is going on."""
        rng = random.Random(self.settings.junk_seed)  # nosec B311 - test noise, not crypto
        while True:
            await asyncio.sleep(self.settings.junk_period_s)
            if self._session is not None:
                self._session.write_stray(rng.randbytes(self.settings.junk_length))

    async def _flap(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flap_period_s)
            self._go_down()
            await asyncio.sleep(self.settings.flap_period_s)
            self._go_up()

    def _go_down(self) -> None:
        """Like a PLC switched off: the session dropped, new connections refused."""
        self._down = True
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._session is not None:
            self._session.abort()

    def _go_up(self) -> None:
        if not self._down:
            return
        self._down = False
        if self._stopping or self._listener is not None or self._session is not None:
            return
        loop = asyncio.get_running_loop()
        self._reopen = loop.call_later(0, lambda: loop.create_task(self._reopen_listener()))

    # -- listener management -------------------------------------------------------------

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: _Session(self), self.host, self.port, reuse_address=True
        )
        self.port = self._listener.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            with contextlib.suppress(Exception):
                await listener.wait_closed()

    def _session_opened(self, session: _Session) -> bool:
        """Accept or refuse a new session; returns False when it must be refused."""
        if (
            self._stopping
            or self._down
            or (self.settings.single_session and self._session is not None)
        ):
            return False
        self._session = session
        self.connections_accepted += 1
        session.number = self.connections_accepted
        if self.settings.single_session:
            # A single-session PLC refuses connections outright while one is open.
            listener, self._listener = self._listener, None
            if listener is not None:
                listener.close()
        return True

    def _session_closed(self, session: _Session) -> None:
        if self._session is not session:
            return
        self._session = None
        if self._stopping or self._down or self._listener is not None:
            return
        loop = asyncio.get_running_loop()
        self._reopen = loop.call_later(
            self.settings.release_time_s, lambda: loop.create_task(self._reopen_listener())
        )

    async def _reopen_listener(self) -> None:
        self._reopen = None
        if self._stopping or self._down or self._listener is not None:
            return
        try:
            await self._listen()
        except OSError as exc:  # the port is briefly unavailable: try again shortly
            log.warning("simulator on port %s could not listen again: %s", self.port, exc)
            loop = asyncio.get_running_loop()
            self._reopen = loop.call_later(0.1, lambda: loop.create_task(self._reopen_listener()))

    # -- request handling ----------------------------------------------------------------

    def _log_move(self, session: _Session, request: Request) -> None:
        if request.command == Command.MOVE and request.argument is not None:
            record = MoveRecord(session.number, session.peer, request.argument, time.time())
            self.move_log.append(record)
            self._tell(
                "move", session=record.session, peer=record.peer, argument=record.argument
            )

    def _answer(self, request: Request) -> bytes | None:
        """The reply the PLC program gives to one request (None: no reply at all)."""
        if request.command == Command.MOVE and request.argument is not None:
            self.model.move(request.argument)
        elif request.command != Command.STATUS:
            return None  # unknown command byte: the PLC program does not answer
        self.requests_served += 1
        return encode_reply(
            self.model.status_byte(), self.model.position_index, self.settings.layout
        )


class _Session(asyncio.Protocol):
    """One client connection to the simulated PLC."""

    def __init__(self, server: SimulatorServer) -> None:
        self._server = server
        self._parser = RequestParser()
        self._transport: asyncio.Transport | None = None
        self._pending: asyncio.Queue[Request] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.number = 0  # set when the server accepts the session
        self.peer = "?"
        self._last_request = 0.0  # loop clock
        self._idle_timer: asyncio.TimerHandle | None = None
        self.idle_dropped = False  # closed by the PLC for silence
        self.requested = False  # has sent a request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
        if not self._server._session_opened(self):
            self._server._tell("session_refused", peer=self.peer)
            transport.abort()
            self._transport = None
            return
        self._server._tell("session_opened", session=self.number, peer=self.peer)
        self._last_request = asyncio.get_running_loop().time()
        self._watch_idle()

    def _watch_idle(self) -> None:
        """Close the session once it has been silent for ``idle_drop_s`` (as the PLC may)."""
        limit = self._server.settings.idle_drop_s
        if limit is None or self._transport is None:
            return
        loop = asyncio.get_running_loop()
        silent = loop.time() - self._last_request
        if silent >= limit:
            log.info(
                "simulator on port %s: session %d silent %.1f s, dropped",
                self._server.port,
                self.number,
                silent,
            )
            self._server.idle_drops += 1
            self.idle_dropped = True
            self.abort()
            return
        self._idle_timer = loop.call_later(limit - silent, self._watch_idle)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        server = self._server
        for request in self._parser.feed(data):
            self._last_request = asyncio.get_running_loop().time()
            if not self.requested:
                # The client's first request on this session: for a gateway, its first
                # reading (a takeover's end, seen from the PLC).
                self.requested = True
                server._tell(
                    "first_request", session=self.number, peer=self.peer, command=request.command
                )
            server.requests_received[request.command] += 1
            server._log_move(self, request)
            if server.stalled or server.faulty_for(request.command) is FaultMode.SILENT:
                continue
            if self._delay(request) <= 0 and self._worker is None:
                self._reply(request, self._server._answer(request))
            else:
                self._pending.put_nowait(request)
                if self._worker is None:
                    self._worker = asyncio.get_running_loop().create_task(self._work())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:  # a refused connection was never a session
            self._server._tell(
                "session_closed",
                session=self.number,
                peer=self.peer,
                idle_dropped=self.idle_dropped,
            )
        self._transport = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._worker is not None:
            self._worker.cancel()
        self._server._session_closed(self)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def write_stray(self, data: bytes) -> None:
        """Write bytes that answer no request (if the session is still open)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
            self._server.stray_bytes_sent += len(data)

    def _delay(self, request: Request) -> float:
        settings = self._server.settings
        if self._server.faulty_for(request.command) is FaultMode.SLOW:
            return max(settings.reply_delay_s, settings.slow_reply_s)
        return settings.reply_delay_s

    async def _work(self) -> None:
        """Answer queued requests one by one, each after the PLC's reply delay."""
        try:
            while not self._pending.empty():
                request = self._pending.get_nowait()
                if request.command == Command.MOVE:
                    # The PLC acts on a MOVE when it reads it, then answers after its scan.
                    reply = self._server._answer(request)
                    await asyncio.sleep(self._delay(request))
                else:
                    await asyncio.sleep(self._delay(request))
                    reply = self._server._answer(request)
                if not self._server.stalled:
                    self._reply(request, reply)
        finally:
            self._worker = None

    def _reply(self, request: Request, reply: bytes | None) -> None:
        transport = self._transport
        if reply is None or transport is None:
            return
        match self._server.faulty_for(request.command):
            case FaultMode.SHORT:
                transport.write(reply[:-1])
            case FaultMode.GARBAGE:
                transport.write(b"\xff" * len(reply))
            case FaultMode.EXTRA:
                transport.write(reply + EXTRA_BYTES)
            case FaultMode.CLOSE_MID_REPLY:
                transport.write(reply[:1])
                transport.close()  # the byte goes out, then the connection ends
            case FaultMode.TRAILING_BYTE:
                transport.write(reply)
                self._later(bytes((self._server.settings.stray_byte,)))
            case FaultMode.DOUBLE_REPLY:
                transport.write(reply)
                self._later(reply)
            case _:
                transport.write(reply)

    def _later(self, data: bytes) -> None:
        delay = self._server.settings.stray_delay_s
        asyncio.get_running_loop().call_later(delay, self.write_stray, data)
