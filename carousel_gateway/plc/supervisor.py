"""One reconnect loop for every PLC link (port 3200 and Modbus alike).

A :class:`LinkSupervisor` keeps one link up: it opens it, holds it until it closes,
re-opens it with exponential backoff, and stops trying for a cooldown once the circuit
breaker opens. It owns the link's :class:`ConnectionState`, its reconnect count, its last
error and its log lines, so both links report the same way. A link only says how to open
and close its transport (:class:`SupervisedLink`) and reports each exchange's outcome
(:meth:`LinkSupervisor.succeeded`, :meth:`LinkSupervisor.fail`).

A failure is reported at once (the state turns ``disconnected`` before the supervisor task
runs), so requests queued behind a failed one fail fast instead of using a dead link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from carousel_gateway.plc.errors import ConnectFailed, PlcNotConnected
from carousel_gateway.plc.resilience import CircuitBreaker

__all__ = [
    "CLOSED_BY_GATEWAY",
    "ConnectionState",
    "DelayPolicy",
    "LinkSupervisor",
    "StateListener",
    "SupervisedConnection",
    "SupervisedLink",
]

log = logging.getLogger(__name__)

#: The reason given when the gateway closes a link itself (logged quietly, not as a fault).
CLOSED_BY_GATEWAY = "closed by the gateway"


class ConnectionState(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    ERROR = "error"  # repeated failures: the circuit breaker is open


StateListener = Callable[[ConnectionState, str | None], None]


class DelayPolicy(Protocol):
    """How long to wait before reconnect attempt ``attempt`` (1 for the first retry)."""

    def delay(self, attempt: int) -> float: ...


class SupervisedLink:
    """One open transport as its supervisor sees it: usable until ``closed`` completes.

    ``closed`` completes with the reason the link ended; ``failed`` is set once the link's
    failure has been counted (so a second error on the same link is not counted twice).
    """

    def __init__(self) -> None:
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.failed = False

    @property
    def usable(self) -> bool:
        return not self.closed.done()

    def lost(self, reason: str) -> None:
        """The transport ended (called by the link itself)."""
        if not self.closed.done():
            self.closed.set_result(reason)

    def abort(self, reason: str) -> None:
        """Close the transport now (the peer must see it closed at once)."""
        raise NotImplementedError


L = TypeVar("L", bound=SupervisedLink)


class LinkSupervisor(Generic[L]):
    """Keeps one link up in a background task; see the module docstring."""

    def __init__(
        self,
        open_link: Callable[[], Awaitable[L]],
        *,
        title: str,
        name: str,
        backoff: DelayPolicy,
        breaker: CircuitBreaker,
        task_name: str,
        on_state_change: StateListener | None = None,
        quiet: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``open_link`` opens one link or raises :class:`ConnectFailed` (its own timeout
        included); ``title`` and ``name`` start every log line and reason ("PLC m1");
        ``quiet`` logs at DEBUG only (for a link whose listener logs the change itself)."""
        self.title = title
        self.name = name
        self.breaker = breaker
        self.state = ConnectionState.DISCONNECTED
        self.last_error: str | None = None
        self.connected_since: float | None = None  # wall clock (time.time())
        self.connects = 0
        self._open_link = open_link
        self._backoff = backoff
        self._task_name = task_name
        self._on_state_change = on_state_change
        self._quiet = quiet
        self._clock = clock
        self._link: L | None = None
        self._task: asyncio.Task[None] | None = None
        self._state_changed = asyncio.Event()
        self._worked = False  # the current link completed an exchange
        self._failure_counted = False  # the current link's failure reached the breaker
        #: Set while reconnecting is allowed; cleared by ``abort(hold=True)`` (a fenced
        #: gateway opens no session until :meth:`start` again).
        self._may_connect = asyncio.Event()
        self._may_connect.set()
        #: Until this clock value, a failed connect is expected (:meth:`expect_refusals`).
        self._refusals_expected_until = float("-inf")

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start keeping the link up in the background (again, after a held abort)."""
        self._may_connect.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._task_name)

    async def close(self) -> None:
        """Close the link for good (shutdown); its transport is closed before this returns."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._set_state(ConnectionState.DISCONNECTED, CLOSED_BY_GATEWAY)

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    def abort(self, reason: str, *, hold: bool = False) -> None:
        """Abort the current link's transport now (synchronously: nothing more is written
        on it); the loop then sees it closed. ``close()`` stops reconnecting; ``hold``
        stops it at once, until :meth:`start` (a fenced gateway must not take a
        single-session PLC again while it stands down: the new active needs it)."""
        if hold:
            self._may_connect.clear()
        link = self._link
        if link is not None:
            link.failed = True  # not a PLC fault: not counted by the breaker
            link.abort(reason)
            self._set_state(ConnectionState.DISCONNECTED, reason)

    def expect_refusals(self, window_s: float) -> None:
        """For the next ``window_s`` seconds a refused connect is expected, not a fault:
        a single-session PLC refuses a new session until the previous one (another
        gateway's, before a takeover) has ended and its release time has passed. Retry
        at the first backoff step meanwhile and keep the breaker out of it, so its
        cooldown is not added to the takeover; failures of an earlier spell are forgotten."""
        self.breaker.record_success()
        self._refusals_expected_until = self._clock() + window_s

    async def wait_state_change(self) -> ConnectionState:
        """Wait until the connection state changes (no polling)."""
        self._state_changed.clear()
        await self._state_changed.wait()
        return self.state

    # -- what the link reports ------------------------------------------------------------

    def usable_link(self) -> L:
        """The live link, or :class:`PlcNotConnected` (nothing must be sent then)."""
        link = self._link
        if self.state is ConnectionState.CONNECTED and link is not None and not link.usable:
            # Closed, and the supervisor has not run yet: say so now, so nobody writes into
            # a dead link (nor loops on it) meanwhile.
            reason = link.closed.result() if link.closed.done() else "closing"
            self.last_error = self.last_error or f"connection lost: {reason}"
            self._set_state(ConnectionState.DISCONNECTED, self.last_error)
            link = None
        if self.state is not ConnectionState.CONNECTED or link is None:
            raise PlcNotConnected(self.not_connected_reason())
        return link

    def not_connected_reason(self) -> str:
        if self.state is ConnectionState.ERROR:
            return f"{self.title} {self.name} unreachable (circuit open): {self.last_error}"
        detail = f": {self.last_error}" if self.last_error else ""
        return f"{self.title} {self.name} not connected{detail}"

    def succeeded(self) -> None:
        """An exchange worked: the breaker closes, and a later drop reconnects at once."""
        self.breaker.record_success()
        self._worked = True

    def fail(self, link: L, reason: str) -> None:
        """An exchange failed on ``link``: count it once and close that link.

        Only that link is closed (never one re-established meanwhile), and if it is the
        current one the state says so at once.
        """
        if link.failed:
            return  # already counted (e.g. an out-of-step fault, then its request's error)
        link.failed = True
        self.last_error = reason
        self._count_failure()
        link.abort(reason)
        if link is self._link:
            self._failure_counted = True
            self._set_state(ConnectionState.DISCONNECTED, reason)

    # -- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while True:
            if not self._may_connect.is_set():
                await self._may_connect.wait()
                continue
            wait = self.breaker.remaining(self._clock())
            if wait > 0:
                self._set_state(ConnectionState.ERROR, self.last_error)
                await asyncio.sleep(wait)
                continue
            try:
                link = await self._open_link()
            except ConnectFailed as exc:
                self.last_error = str(exc)
                if self._refusals_expected():
                    self._set_state(ConnectionState.DISCONNECTED, self.last_error)
                    await asyncio.sleep(self._backoff.delay(1))
                    continue
                attempt += 1
                self.breaker.record_failure(self._clock())
                tripped = self.breaker.remaining(self._clock()) > 0
                state = ConnectionState.ERROR if tripped else ConnectionState.DISCONNECTED
                self._set_state(state, self.last_error)
                await asyncio.sleep(self._backoff.delay(attempt))
                continue
            if not self._may_connect.is_set():
                link.abort(CLOSED_BY_GATEWAY)  # held while it was connecting: not kept
                continue
            reason = await self._hold(link)
            self.last_error = self.last_error or f"connection lost: {reason}"
            self._set_state(ConnectionState.DISCONNECTED, self.last_error)
            if self._worked:
                attempt = 0  # a link that worked: try again at once
                continue
            if self._refusals_expected():
                # A PLC that accepts and at once closes (or a proxy before a refusing one)
                # while its previous session is still ending: as refused, the first step.
                await asyncio.sleep(self._backoff.delay(1))
                continue
            # A link that never worked (accepts then closes, or never answers): back off,
            # or a flapping PLC would be hammered in a tight loop.
            attempt += 1
            if not self._failure_counted:
                self.breaker.record_failure(self._clock())
            await asyncio.sleep(self._backoff.delay(attempt))

    def _refusals_expected(self) -> bool:
        return self._clock() < self._refusals_expected_until

    def _count_failure(self) -> None:
        """An exchange failed: the breaker counts it, unless refusals are expected (a
        link a PLC closes at once while its previous session is still ending)."""
        if not self._refusals_expected():
            self.breaker.record_failure(self._clock())

    async def _hold(self, link: L) -> str:
        """Make ``link`` the current one until it closes; returns why it closed."""
        self._link = link
        self._worked = False
        self._failure_counted = False
        self.connects += 1
        self.connected_since = time.time()
        self._set_state(ConnectionState.CONNECTED, None)
        try:
            return await asyncio.shield(link.closed)
        finally:
            self._link = None
            self.connected_since = None
            # Closed at once, also when the gateway closes the link (a single-session PLC
            # must be free for the next link).
            link.abort(CLOSED_BY_GATEWAY if not link.closed.done() else link.closed.result())

    def _set_state(self, state: ConnectionState, reason: str | None) -> None:
        if state is ConnectionState.CONNECTED:
            self.last_error = None
        if state is self.state:
            return
        self.state = state
        self._state_changed.set()
        if state is ConnectionState.CONNECTED:
            log.log(self._log_level(state, reason), "%s %s connected", self.title, self.name)
        else:
            log.log(
                self._log_level(state, reason),
                "%s %s %s: %s",
                self.title,
                self.name,
                state.value,
                reason,
            )
        if self._on_state_change is not None:
            self._on_state_change(state, reason)

    def _log_level(self, state: ConnectionState, reason: str | None) -> int:
        if self._quiet:
            return logging.DEBUG
        routine = state is ConnectionState.CONNECTED or reason == CLOSED_BY_GATEWAY
        return logging.INFO if routine else logging.WARNING


class SupervisedConnection(Generic[L]):
    """The face both links show the gateway: their supervisor's lifecycle and state."""

    supervisor: LinkSupervisor[L]

    def start(self) -> None:
        """Start keeping the link up in the background."""
        self.supervisor.start()

    async def close(self) -> None:
        """Close the link for good (shutdown)."""
        await self.supervisor.close()

    async def wait_state_change(self) -> ConnectionState:
        """Wait until the connection state changes (no polling)."""
        return await self.supervisor.wait_state_change()

    @property
    def state(self) -> ConnectionState:
        return self.supervisor.state

    @property
    def last_error(self) -> str | None:
        return self.supervisor.last_error

    @property
    def connected_since(self) -> float | None:
        """Wall clock (``time.time()``) of the current link's start; None while down."""
        return self.supervisor.connected_since

    @property
    def connects(self) -> int:
        return self.supervisor.connects

    @property
    def reconnects(self) -> int:
        return self.supervisor.reconnects

    @property
    def breaker(self) -> CircuitBreaker:
        return self.supervisor.breaker
