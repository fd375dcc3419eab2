"""The OPC UA address space as data, and the values a machine's events give it (pure).

``CAROUSEL_VARIABLES`` describes every variable of a ``CarouselType`` object; the server
builds the nodes from it. :class:`MachineValues` follows one machine's bus events (the same
ones the WebSocket broadcasts come from) and returns only the values that changed, each with
its source time (the PLC reading's) and its quality. No asyncua node, no socket, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

from asyncua import ua

from carousel_gateway.api.commands import failure_code
from carousel_gateway.api.opcua.results import describe_failure, status_for
from carousel_gateway.config import MachineConfig
from carousel_gateway.fleet.events import (
    CommandAccepted,
    CommandRefused,
    ConnectionChanged,
    Event,
    MoveCompleted,
    MoveFailed,
    Snapshot,
    StatusChanged,
    TelemetrySource,
    TelemetrySourceChanged,
)
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.plc.protocol import Command
from carousel_gateway.plc.status import StatusWord
from carousel_gateway.plc.supervisor import CLOSED_BY_GATEWAY

__all__ = [
    "CAROUSEL_VARIABLES",
    "NAMESPACE_URI",
    "STATUS_BITS",
    "TELEMETRY",
    "MachineValues",
    "MoveState",
    "Update",
    "VariableSpec",
    "node_id",
]

#: The namespace of every machine node (stable whatever the server's application URI).
NAMESPACE_URI = "urn:carousel-gateway:machines"

Kind = Literal["Int32", "Byte", "Boolean", "String", "StatusCode", "UInt32", "Double", "MoveState"]


class MoveState(IntEnum):
    """A machine's move, as ``MoveState`` shows it (the ``MoveStateEnumeration`` type)."""

    IDLE = 0
    SENT = 1
    MOVING = 2
    ARRIVED = 3
    FAILED = 4


@dataclass(frozen=True, slots=True)
class VariableSpec:
    """One variable of ``CarouselType``: its browse path below the machine and its type."""

    path: str  # "Position", "Identification.Name", "Counters.MovesCompleted"
    kind: Kind
    description: str

    @property
    def browse_name(self) -> str:
        return self.path.rpartition(".")[2]

    @property
    def folder(self) -> str | None:
        """The child object holding it (``Identification``, ``Counters``) or None."""
        head, _, _ = self.path.rpartition(".")
        return head or None


#: Status bits, in bit order, each as a Boolean (e-stop active-low: shown as pressed).
STATUS_BITS: tuple[tuple[str, str], ...] = (
    ("Ready", "READY: the machine is ready"),
    ("Running", "RUN: the carousel is moving"),
    ("RemoteMode", "MODO_OPERACION: remote moves enabled (off: manual mode)"),
    ("Alarm", "ALARMA: an alarm is active"),
    ("EmergencyStopPressed", "PARADA_EMERGENCIA: the emergency stop is pressed"),
    ("DriveFault", "VFD: drive fault"),
    ("PositioningError", "ERROR_POSICIONAMIENTO: positioning error"),
    ("Descending", "SENTIDO_GIRO: turning direction is descending"),
)

CAROUSEL_VARIABLES: tuple[VariableSpec, ...] = (
    VariableSpec("Identification.Name", "String", "The machine's name"),
    VariableSpec("Identification.Description", "String", "The machine's description"),
    VariableSpec("Identification.Kind", "String", '"Real PLC" or "Simulator"'),
    VariableSpec("Identification.FirstPosition", "Int32", "The lowest position number"),
    VariableSpec("Identification.LastPosition", "Int32", "The highest position number"),
    VariableSpec("Position", "Int32", "The position at the window (API numbering)"),
    VariableSpec("TargetPosition", "Int32", "The last MOVE's target (API numbering)"),
    VariableSpec("MoveState", "MoveState", "idle, sent, moving, arrived or failed"),
    VariableSpec("StatusWord", "Byte", "The PLC's status byte"),
    *(VariableSpec(name, "Boolean", text) for name, text in STATUS_BITS),
    VariableSpec("LinkUp", "Boolean", "The PLC link is up (always Good quality)"),
    VariableSpec("TelemetrySource", "String", "port3200 or modbus"),
    VariableSpec("LastResultCode", "StatusCode", "The last command's or move's result"),
    VariableSpec("LastResultMessage", "String", "Its text: our error code and reasons"),
    VariableSpec("Counters.MovesCompleted", "UInt32", "Moves that arrived"),
    VariableSpec("Counters.MovesFailed", "UInt32", "Moves that failed"),
    VariableSpec("Counters.Disconnections", "UInt32", "PLC links lost"),
    VariableSpec("Counters.PositionsTravelled", "UInt32", "Buckets that passed the window"),
    VariableSpec("Counters.SecondsInMotion", "Double", "Time spent moving"),
)

