"""What a reading does to a machine: its snapshot, its events, the move it may end.

Every source of readings (port-3200 STATUS replies, a command's own reply, Modbus) ends
in ``_apply_reply``: the snapshot is replaced (immutable), ``StatusChanged`` and fault
events are published only on change, and a pending move's tracker judges it. Telemetry
switches and the position-desync report follow the pure :class:`TelemetryPolicy`; this
layer publishes what it decides. The poll loops are in :mod:`carousel_gateway.fleet.polling`,
the command path in :mod:`carousel_gateway.fleet.machine`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace

from carousel_gateway.config import MachineConfig
from carousel_gateway.fleet.events import (
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
from carousel_gateway.fleet.lifecycle import (
    Arrived,
    Failed,
    FailReason,
    MoveTracker,
    Verdict,
    stopping_conditions,
)
from carousel_gateway.fleet.links import open_links
from carousel_gateway.fleet.telemetry import DesyncStep, TelemetryPolicy
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.plc.modbus import TelemetryReading
from carousel_gateway.plc.protocol import Reply
from carousel_gateway.plc.status import StatusKey

__all__ = [
    "ActiveMove",
    "MachineReadings",
    "Wakeup",
]

log = logging.getLogger(__name__)


class Wakeup:
    """A poll loop's pause that events cut short.

    :meth:`sleep` waits up to ``delay`` seconds (None: until woken); :meth:`set` ends the
    pause under way, if any (a wake with nobody pausing is dropped: a loop looks at the
    machine's state again before each pause). The pause is one future and one timer that
    resolves it, so a pause that runs its course (the usual case: the next poll is due)
    costs no cancellation, unlike ``asyncio.timeout`` around ``Event.wait``.
    """

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def sleep(self, loop: asyncio.AbstractEventLoop, delay: float | None) -> None:
        """Pause for ``delay`` seconds at most on ``loop``, or until :meth:`set`."""
        waiter = self._waiter = loop.create_future()
        timer = None if delay is None else loop.call_later(delay, self.set)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if self._waiter is waiter:
                self._waiter = None


@dataclass(slots=True)
class ActiveMove:
    """The move being followed: who asked, where to, its tracker and its outcome to come."""

    command_id: int
    origin: Origin
    target: int  # API numbering
    tracker: MoveTracker
    future: asyncio.Future[MoveCompleted | MoveFailed]
    start_index: int | None = None


class MachineReadings:
    """A carousel's state as readings make it: links, snapshot, move, telemetry source."""

    def __init__(
        self,
        config: MachineConfig,
        bus: EventBus,
        *,
        port: int | None = None,
        modbus_port: int | None = None,
    ) -> None:
        self.config = config
        self.id = config.id
        self.bus = bus
        self.snapshot = Snapshot(machine_id=config.id)
        self.last_outcome: MoveCompleted | MoveFailed | None = None
        self.bad_replies = 0
        # The Modbus reader is None on port-3200 machines (its last_reading holds the raw
        # registers); position_desync is the desync being reported (None when there is none).
        self.connection, self.modbus = open_links(
            config,
            port=port,
            modbus_port=modbus_port,
            on_state_change=self._on_connection_state,
            on_modbus_state=self._on_modbus_state,
        )
        self.telemetry_policy = TelemetryPolicy.for_machine(config)
        self.position_desync: PositionDesync | None = None
        self._command_in_flight = False
        self._move: ActiveMove | None = None
        self._wake = Wakeup()

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

    # -- state ----------------------------------------------------------------------------

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

    @property
    def telemetry_source(self) -> TelemetrySource:
        return self.telemetry_policy.source

    @property
    def telemetry_fallbacks(self) -> int:
        return self.telemetry_policy.fallbacks

    # -- readings -------------------------------------------------------------------------

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
        current = previous.with_reading(
            self.to_api_position(reply.position_index), reply.status.raw, now
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

    def abandon_move(self) -> None:
        """The gateway stops following this machine (its links are closed for good, or it
        was fenced): a move still in flight ends as ``gateway_stopped``, so whoever waits
        on it gets an answer instead of waiting for a reading that will never come."""
        if self._move is not None:
            self._finish_move(Failed((FailReason.GATEWAY_STOPPED.value,)))

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

    # -- Modbus telemetry -----------------------------------------------------------------

    def _take_modbus_reading(self, reading: TelemetryReading) -> bool:
        if not self._apply_reply(reading.reply, confirmed=True):
            return False  # a position outside the machine: the register map is suspect
        if self.telemetry_policy.modbus_reading_ok(asyncio.get_running_loop().time()):
            self._set_telemetry_source(TelemetrySource.MODBUS, "Modbus readings are back")
        self._check_desync(reading)
        return True

    def _set_telemetry_source(self, source: TelemetrySource, reason: str) -> None:
        if not self.telemetry_policy.switch(source):
            return
        if source is TelemetrySource.PORT3200:
            log.warning("%s: telemetry falls back to port 3200 (%s)", self.id, reason)
        else:
            log.info("%s: telemetry back on Modbus (%s)", self.id, reason)
        self.bus.publish(TelemetrySourceChanged(self.id, time.time(), source=source, reason=reason))

    def _check_desync(self, reading: TelemetryReading) -> None:
        """Report, once per occurrence, an idle machine whose latched target is elsewhere."""
        step = self.telemetry_policy.desync_step(
            busy=self.busy, desync=reading.desync, reported=self.position_desync is not None
        )
        if step is DesyncStep.CLEAR:
            self._clear_desync()
        elif step is DesyncStep.REPORT:
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
