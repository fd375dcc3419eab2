"""One carousel as the gateway sees it: live snapshot, poll loop, safe command execution.

The poll loop keeps an immutable :class:`Snapshot` fresh (faster while a move is pending)
and publishes events only on change. Commands run one at a time: validation, interlocks on
a fresh reading, the MOVE itself, then a :class:`MoveTracker` until arrival or failure.
Clients never wait on polling: they read the snapshot.

Telemetry (where readings come from) is port-3200 STATUS polling by default. A machine
configured with ``telemetry = "modbus"`` reads D0/D2/D1000 over Modbus TCP instead (~50 ms
against 0.2–0.8 s) and uses port 3200 for commands only; when Modbus gives no good reading
for ``modbus_fallback_s`` it polls port 3200 until Modbus answers again, and says so with
:class:`TelemetrySourceChanged`. Modbus also shows the latched target (D2): an idle machine
whose target is not where it stands is reported (:class:`PositionDesync`), never acted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from carousel_gateway.config import MachineConfig
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import (
    CommandAccepted,
    CommandJournal,
    CommandRefused,
    ConnectionChanged,
    EventBus,
    FaultCleared,
    FaultRaised,
    MoveCompleted,
    MoveFailed,
    Origin,
    PositionDesync,
    PositionDesyncCleared,
    Snapshot,
    StatusChanged,
    TelemetrySource,
    TelemetrySourceChanged,
)
from carousel_gateway.fleet.lifecycle import Arrived, MoveTracker, Verdict, stopping_conditions
from carousel_gateway.plc.connection import (
    ConnectionSettings,
    ConnectionState,
    PlcConnection,
    PlcError,
    PlcNotConnected,
    PlcTimeout,
)
from carousel_gateway.plc.modbus import (
    ModbusSettings,
    ModbusTelemetry,
    RegisterMap,
    TelemetryReading,
)
from carousel_gateway.plc.protocol import Command, Reply
from carousel_gateway.plc.resilience import Backoff
from carousel_gateway.plc.status import StatusKey

log = logging.getLogger(__name__)

RESULT_OK = "Comando ejecutado correctamente"
RESULT_SKIPPED = "Ya en la posición solicitada: no se envió el movimiento"
RESULT_STATUS = "Estado leído correctamente"

#: The refusal reason while a MOVE's outcome is unknown (sent, no trustworthy reply).
PREVIOUS_MOVE_UNCONFIRMED = "previous_move_unconfirmed"

#: Port-3200 readings taken for a MOVE's interlocks before giving up on two that agree.
INTERLOCK_READINGS_MAX = 4

#: Consecutive idle readings with D2 != D0 before a desync is reported: one reading could
#: catch a move started by someone else between the PLC's writes of D2 and RUN.
DESYNC_CONFIRM_READINGS = 2

_command_ids = itertools.count(1)
_T = TypeVar("_T")


class MoveOutcomeUnknown(GatewayError):
    """``MOVE_OUTCOME_UNKNOWN``: the MOVE was written, its reply never came or could not
    be trusted. The command is journalled as sent (never as refused). ``outcome`` is the
    move's outcome to come: a later reading still settles it (arrived, or failed)."""

    outcome: asyncio.Future[MoveCompleted | MoveFailed] | None = None


@dataclass(frozen=True, slots=True)
class ExecutedCommand:
    """What ``execute`` returns: the accepted command and, for a move, its outcome to come."""

    accepted: CommandAccepted
    outcome: asyncio.Future[MoveCompleted | MoveFailed] | None = None


@dataclass(slots=True)
class _ActiveMove:
    command_id: int
    origin: Origin
    target: int  # API numbering
    tracker: MoveTracker
    future: asyncio.Future[MoveCompleted | MoveFailed]
    start_index: int | None = None


def connection_settings(config: MachineConfig, port: int | None = None) -> ConnectionSettings:
    return ConnectionSettings(
        host=config.host,
        port=config.port if port is None else port,
        layout=config.reply.to_layout(),
        connect_timeout_s=config.connect_timeout_s,
        request_timeout_s=config.request_timeout_s,
        backoff=Backoff(config.backoff_initial_s, config.backoff_max_s),
        breaker_threshold=config.breaker_threshold,
        breaker_cooldown_s=config.breaker_cooldown_s,
        positions=config.positions,
    )


