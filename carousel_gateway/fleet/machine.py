"""One carousel as the gateway sees it: live snapshot, poll loop, safe command execution.

Commands run one at a time: validation, interlocks on a fresh reading, the MOVE itself,
then a :class:`MoveTracker` until arrival or failure. Clients never wait on polling: they
read the snapshot. The layers below :class:`Machine` keep that snapshot: what a reading
does (:mod:`~carousel_gateway.fleet.readings`), when and where readings are taken
(:mod:`~carousel_gateway.fleet.polling`, with the Modbus rules of
:mod:`~carousel_gateway.fleet.telemetry`), and how the links are opened
(:mod:`~carousel_gateway.fleet.links`). ``diagnostics()`` reports on all of them at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from carousel_gateway.config import MachineConfig
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.diagnostics import DiagnosticsReport, diagnose
from carousel_gateway.fleet.events import (
    CommandAccepted,
    CommandJournal,
    CommandRefused,
    EventBus,
    MoveCompleted,
    MoveFailed,
    MoveGate,
    MoveIntent,
    Origin,
    Reservation,
    Snapshot,
    TelemetrySource,
)
from carousel_gateway.fleet.lifecycle import MoveTracker, stopping_conditions
from carousel_gateway.fleet.links import connection_settings, modbus_settings
from carousel_gateway.fleet.polling import MachinePolling
from carousel_gateway.fleet.readings import ActiveMove
from carousel_gateway.plc.connection import (
    ConnectionState,
    PlcError,
    PlcNotConnected,
    PlcTimeout,
)
from carousel_gateway.plc.protocol import Command, Reply
from carousel_gateway.plc.status import StatusKey

__all__ = [
    "ExecutedCommand",
    "Machine",
    "MoveOutcomeUnknown",
    "connection_settings",
    "modbus_settings",
]

log = logging.getLogger(__name__)

RESULT_OK = "Comando ejecutado correctamente"
RESULT_SKIPPED = "Ya en la posición solicitada: no se envió el movimiento"
RESULT_STATUS = "Estado leído correctamente"

#: The refusal reason while a MOVE's outcome is unknown (sent, no trustworthy reply).
PREVIOUS_MOVE_UNCONFIRMED = "previous_move_unconfirmed"

#: Port-3200 readings taken for a MOVE's interlocks before giving up on two that agree.
INTERLOCK_READINGS_MAX = 4


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


_T = TypeVar("_T")


class Machine(MachinePolling):
    """A carousel: its PLC link(s), its latest snapshot, its command path."""

    def __init__(
        self,
        config: MachineConfig,
        bus: EventBus,
        *,
        port: int | None = None,
        modbus_port: int | None = None,
        command_journal: CommandJournal | None = None,
        next_command_id: Callable[[], int] | None = None,
        move_gate: MoveGate | None = None,
    ) -> None:
        super().__init__(config, bus, port=port, modbus_port=modbus_port)
        #: Awaited with each command's record before the result is published, so that no
        #: client ever holds a result the journal does not have.
        self.command_journal = command_journal
        #: Ids must be unique among the fleet's commands (the journal's key): the fleet
        #: passes one counter to all its machines; a lone machine counts its own.
        self._next_command_id = next_command_id or itertools.count(1).__next__
        #: Two gateways per cell: asked after the interlock readings and immediately
        #: before a MOVE is written, so no MOVE goes out without a committed intent of the
        #: current lease epoch (None: a lone gateway, nothing to ask).
        self.move_gate = move_gate
        #: Set by a workstation while it has an active, unpaused pick job on this machine.
        self.reservation: Reservation | None = None

    def mirror(
        self, position: int | None, raw_status: int | None, updated_at: float | None
    ) -> None:
        """A standby's view of this machine: the active's latest reading, read from the
        database. Shown only while this instance drives nothing (its links are closed, so
        the connection stays ``disconnected``); its own readings replace it once it does."""
        if self._poller is not None:
            return
        current = replace(
            self.snapshot, position=position, raw_status=raw_status, updated_at=updated_at
        )
        self._publish_snapshot(self.snapshot, current)

    def diagnostics(self) -> DiagnosticsReport:
        """Everything an operator asks about this machine, taken at one instant."""
        return diagnose(self)

    # -- commands -------------------------------------------------------------------------

    async def execute(
        self, command: int, argument: int | None, origin: Origin | None = None
    ) -> ExecutedCommand:
        """Run one command; raises :class:`GatewayError` with a precise code when refused."""
        origin = origin or Origin()
        command_id = self._next_command_id()
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

    def reserve(self, reservation: Reservation | None) -> None:
        """Let only ``reservation``'s jobs move this machine (``None``: everyone again)."""
        self.reservation = reservation

    def check_reservation(self, origin: Origin) -> None:
        """Raise ``MACHINE_RESERVED`` for a move from anyone but the holder's jobs."""
        reservation = self.reservation
        if reservation is not None and not reservation.admits(origin):
            raise self._error(
                ErrorCode.MACHINE_RESERVED,
                f"{self.id} is reserved by {reservation.describe()}: pause the job to move "
                "it by hand",
            )

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
        if command == Command.MOVE:
            self.check_reservation(origin)
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
        intent = MoveIntent(command_id, self.id, position, origin)
        if self.move_gate is not None:
            await self.move_gate.admit(intent)  # raises to refuse: nothing was sent
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        written_at = loop.time()
        try:
            reply = await self.connection.move(self.to_index(position))
        except PlcNotConnected as exc:
            if self.move_gate is not None:
                await self.move_gate.not_sent(intent)
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
        self._move = ActiveMove(
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
