"""Events the fleet publishes, and the in-process EventBus that carries them.

Events are small immutable values (like h11's events). Handlers run synchronously inside
``publish`` so a state change reaches every consumer in the same loop iteration; a handler
must therefore only do quick work (encode, enqueue) and never await.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.plc.status import StatusWord

__all__ = [
    "CommandAccepted",
    "CommandJournal",
    "CommandRefused",
    "ConnectionChanged",
    "Event",
    "EventBus",
    "FaultCleared",
    "FaultRaised",
    "Handler",
    "MoveCompleted",
    "MoveFailed",
    "MoveGate",
    "MoveIntent",
    "Origin",
    "OriginChannel",
    "PositionDesync",
    "PositionDesyncCleared",
    "Reservation",
    "Snapshot",
    "StatusChanged",
    "TelemetrySource",
    "TelemetrySourceChanged",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A machine's latest known state. Replaced, never mutated."""

    machine_id: str
    connection: ConnectionState = ConnectionState.DISCONNECTED
    position: int | None = None  # in the API's numbering (position_base applied)
    raw_status: int | None = None
    updated_at: float | None = None  # wall clock of the last good read
    changed_at: float | None = None  # wall clock of the last change that was published
    changed_monotonic: float | None = None  # loop clock of that change (latency metrics)

    @property
    def status(self) -> StatusWord | None:
        return None if self.raw_status is None else StatusWord.of(self.raw_status)

    def with_reading(self, position: int, raw_status: int, updated_at: float) -> Snapshot:
        """This snapshot with a new reading (``dataclasses.replace`` without its field
        introspection: this runs on every poll)."""
        return Snapshot(
            self.machine_id,
            self.connection,
            position,
            raw_status,
            updated_at,
            self.changed_at,
            self.changed_monotonic,
        )

    def same_state(self, other: Snapshot) -> bool:
        """True when nothing a client sees has changed."""
        return (
            self.connection is other.connection
            and self.position == other.position
            and self.raw_status == other.raw_status
        )


class OriginChannel(StrEnum):
    WS = "ws"
    REST = "rest"
    MQTT = "mqtt"  # a Sparkplug B DCMD or a JSON command on the broker
    OPCUA = "opcua"  # an OPC UA MoveTo method call
    JOB = "job"  # a pick job's own move (client ``job:<job_id>``)
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asked for a command: a token name or a peer address, and the channel."""

    client: str = "gateway"
    channel: OriginChannel = OriginChannel.INTERNAL
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class MoveIntent:
    """A MOVE about to be written: committed (fenced) before its bytes go out, so that a
    gateway taking over knows every MOVE the previous one may have sent."""

    command_id: int
    machine_id: str
    target: int  # API numbering
    origin: Origin


class MoveGate(Protocol):
    """What a machine asks before writing a MOVE (two gateways per cell: the intent is
    committed under the current lease epoch, or the MOVE is refused)."""

    async def admit(self, intent: MoveIntent) -> None:
        """Return once the intent is committed; raise :class:`GatewayError` to refuse."""
        ...

    def check(self, intent: MoveIntent) -> None:
        """Right before the MOVE's bytes go out: raise :class:`GatewayError` if the epoch
        that admitted ``intent`` no longer holds the lease (then nothing is written)."""
        ...

    async def not_sent(self, intent: MoveIntent) -> None:
        """The admitted MOVE was not written after all (interlocks, already there, link
        down, or the lease lost since)."""
        ...


@dataclass(frozen=True, slots=True)
class Reservation:
    """Who alone may move a machine now: a workstation's active, unpaused pick jobs.

    While a machine is reserved, a MOVE from any other origin is refused with
    ``MACHINE_RESERVED`` naming the holder; other commands (a STATUS read) pass.
    """

    holder: str  # who reserved it, for the refusal's text (e.g. "workstation station_1")
    job_ids: tuple[str, ...]  # the jobs whose moves are admitted

    def admits(self, origin: Origin) -> bool:
        """True for a move of one of the holder's jobs (origin ``job:<job_id>``)."""
        return origin.channel is OriginChannel.JOB and any(
            origin.client == f"job:{job_id}" for job_id in self.job_ids
        )

    def describe(self) -> str:
        jobs = ", ".join(self.job_ids)
        return f"{self.holder} (job {jobs})" if jobs else self.holder


@dataclass(frozen=True, slots=True)
class Event:
    machine_id: str
    at: float  # wall clock


@dataclass(frozen=True, slots=True)
class StatusChanged(Event):
    snapshot: Snapshot
    previous: Snapshot


@dataclass(frozen=True, slots=True)
class ConnectionChanged(Event):
    state: ConnectionState
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class FaultRaised(Event):
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FaultCleared(Event):
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CommandAccepted(Event):
    """The PLC took the command (or it was skipped: already at that position).

    ``outcome_unknown``: a MOVE whose bytes were written but whose reply never came (or
    could not be trusted). It is journalled as sent, never published as a result: its
    requester is told ``MOVE_OUTCOME_UNKNOWN`` and the carousel is followed all the same.
    """

    command_id: int
    command: int
    argument: int | None
    result: str
    skipped: bool
    origin: Origin
    latency_s: float
    outcome_unknown: bool = False


@dataclass(frozen=True, slots=True)
class CommandRefused(Event):
    """A command that was not sent (validation, interlock, busy) or failed on the link."""

    command_id: int
    command: int | None
    argument: int | None
    code: str
    message: str
    reasons: tuple[str, ...]
    origin: Origin


@dataclass(frozen=True, slots=True)
class MoveCompleted(Event):
    command_id: int
    position: int
    duration_s: float
    origin: Origin = field(default_factory=Origin)
    travelled: int = 0  # buckets passed the window (maintenance counters)


@dataclass(frozen=True, slots=True)
class MoveFailed(Event):
    command_id: int
    target: int
    reasons: tuple[str, ...]  # fault keys, "timeout", "connection_lost", ...
    position: int | None
    duration_s: float
    origin: Origin = field(default_factory=Origin)
    travelled: int = 0  # buckets passed the window before it ended


Handler = Callable[[Event], None]

#: Writes a command's record durably before its result is published (the journal).
CommandJournal = Callable[["CommandAccepted | CommandRefused"], Awaitable[None]]


class EventBus:
    """Synchronous in-process publish/subscribe; a failing handler never stops the others."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        """Add a handler; returns a function that removes it."""
        self._handlers.append(handler)

        def unsubscribe() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)

        return unsubscribe

    def publish(self, event: Event) -> None:
        for handler in tuple(self._handlers):
            try:
                handler(event)
            except Exception:
                log.exception("event handler %r failed on %r", handler, event)


class TelemetrySource(StrEnum):
    """Where a machine's status and position readings come from."""

    PORT3200 = "port3200"  # STATUS requests on the command link
    MODBUS = "modbus"  # holding registers over Modbus TCP


@dataclass(frozen=True, slots=True)
class TelemetrySourceChanged(Event):
    """A Modbus machine fell back to port-3200 polling, or returned to Modbus."""

    source: TelemetrySource
    reason: str


@dataclass(frozen=True, slots=True)
class PositionDesync(Event):
    """Warning: the machine is idle but its latched target (D2) is not where it stands (D0).

    Published once per occurrence; the gateway reports it and never acts on it.
    """

    position: int  # API numbering
    target: int  # API numbering


@dataclass(frozen=True, slots=True)
class PositionDesyncCleared(Event):
    """The latched target and the position agree again (or a new move overwrote D2)."""

    position: int | None