#: What a reading gives; Bad_CommunicationError (null) while the link is down.
TELEMETRY: frozenset[str] = frozenset(
    {"Position", "StatusWord", *(name for name, _ in STATUS_BITS)}
)

#: Counters carried over from the journal when the gateway starts.
JOURNAL_COUNTERS: dict[str, str] = {
    "moves_completed": "Counters.MovesCompleted",
    "moves_failed": "Counters.MovesFailed",
    "disconnections": "Counters.Disconnections",
    "positions_travelled": "Counters.PositionsTravelled",
    "seconds_in_motion": "Counters.SecondsInMotion",
}


def node_id(machine_id: str, path: str = "") -> str:
    """The stable string NodeId: ``machine_1``, ``machine_1.Position``, ..."""
    return f"{machine_id}.{path}" if path else machine_id


Value = int | float | bool | str | None


@dataclass(frozen=True, slots=True)
class Update:
    """One value to write: ``status`` Good (0) or a Bad code with a null value."""

    path: str
    value: Value
    source_time: float  # wall clock (seconds) of the reading or event behind it
    status: int = ua.StatusCodes.Good


@dataclass(slots=True)
class MachineValues:
    """One machine's current values; ``apply`` returns what an event changed."""

    config: MachineConfig
    current: dict[str, tuple[Value, int]] = field(default_factory=dict)

    @property
    def move_state(self) -> MoveState:
        value = self.current.get("MoveState", (MoveState.IDLE, 0))[0]
        return MoveState(value) if isinstance(value, int) else MoveState.IDLE

    def initial(
        self,
        snapshot: Snapshot,
        source: TelemetrySource,
        counters: dict[str, int | float] | None = None,
        *,
        now: float,
    ) -> list[Update]:
        """Every variable's first value (identification, the snapshot, zero counters)."""
        config = self.config
        first = config.position_base
        fixed: dict[str, Value] = {
            "Identification.Name": config.name,
            "Identification.Description": config.description,
            "Identification.Kind": config.type_label,
            "Identification.FirstPosition": first,
            "Identification.LastPosition": first + config.positions - 1,
            "TargetPosition": None,
            "MoveState": int(MoveState.IDLE),
            "TelemetrySource": source.value,
            "LastResultCode": ua.StatusCodes.Good,
            "LastResultMessage": "",
        }
        for key, path in JOURNAL_COUNTERS.items():
            amount = (counters or {}).get(key, 0)
            fixed[path] = float(amount) if path.endswith("SecondsInMotion") else int(amount)
        updates = [self._set(path, value, now) for path, value in fixed.items()]
        updates.extend(self._snapshot(snapshot, now))
        return [update for update in updates if update is not None]

    def apply(self, event: Event) -> list[Update]:
        """The values ``event`` changed (nothing for an event that changes none)."""
        at = event.at
        found: list[Update | None] = []
        match event:
            case StatusChanged(snapshot=snapshot):
                found.extend(self._snapshot(snapshot, at))
            case ConnectionChanged(state=state, reason=reason):
                if state is not ConnectionState.CONNECTED:
                    found.extend(self._link_down(at))
                    if reason != CLOSED_BY_GATEWAY:
                        found.append(self._add("Counters.Disconnections", 1, at))
            case CommandAccepted(command=command) if command == Command.MOVE:
                found.append(self._set("TargetPosition", event.argument, at))
                if event.outcome_unknown:
                    found.append(self._set("MoveState", int(MoveState.SENT), at))
                    found.extend(
                        self._result(
                            ua.StatusCodes.BadTimeout,
                            "MOVE_OUTCOME_UNKNOWN: the MOVE was written, its reply never "
                            "came; the carousel is being followed",
                            at,
                        )
                    )
                else:
                    move = MoveState.ARRIVED if event.skipped else MoveState.SENT
                    found.append(self._set("MoveState", int(move), at))
                    found.extend(self._result(ua.StatusCodes.Good, event.result, at))
            case CommandRefused(code=code, message=message, reasons=reasons):
                found.extend(self._result(status_for(code), _text(code, message, reasons), at))
            case MoveCompleted(position=position, duration_s=duration, travelled=travelled):
                found.append(self._set("MoveState", int(MoveState.ARRIVED), at))
                found.extend(
                    self._result(ua.StatusCodes.Good, f"arrived at position {position}", at)
                )
                found.extend(self._motion(duration, travelled, at))
                found.append(self._add("Counters.MovesCompleted", 1, at))
            case MoveFailed(reasons=reasons, duration_s=duration, travelled=travelled):
                found.append(self._set("MoveState", int(MoveState.FAILED), at))
                code = failure_code(reasons)
                found.extend(self._result(status_for(code), describe_failure(code, event), at))
                found.extend(self._motion(duration, travelled, at))
                found.append(self._add("Counters.MovesFailed", 1, at))
            case TelemetrySourceChanged(source=source):
                found.append(self._set("TelemetrySource", source.value, at))
        return [update for update in found if update is not None]

    # -- helpers ----------------------------------------------------------------------------

    def _snapshot(self, snapshot: Snapshot, at: float) -> list[Update | None]:
        if snapshot.connection is not ConnectionState.CONNECTED or snapshot.raw_status is None:
            return self._link_down(at)
        when = snapshot.updated_at if snapshot.updated_at is not None else at
        status = StatusWord(snapshot.raw_status)
        bits = (
            status.ready,
            status.running,
            status.remote,
            status.alarm,
            status.emergency_stop,
            status.vfd_fault,
            status.positioning_error,
            status.descending,
        )
        found: list[Update | None] = [
            self._set("LinkUp", True, when),
            self._set("Position", snapshot.position, when),
            self._set("StatusWord", snapshot.raw_status, when),
        ]
        found.extend(
            self._set(name, bit, when) for (name, _), bit in zip(STATUS_BITS, bits, strict=True)
        )
        if self.move_state is MoveState.SENT and status.running:
            found.append(self._set("MoveState", int(MoveState.MOVING), when))
        return found

    def _link_down(self, at: float) -> list[Update | None]:
        bad = ua.StatusCodes.BadCommunicationError
        found = [self._set(path, None, at, bad) for path in sorted(TELEMETRY)]
        found.append(self._set("LinkUp", False, at))
        return found

    def _result(self, status: int, message: str, at: float) -> list[Update | None]:
        # Written even when equal to the last: each is a new result an HMI may alarm on.
        self.current.pop("LastResultCode", None)
        self.current.pop("LastResultMessage", None)
        return [
            self._set("LastResultCode", status, at),
            self._set("LastResultMessage", message, at),
        ]

    def _motion(self, duration: float, travelled: int, at: float) -> list[Update | None]:
        found = [self._add("Counters.SecondsInMotion", duration, at)]
        if travelled:
            found.append(self._add("Counters.PositionsTravelled", travelled, at))
        return found

    def _add(self, path: str, amount: float, at: float) -> Update | None:
        value = self.current.get(path, (0, 0))[0]
        base = value if isinstance(value, int | float) and not isinstance(value, bool) else 0
        total: int | float = base + amount
        if path.endswith("SecondsInMotion"):
            total = float(total)
        return self._set(path, total, at)

    def _set(
        self, path: str, value: Value, at: float, status: int = ua.StatusCodes.Good
    ) -> Update | None:
        """An update when the value or its quality changed; None when nothing did."""
        if self.current.get(path) == (value, status) and path in self.current:
            return None
        self.current[path] = (value, status)
        return Update(path, value, at, status)


def _text(code: str, message: str, reasons: tuple[str, ...]) -> str:
    shown = f"{code}: {message}"
    return f"{shown} (reasons: {', '.join(reasons)})" if reasons else shown
