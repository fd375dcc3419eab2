"""When a machine reads, and from where: the STATUS poll loop and the Modbus loop.

Port-3200 machines poll STATUS (``poll_idle_s`` while idle, back to back while active).
A machine configured with ``telemetry = "modbus"`` reads D0/D2/D1000 over Modbus TCP
instead (~50 ms against 0.2–0.8 s) and uses port 3200 for commands only; when Modbus gives
no good reading for ``modbus_fallback_s`` it polls port 3200 until Modbus answers again
(the rules are :class:`TelemetryPolicy`'s). Clients never wait on polling: they read the
snapshot the readings keep fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from carousel_gateway.config import MachineConfig
from carousel_gateway.fleet.events import EventBus, TelemetrySource
from carousel_gateway.fleet.readings import MachineReadings
from carousel_gateway.plc.connection import ConnectionState, PlcError
from carousel_gateway.plc.protocol import Reply

__all__ = [
    "MachinePolling",
]

log = logging.getLogger(__name__)


class MachinePolling(MachineReadings):
    """A machine's reading loop, started and stopped with its links."""

    def __init__(
        self,
        config: MachineConfig,
        bus: EventBus,
        *,
        port: int | None = None,
        modbus_port: int | None = None,
    ) -> None:
        super().__init__(config, bus, port=port, modbus_port=modbus_port)
        self._poller: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.connection.start()
        if self.modbus is not None:
            self.modbus.start()
        if self._poller is None:
            loop = asyncio.get_running_loop()
            self.telemetry_policy.restart_clock(loop.time())
            poll = self._poll_loop() if self.modbus is None else self._modbus_poll_loop()
            self._poller = loop.create_task(poll, name=f"poll-{self.id}")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await self.connection.close()
        if self.modbus is not None:
            await self.modbus.close()
        self.abandon_move()

    # -- port-3200 polling ----------------------------------------------------------------

    async def _poll_loop(self) -> None:
        """STATUS polls: every ``poll_idle_s`` while idle, back to back while active.

        While a command is talking to the PLC there is no poll: its own replies are
        readings, and a poll would only queue on the single link and hold the command's
        next request back by a PLC round trip.
        """
        loop = asyncio.get_running_loop()
        while True:
            if self.connection.state is not ConnectionState.CONNECTED:
                await self.connection.wait_state_change()
                continue
            if self._command_in_flight:
                await self._wake.sleep(loop, None)  # woken when the command is done
                continue
            if self._back_to_back():
                answered, last = await self._burst(loop)
                if last is not None and not self._command_in_flight:
                    # Ended as the machine fell idle: the usual pause after that reading.
                    delay = self._poll_delay(last, loop.time())
                    if delay > 0:
                        await self._wake.sleep(loop, delay)
                if (
                    answered
                    or self._command_in_flight
                    or not self._back_to_back()
                    or self.connection.state is not ConnectionState.CONNECTED
                ):
                    continue
                # A burst that could not start (the link held by a request): one poll the
                # usual way, which waits for the link, never a burst retried in a loop.
            started = loop.time()
            try:
                reply = await self.connection.status()
            except PlcError:
                continue  # the connection callback reports it; the next turn waits
            self._apply_reply(reply, confirmed=False)
            now = loop.time()
            self._check_deadline(now)
            delay = self._poll_delay(started, now)
            if delay > 0:
                # Cut short when a command starts or ends, or a link changes state.
                await self._wake.sleep(loop, delay)

    def _back_to_back(self) -> bool:
        """Polls follow each other at ``poll_min_gap_s`` now (the machine is active)."""
        return self.config.poll_back_to_back and self.active

    async def _burst(self, loop: asyncio.AbstractEventLoop) -> tuple[int, float | None]:
        """Back-to-back polls driven by the link's own callbacks, while the machine stays
        active: a timer sends each STATUS (``PlcConnection.try_status``, the link's lock
        held to the reply like any request), the reply's callback applies the reading and
        sets the next timer. No task switch per poll: a busy machine with a fast PLC is
        polled ~50 times a second, and two task switches were most of each poll's cost.

        The burst ends, and this task takes over again, when the machine is no longer
        active, a command wants the link, a request fails or the link changes state (its
        ``Wakeup`` is set: the same events that cut the task's own pauses short). Returns
        how many polls were answered, and when the last one was sent if the burst ended on
        its reading (the machine idle now; else None).
        """
        timer: asyncio.TimerHandle | None = None
        over = False
        started = 0.0
        last: float | None = None
        answered = 0

        def end() -> None:
            nonlocal over
            if not over:  # a reply of an ended burst wakes nobody
                over = True
                self._wake.set()

        def send() -> None:
            nonlocal timer, started
            timer = None
            if over:
                return
            if (
                self._command_in_flight
                or not self._back_to_back()
                or self.connection.state is not ConnectionState.CONNECTED
            ):
                end()
                return
            started = loop.time()
            try:
                sent = self.connection.try_status(replied)
            except PlcError:
                sent = False
            except Exception:
                # Never a burst left hanging (the machine would no longer be read).
                log.exception("%s: STATUS not sent", self.id)
                sent = False
            if not sent:
                end()  # the link is taken or down: the task's loop sorts it out

        def replied(outcome: Reply | PlcError) -> None:
            nonlocal timer, last, answered
            if isinstance(outcome, PlcError):
                last = None
                end()  # the connection callback reports it; the task's next turn waits
                return
            answered += 1
            try:
                self._apply_reply(outcome, confirmed=False)
                now = loop.time()
                self._check_deadline(now)
            except Exception:
                log.exception("%s: reading not applied", self.id)
                last = None
                end()
                return
            if over:
                return
            if not self._back_to_back():
                last = started
                end()
                return
            due = started + self.config.poll_min_gap_s
            if due > now:
                timer = loop.call_at(due, send)
            else:
                send()

        loop.call_soon(send)  # after this task's pause below is in place
        try:
            await self._wake.sleep(loop, None)
        finally:
            over = True
            if timer is not None:
                timer.cancel()
        return answered, last

    @property
    def active(self) -> bool:
        """A move or command pending, or the machine seen running (moved from its panel)."""
        if self.busy:
            return True
        status = self.snapshot.status
        return status is not None and status.running

    def _poll_delay(self, started: float, now: float) -> float:
        """Seconds from ``now`` to the next STATUS request, the last one sent at ``started``.

        Idle: ``poll_idle_s`` after the reply. Active: back to back, the next request as
        soon as the reply is in but never sooner than ``poll_min_gap_s`` after the last one
        (with the field's 0.2-0.8 s replies, at once), so a change reaches clients within
        one PLC round trip; or, with ``poll_back_to_back`` off, ``poll_active_s`` after the
        reply.
        """
        config = self.config
        if not self.active:
            return config.poll_idle_s
        if config.poll_back_to_back:
            return started + config.poll_min_gap_s - now
        return config.poll_active_s

    # -- Modbus telemetry -----------------------------------------------------------------

    async def _modbus_poll_loop(self) -> None:
        """Modbus readings; port-3200 STATUS polling only while Modbus is failing."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._telemetry_turn(started)
            self._check_deadline(loop.time())
            interval = self._next_reading_in(loop.time(), started)
            await self._wake.sleep(loop, interval)

    async def _telemetry_turn(self, now: float) -> None:
        """One reading from the best source that answers."""
        assert self.modbus is not None
        if self.modbus.state is ConnectionState.CONNECTED and await self._read_modbus():
            return
        if self.connection.state is not ConnectionState.CONNECTED:
            return
        if self.telemetry_source is TelemetrySource.MODBUS:
            if not self.telemetry_policy.fallback_due(now):
                return  # a short Modbus hiccup: its link is being re-established
            reason = self.modbus.last_error or "no reading"
            self._set_telemetry_source(TelemetrySource.PORT3200, f"Modbus failing: {reason}")
        try:
            reply = await self.connection.status()
        except PlcError:
            return  # the connection callback reports it
        self._apply_reply(reply, confirmed=False)

    def _next_reading_in(self, now: float, started: float) -> float | None:
        """Seconds to the next reading; None while no link is up (a state change wakes us).

        Modbus readings start every ``modbus_poll_*_s`` (the reading's own ~2 x 50 ms is
        not added to the period); port-3200 polls follow the cadence of a port-3200 machine
        (``_poll_delay``: the idle interval, or back to back while active).
        """
        assert self.modbus is not None
        modbus_up = self.modbus.state is ConnectionState.CONNECTED
        plc_up = self.connection.state is ConnectionState.CONNECTED
        if not modbus_up and not plc_up:
            return None
        if self.telemetry_source is TelemetrySource.PORT3200:
            return max(0.0, self._poll_delay(started, now))
        return self.telemetry_policy.modbus_interval(now, started, busy=self.busy, plc_up=plc_up)

    async def _read_modbus(self) -> bool:
        """One Modbus reading into the snapshot; False when there was no good reading."""
        assert self.modbus is not None
        try:
            reading = await self.modbus.read()
        except PlcError as exc:
            log.debug("%s: Modbus reading failed: %s", self.id, exc)
            return False
        return self._take_modbus_reading(reading)