def modbus_settings(config: MachineConfig, port: int | None = None) -> ModbusSettings:
    return ModbusSettings(
        host=config.host,
        port=config.modbus_port if port is None else port,
        unit=config.modbus_unit,
        registers=RegisterMap(
            position=config.position_register,
            target=config.target_register,
            status=config.status_register,
        ),
        connect_timeout_s=config.connect_timeout_s,
        request_timeout_s=config.modbus_timeout_s,
        backoff=Backoff(config.backoff_initial_s, config.backoff_max_s),
        breaker_threshold=config.breaker_threshold,
        breaker_cooldown_s=config.breaker_cooldown_s,
    )


class Machine:
    """A carousel: its PLC link(s), its latest snapshot, its command path."""

    def __init__(
        self,
        config: MachineConfig,
        bus: EventBus,
        *,
        port: int | None = None,
        modbus_port: int | None = None,
        command_journal: CommandJournal | None = None,
    ) -> None:
        self.config = config
        self.id = config.id
        self.bus = bus
        #: Awaited with each command's record before the result is published, so that no
        #: client ever holds a result the journal does not have.
        self.command_journal = command_journal
        self.connection = PlcConnection(
            connection_settings(config, port),
            name=config.id,
            on_state_change=self._on_connection_state,
        )
        self.snapshot = Snapshot(machine_id=config.id)
        self.last_outcome: MoveCompleted | MoveFailed | None = None
        self.bad_replies = 0
        # Telemetry diagnostics: the Modbus reader (None on port-3200 machines; its
        # last_reading holds the raw registers), the source in use, the fallbacks so far,
        # and the position desync being reported (None when there is none).
        self.modbus: ModbusTelemetry | None = None
        if config.telemetry == "modbus":
            self.modbus = ModbusTelemetry(
                modbus_settings(config, modbus_port),
                name=f"{config.id}/modbus",
                on_state_change=self._on_modbus_state,
            )
        self.telemetry_source = (
            TelemetrySource.MODBUS if self.modbus is not None else TelemetrySource.PORT3200
        )
        self.telemetry_fallbacks = 0
        self.position_desync: PositionDesync | None = None
        self._desync_readings = 0
        self._modbus_ok_at = 0.0  # loop time of the last good Modbus reading (or the start)
        self._command_in_flight = False
        self._move: _ActiveMove | None = None
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.connection.start()
        if self.modbus is not None:
            self.modbus.start()
        if self._poller is None:
            loop = asyncio.get_running_loop()
            self._modbus_ok_at = loop.time()
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

    # -- numbering ------------------------------------------------------------------------

    def to_api_position(self, index: int) -> int:
        return index + self.config.position_base

    def to_index(self, position: int) -> int:
        return position - self.config.position_base

    @property
    def first_position(self) -> int:
        return self.config.position_base

    @property
    def last_position(self) -> int:
        return self.config.positions - 1 + self.config.position_base

    @property
    def busy(self) -> bool:
        return self._command_in_flight or self._move is not None

    @property
    def move_outcome_unknown(self) -> bool:
        """A MOVE was sent with no trustworthy reply, and no reading has settled it yet."""
        return self._move is not None and self._move.tracker.outcome_unknown

    @property
    def active_target(self) -> int | None:
        return self._move.target if self._move is not None else None

    # -- commands -------------------------------------------------------------------------

    async def execute(
        self, command: int, argument: int | None, origin: Origin | None = None
    ) -> ExecutedCommand:
        """Run one command; raises :class:`GatewayError` with a precise code when refused."""
        origin = origin or Origin()
        command_id = next(_command_ids)
        try:
            return await self._execute(command_id, command, argument, origin)
        except MoveOutcomeUnknown:
            raise  # journalled as sent, not refused
        except GatewayError as exc:
            refused = CommandRefused(
                self.id,
                time.time(),
                command_id=command_id,
                command=command,
                argument=argument,
                code=exc.code.value,
                message=exc.message,
                reasons=exc.reasons,
                origin=origin,
            )
            await self._journal(refused)
            self.bus.publish(refused)
            raise

    def validate(self, command: int, argument: int | None) -> None:
        """Check a command without sending anything (``INVALID_COMMAND`` on failure)."""
        if isinstance(command, bool) or not isinstance(command, int):
            raise self._error(ErrorCode.INVALID_COMMAND, "command must be an integer")
        if not 0 <= command <= 255:  # a command is one byte on the wire
            raise self._error(ErrorCode.INVALID_COMMAND, "command must be an integer in 0..255")
        if command not in self.config.allowed_commands:
            allowed = ", ".join(str(c) for c in self.config.allowed_commands)
            raise self._error(
                ErrorCode.INVALID_COMMAND,
                f"command {command} is not allowed on {self.id} (allowed: {allowed})",
            )
        if command == Command.MOVE:
            if argument is None:
                raise self._error(ErrorCode.INVALID_COMMAND, "a move needs an argument")
            if isinstance(argument, bool) or not isinstance(argument, int):
                raise self._error(ErrorCode.INVALID_COMMAND, "argument must be an integer")
            if not self.first_position <= argument <= self.last_position:
                shown = argument if -(2**31) <= argument < 2**31 else "given"
                raise self._error(
                    ErrorCode.INVALID_COMMAND,
                    f"position {shown} is outside {self.first_position}.."
                    f"{self.last_position} on {self.id}",
                )
        elif argument is not None and (
            isinstance(argument, bool) or not isinstance(argument, int) or not 0 <= argument <= 255
        ):
            raise self._error(ErrorCode.INVALID_COMMAND, "argument must be an integer in 0..255")

    def check_free(self) -> None:
        """Raise if a command or a move holds the machine (one command at a time)."""
        if self._command_in_flight:
            raise self._error(ErrorCode.BUSY, f"a command is already in flight on {self.id}")
        move = self._move
        if move is None:
            return
        if move.tracker.outcome_unknown:
            raise self._error(
                ErrorCode.MACHINE_NOT_READY,
                f"{self.id}: the MOVE to position {move.target} was sent but its outcome is "
                "unknown; no other MOVE until a reading shows the carousel stopped, "
                f"{self.config.move_start_timeout_s:g} s after that MOVE",
                reasons=(PREVIOUS_MOVE_UNCONFIRMED,),
            )
        raise self._error(ErrorCode.BUSY, f"{self.id} is moving to position {move.target}")

    def check_interlocks(self, snapshot: Snapshot | None = None) -> None:
        """Raise why a move would be refused now, judged on ``snapshot`` (default: latest)."""
        snapshot = snapshot or self.snapshot
        if snapshot.connection is not ConnectionState.CONNECTED:
            raise self._error(
                ErrorCode.CONNECTION_ERROR, f"PLC of {self.id} is {snapshot.connection.value}"
            )
        status = snapshot.status
        if status is None:
            raise self._error(ErrorCode.CONNECTION_ERROR, f"no status read yet from {self.id}")
        reasons = stopping_conditions(status)
        if reasons:
            texts = "; ".join(b.text for b in status.blockers() if b.key.value in reasons)
            raise self._error(
                ErrorCode.MACHINE_NOT_READY, f"{self.id} cannot move: {texts}", reasons=reasons
            )
        if status.running:
            raise self._error(
                ErrorCode.BUSY, f"{self.id} is moving", reasons=(StatusKey.RUN.value,)
            )

    async def _execute(
        self, command_id: int, command: int, argument: int | None, origin: Origin
    ) -> ExecutedCommand:
        self.validate(command, argument)
        self.check_free()
        self._command_in_flight = True
        self._wake.set()
        try:
            if command == Command.MOVE:
                assert argument is not None
                return await self._execute_move(command_id, argument, origin)
            return await self._execute_other(command_id, command, argument, origin)
        finally:
            self._command_in_flight = False
            self._wake.set()  # polling resumes (back to back if a move is now pending)

    async def _execute_move(
        self, command_id: int, position: int, origin: Origin
    ) -> ExecutedCommand:
        # Interlocks are judged on a fresh reading, never on a possibly stale snapshot, and
        # on port 3200 on the reading before it too (see _interlock_readings).
        readings = await self._interlock_readings()
        if all(self.to_api_position(r.position_index) == position for r in readings):
            accepted = self._accepted(command_id, Command.MOVE, position, origin, 0.0, skipped=True)
            await self._publish_accepted(accepted)
            return ExecutedCommand(accepted)
        start = self.snapshot.position
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        written_at = loop.time()
        try:
            reply = await self.connection.move(self.to_index(position))
        except PlcNotConnected as exc:
            raise self._error(ErrorCode.CONNECTION_ERROR, str(exc)) from None
        except PlcError as exc:
            # The bytes went out; whether the PLC took them nobody knows.
            latency = time.perf_counter() - started
            raise await self._move_outcome_unknown(
                command_id, position, origin, start, written_at, latency, exc
            ) from None
        latency = time.perf_counter() - started
        now = loop.time()
        accepted = self._accepted(command_id, Command.MOVE, position, origin, latency)
        # The record is on disk before anything about this move is published. Tracking
        # starts after it; an arrival meanwhile is still seen (it is a state, not an edge).
        await self._journal(accepted)
        self._track(command_id, origin, position, start, now, acknowledged=True)
        self.bus.publish(accepted)
        assert self._move is not None
        outcome = self._move.future
        self._clear_desync()  # the MOVE has overwritten the latched target
        self._apply_command_reply(reply)  # the MOVE's own reply is a reading too
        return ExecutedCommand(accepted, outcome)

    async def _move_outcome_unknown(
        self,
        command_id: int,
        position: int,
        origin: Origin,
        start: int | None,
        written_at: float,
        latency: float,
        exc: PlcError,
    ) -> MoveOutcomeUnknown:
        """A MOVE written with no trustworthy reply: journal it as sent, keep following the
        carousel (a later arrival is still reported), and lock out other MOVEs until a
        reading settles it. Returns the error to raise."""
        sent = replace(
            self._accepted(command_id, Command.MOVE, position, origin, latency),
            result=f"MOVE enviado sin respuesta fiable: {exc}",
            outcome_unknown=True,
        )
        await self._journal(sent)
        self._track(command_id, origin, position, start, written_at, acknowledged=False)
        self._clear_desync()
        log.warning(
            "%s: MOVE to position %d sent, outcome unknown (%s); other MOVEs are refused "
            "until a reading settles it",
            self.id,
            position,
            exc,
        )
        unknown = MoveOutcomeUnknown(
            ErrorCode.MOVE_OUTCOME_UNKNOWN,
            f"MOVE to position {position} was sent to {self.id} but {exc}; it may be moving. "
            "It was not retried; move_completed or move_failed follows once a reading tells",
            machine_id=self.id,
            reasons=(PREVIOUS_MOVE_UNCONFIRMED,),
        )
        assert self._move is not None
        unknown.outcome = self._move.future
        return unknown

    def _track(
        self,
        command_id: int,
        origin: Origin,
        position: int,
        start: int | None,
        started_at: float,
        *,
        acknowledged: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._move = _ActiveMove(
            command_id,
            origin,
            position,
            MoveTracker(
                self.to_index(position),
                started_at=started_at,
                timeout_s=self.config.move_timeout_s,
                start_timeout_s=self.config.move_start_timeout_s,
                acknowledged=acknowledged,
            ),
            loop.create_future(),
            None if start is None else self.to_index(start),
        )

    async def _execute_other(
        self, command_id: int, command: int, argument: int | None, origin: Origin
    ) -> ExecutedCommand:
        started = time.perf_counter()
        if command == Command.STATUS:
            reply = await self._request(lambda: self.connection.status())
            result = RESULT_STATUS
        else:
            reply = await self._request(lambda: self.connection.raw(command, argument))
            result = RESULT_OK
        latency = time.perf_counter() - started
        self._apply_command_reply(reply)
        accepted = self._accepted(command_id, command, argument, origin, latency, result)
        await self._publish_accepted(accepted)
        return ExecutedCommand(accepted)

    def _accepted(
        self,
        command_id: int,
        command: int,
        argument: int | None,
        origin: Origin,
        latency: float,
        result: str | None = None,
        *,
        skipped: bool = False,
    ) -> CommandAccepted:
        event = CommandAccepted(
            self.id,
            time.time(),
            command_id=command_id,
            command=command,
            argument=argument,
            result=result or (RESULT_SKIPPED if skipped else RESULT_OK),
            skipped=skipped,
            origin=origin,
            latency_s=latency,
        )
        return event

    async def _publish_accepted(self, event: CommandAccepted) -> None:
        await self._journal(event)
        self.bus.publish(event)

    async def _journal(self, event: CommandAccepted | CommandRefused) -> None:
        if self.command_journal is not None:
            await self.command_journal(event)

    async def _request(self, send: Callable[[], Awaitable[_T]]) -> _T:
        """Run one PLC exchange, turning link errors into coded gateway errors."""
        try:
            return await send()
        except PlcTimeout as exc:
            raise self._error(
                ErrorCode.PLC_TIMEOUT,
                f"PLC of {self.id}: {exc}; the command was not retried",
            ) from None
        except PlcError as exc:
            raise self._error(ErrorCode.CONNECTION_ERROR, str(exc)) from None

    def _error(
        self, code: ErrorCode, message: str, *, reasons: tuple[str, ...] = ()
    ) -> GatewayError:
        return GatewayError(code, message, machine_id=self.id, reasons=reasons)

    # -- polling --------------------------------------------------------------------------

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
                await self._idle(None)  # woken when the command is done
                continue
            started = loop.time()
            try:
                reply = await self.connection.status()
            except PlcError:
                continue  # the connection callback reports it; the next turn waits
            self._apply_reply(reply, confirmed=False)
            now = loop.time()
            self._check_deadline(now)
            await self._idle(self._poll_delay(started, now))

    async def _idle(self, delay: float | None) -> None:
        """Wait ``delay`` seconds (None: until woken), or less if woken (a command starts or
        ends, a link changes state)."""
        if delay is not None and delay <= 0:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

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

    def _apply_reply(self, reply: Reply, *, confirmed: bool) -> bool:
        """Take one reading into the snapshot; publish what changed; advance a move.

        ``confirmed`` is False for port-3200 replies: unframed, so a move's verdict on one
        waits for the next reply on the same link to agree (see ``MoveTracker.observe``).
        Returns False when the reading was ignored (a position outside the machine).
        """
        if not 0 <= reply.position_index < self.config.positions:
            self.bad_replies += 1
            log.warning(
                "%s: PLC reported position index %d outside 0..%d; reading ignored",
                self.id,
                reply.position_index,
                self.config.positions - 1,
            )
            return False
        now = time.time()
        previous = self.snapshot
        current = replace(
            previous,
            position=self.to_api_position(reply.position_index),
            raw_status=reply.status.raw,
            updated_at=now,
        )
        self._publish_snapshot(previous, current)
        if previous.raw_status != current.raw_status:
            self._publish_fault_changes(previous, current)
        if self._move is not None:
            verdict = self._move.tracker.observe(
                reply.status,
                reply.position_index,
                asyncio.get_running_loop().time(),
                confirmed=confirmed,
            )
            if verdict is not None:
                self._finish_move(verdict)
        return True

    def _publish_snapshot(self, previous: Snapshot, current: Snapshot) -> None:
        if current.same_state(previous):
            self.snapshot = current
            return
        current = replace(
            current,
            changed_at=current.updated_at or time.time(),
            changed_monotonic=time.monotonic(),
        )
        self.snapshot = current
        self.bus.publish(StatusChanged(self.id, time.time(), snapshot=current, previous=previous))

    def _publish_fault_changes(self, previous: Snapshot, current: Snapshot) -> None:
        before = set(stopping_conditions(previous.status)) if previous.status else set()
        after = set(stopping_conditions(current.status)) if current.status else set()
        order = [key.value for key in StatusKey]
        raised = tuple(k for k in order if k in after - before)
        cleared = tuple(k for k in order if k in before - after)
        if raised:
            self.bus.publish(FaultRaised(self.id, time.time(), keys=raised))
        if cleared and previous.status is not None:
            self.bus.publish(FaultCleared(self.id, time.time(), keys=cleared))

    def _check_deadline(self, now: float) -> None:
        if self._move is not None:
            verdict = self._move.tracker.check_deadline(now)
            if verdict is not None:
                self._finish_move(verdict)

    def _finish_move(self, verdict: Verdict) -> None:
        move, self._move = self._move, None
        assert move is not None
        duration = asyncio.get_running_loop().time() - move.tracker.started_at
        event: MoveCompleted | MoveFailed
        if isinstance(verdict, Arrived):
            event = MoveCompleted(
                self.id,
                time.time(),
                command_id=move.command_id,
                position=self.to_api_position(verdict.position_index),
                duration_s=duration,
                origin=move.origin,
                travelled=self._travelled(move.start_index, verdict.position_index),
            )
        else:
            position = self.snapshot.position
            event = MoveFailed(
                self.id,
                time.time(),
                command_id=move.command_id,
                target=move.target,
                reasons=verdict.reasons,
                position=position,
                duration_s=duration,
                origin=move.origin,
                travelled=self._travelled(
                    move.start_index, None if position is None else self.to_index(position)
                ),
            )
        self.last_outcome = event
        if not move.future.done():
            move.future.set_result(event)
        self.bus.publish(event)

    def _travelled(self, start: int | None, end: int | None) -> int:
        """Buckets between two indexes the shorter way (the way a carousel turns)."""
        if start is None or end is None:
            return 0
        forward = (end - start) % self.config.positions
        return min(forward, self.config.positions - forward)

    def _on_connection_state(self, state: ConnectionState, reason: str | None) -> None:
        if state is not ConnectionState.CONNECTED and self._move is not None:
            self._move.tracker.stream_restarted()  # a verdict awaiting this link is void
        previous = self.snapshot
        self._publish_snapshot(previous, replace(previous, connection=state))
        self.bus.publish(ConnectionChanged(self.id, time.time(), state=state, reason=reason))
        self._check_telemetry_lost()
        self._wake.set()

    def _check_telemetry_lost(self) -> None:
        """A move fails as ``connection_lost`` once no link can observe it any more.

        On a port-3200 machine that is the loss of its one link. On a Modbus machine a
        dropped command link alone does not end the move: Modbus still sees it arrive.
        """
        if self._move is None or self.connection.state is ConnectionState.CONNECTED:
            return
        if self.modbus is not None and self.modbus.state is ConnectionState.CONNECTED:
            return
        verdict = self._move.tracker.connection_lost()
        if verdict is not None:
            self._finish_move(verdict)

    # -- Modbus telemetry -----------------------------------------------------------------

    async def _modbus_poll_loop(self) -> None:
        """Modbus readings; port-3200 STATUS polling only while Modbus is failing."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._telemetry_turn(started)
            self._check_deadline(loop.time())
            interval = self._next_reading_in(loop.time(), started)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()

    async def _telemetry_turn(self, now: float) -> None:
        """One reading from the best source that answers."""
        assert self.modbus is not None
        if self.modbus.state is ConnectionState.CONNECTED and await self._read_modbus():
            return
        if self.connection.state is not ConnectionState.CONNECTED:
            return
        if self.telemetry_source is TelemetrySource.MODBUS:
            if now - self._modbus_ok_at < self.config.modbus_fallback_s:
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
        period = self.config.modbus_poll_active_s if self.busy else self.config.modbus_poll_idle_s
        interval = max(0.0, started + period - now)
        fallback_in = self._modbus_ok_at + self.config.modbus_fallback_s - now
        if plc_up and fallback_in > 0:
            interval = min(interval, fallback_in)  # fall back on time, not a poll later
        return interval

    async def _read_modbus(self) -> bool:
        """One Modbus reading into the snapshot; False when there was no good reading."""
        assert self.modbus is not None
        try:
            reading = await self.modbus.read()
        except PlcError as exc:
            log.debug("%s: Modbus reading failed: %s", self.id, exc)
            return False
        return self._take_modbus_reading(reading)

    def _take_modbus_reading(self, reading: TelemetryReading) -> bool:
        if not self._apply_reply(reading.reply, confirmed=True):
            return False  # a position outside the machine: the register map is suspect
        self._modbus_ok_at = asyncio.get_running_loop().time()
        if self.telemetry_source is not TelemetrySource.MODBUS:
            self._set_telemetry_source(TelemetrySource.MODBUS, "Modbus readings are back")
        self._check_desync(reading)
        return True

    async def _interlock_readings(self) -> list[Reply]:
        """Readings taken now to judge a MOVE's interlocks on.

        With Modbus as the live source, one Modbus read: framed, the same PLC memory as a
        STATUS, in ~50 ms instead of 0.2–0.8 s, and it leaves the single-session command
        link free for the MOVE. Otherwise port-3200 STATUS replies, after the link has been
        quiet for ``stray_guard_s`` (bytes a PLC sends after a reply show up there), and two
        of them: the
        fresh one and the one before it on the same link. The later completing cleanly
        proves the earlier was read in step; both must allow the move. If the two disagree
        (the PLC's state changed in between) more are read, up to a bound. A refusal needs
        no such proof: any reading that forbids the move refuses it.
        """
        if (
            self.modbus is not None
            and self.telemetry_source is TelemetrySource.MODBUS
            and self.modbus.state is ConnectionState.CONNECTED
            and await self._read_modbus()
        ):
            self.check_interlocks()
            return [self._as_reply(self.snapshot)]
        await self._request(lambda: self.connection.quiet_for(self.config.stray_guard_s))
        for _ in range(INTERLOCK_READINGS_MAX):
            reply = await self._request(lambda: self.connection.status())
            self._apply_reply(reply, confirmed=False)
            self.check_interlocks()
            self.check_interlocks(self._as_snapshot(reply))
            pair = self.connection.confirmed_pair()
            if pair is not None:
                self.check_interlocks(self._as_snapshot(pair[0]))
                if pair[0] == pair[1]:
                    return list(pair)
        raise self._error(
            ErrorCode.CONNECTION_ERROR,
            f"{INTERLOCK_READINGS_MAX} readings of {self.id}'s PLC in a row did not agree; "
            "the MOVE was not sent",
        )

    def _as_reply(self, snapshot: Snapshot) -> Reply:
        assert snapshot.status is not None and snapshot.position is not None
        return Reply(status=snapshot.status, position_index=self.to_index(snapshot.position))

    def _as_snapshot(self, reply: Reply) -> Snapshot:
        """The latest snapshot as one reading showed it (to judge interlocks on it)."""
        return replace(
            self.snapshot,
            raw_status=reply.status.raw,
            position=self.to_api_position(reply.position_index),
        )

    def _apply_command_reply(self, reply: Reply) -> None:
        """A command's reply is a reading too, unless Modbus is the live source: the reply
        then left the PLC up to 0.8 s ago and can be older than the last Modbus reading."""
        if self.telemetry_source is TelemetrySource.PORT3200:
            self._apply_reply(reply, confirmed=False)

    def _set_telemetry_source(self, source: TelemetrySource, reason: str) -> None:
        if source is self.telemetry_source:
            return
        self.telemetry_source = source
        if source is TelemetrySource.PORT3200:
            self.telemetry_fallbacks += 1
            log.warning("%s: telemetry falls back to port 3200 (%s)", self.id, reason)
        else:
            log.info("%s: telemetry back on Modbus (%s)", self.id, reason)
        self._desync_readings = 0
        self.bus.publish(TelemetrySourceChanged(self.id, time.time(), source=source, reason=reason))

    def _check_desync(self, reading: TelemetryReading) -> None:
        """Report, once per occurrence, an idle machine whose latched target is elsewhere."""
        if self.busy:
            # Our own move: D2 leads D0 until arrival, and the MOVE cleared any report.
            self._desync_readings = 0
            return
        if not reading.desync:
            self._desync_readings = 0
            self._clear_desync()
            return
        self._desync_readings += 1
        if self.position_desync is None and self._desync_readings >= DESYNC_CONFIRM_READINGS:
            event = PositionDesync(
                self.id,
                time.time(),
                position=self.to_api_position(reading.position_index),
                target=self.to_api_position(reading.target_index),
            )
            self.position_desync = event
            log.warning(
                "%s: position desync: idle at %d but the latched target is %d (not acted on)",
                self.id,
                event.position,
                event.target,
            )
            self.bus.publish(event)

    def _clear_desync(self) -> None:
        if self.position_desync is None:
            return
        self.position_desync = None
        self.bus.publish(
            PositionDesyncCleared(self.id, time.time(), position=self.snapshot.position)
        )

    def _on_modbus_state(self, state: ConnectionState, reason: str | None) -> None:
        self._check_telemetry_lost()
        self._wake.set()
