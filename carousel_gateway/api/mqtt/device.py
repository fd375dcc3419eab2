"""One carousel as a Sparkplug device: its metrics, and how fleet events change them (pure).

The same events that drive the WebSocket broadcasts drive these values: a ``StatusChanged``
(position, status byte, the link's state and since, a link lost), a command accepted, a
move completed or failed, a telemetry source change. :meth:`DeviceModel.apply` says whether
anything a consumer sees changed; the session publishes only what did.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from carousel_gateway.api.mqtt.codec import DataType, MetricValue
from carousel_gateway.fleet.events import (
    CommandAccepted,
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

__all__ = [
    "COMMAND_METRICS",
    "DEVICE_METRICS",
    "MOVE_TO",
    "REQUEST_ID",
    "CommandResult",
    "DeviceModel",
    "MoveState",
]

#: The writable metrics of a DCMD.
MOVE_TO = "Command/MoveTo"
REQUEST_ID = "Command/RequestId"

#: Every device metric, in birth order (the order gives the aliases).
DEVICE_METRICS: tuple[tuple[str, DataType], ...] = (
    ("Position", DataType.INT32),
    ("Target", DataType.INT32),
    ("RawStatus", DataType.INT32),
    ("Status/Ready", DataType.BOOLEAN),
    ("Status/Running", DataType.BOOLEAN),
    ("Status/Remote", DataType.BOOLEAN),
    ("Status/Alarm", DataType.BOOLEAN),
    ("Status/EStopPressed", DataType.BOOLEAN),
    ("Status/DriveFault", DataType.BOOLEAN),
    ("Status/PositioningError", DataType.BOOLEAN),
    ("Status/Descending", DataType.BOOLEAN),
    ("Link/State", DataType.STRING),
    ("Link/Since", DataType.DATETIME),
    ("Telemetry/Source", DataType.STRING),
    ("Move/State", DataType.STRING),
    ("Move/Target", DataType.INT32),
    ("Counters/MovesCompleted", DataType.INT64),
    ("Counters/MovesFailed", DataType.INT64),
    ("Counters/PositionsTravelled", DataType.INT64),
    ("Counters/Disconnections", DataType.INT64),
    (MOVE_TO, DataType.INT32),
    (REQUEST_ID, DataType.STRING),
    ("Command/Last/RequestId", DataType.STRING),
    ("Command/Last/Result", DataType.STRING),
    ("Command/Last/Reason", DataType.STRING),
    ("Command/Last/Target", DataType.INT32),
    ("Command/Last/Timestamp", DataType.DATETIME),
)

#: The metrics a host may write in a DCMD (with their types).
COMMAND_METRICS: dict[str, DataType] = {MOVE_TO: DataType.INT32, REQUEST_ID: DataType.STRING}

#: The journal's counters, by metric.
_COUNTERS = {
    "Counters/MovesCompleted": "moves_completed",
    "Counters/MovesFailed": "moves_failed",
    "Counters/PositionsTravelled": "positions_travelled",
    "Counters/Disconnections": "disconnections",
}


class MoveState(StrEnum):
    IDLE = "idle"  # no move since the gateway started
    SENT = "sent"  # the PLC took the MOVE; no motion seen yet
    MOVING = "moving"
    ARRIVED = "arrived"
    FAILED = "failed"


class CommandResult(StrEnum):
    """``Command/Last/Result``: Sparkplug has no acknowledgement, so a DCMD's fate is a
    metric."""

    NONE = "none"  # no command over MQTT yet
    ACCEPTED = "accepted"
    REFUSED = "refused"
    ARRIVED = "arrived"
    FAILED = "failed"
    UNKNOWN = "unknown"  # sent, no trustworthy reply (MOVE_OUTCOME_UNKNOWN)


@dataclass(slots=True)
class _LastCommand:
    request_id: str = ""
    result: CommandResult = CommandResult.NONE
    reason: str = ""
    target: int = 0
    at_ms: int = 0


class DeviceModel:
    """A carousel's metric values, kept from its snapshot and the fleet's events."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        telemetry_source: TelemetrySource = TelemetrySource.PORT3200,
        counters: dict[str, int | float] | None = None,
        started_at: float,
    ) -> None:
        self.machine_id = snapshot.machine_id
        self.snapshot = snapshot
        self.telemetry_source = telemetry_source
        self.link_since_ms = _ms(started_at)
        self.move_state = MoveState.IDLE
        self.move_target: int | None = None
        self.counters = {
            metric: int((counters or {}).get(name, 0)) for metric, name in _COUNTERS.items()
        }
        self.last_command = _LastCommand(at_ms=_ms(started_at))
        self._values = self._compute()

    @property
    def alive(self) -> bool:
        """Connected with a reading: a device to announce (DBIRTH)."""
        return (
            self.snapshot.connection is ConnectionState.CONNECTED
            and self.snapshot.raw_status is not None
        )

    def values(self) -> dict[str, MetricValue]:
        return dict(self._values)

    def apply(self, event: Event) -> bool:
        """Take one fleet event; True when a metric value changed."""
        match event:
            case StatusChanged(snapshot=snapshot, previous=previous):
                self.snapshot = snapshot
                # The link's change comes here first (ConnectionChanged follows it), so
                # one DDATA carries the state, its time and the count.
                if snapshot.connection is not previous.connection:
                    self.link_since_ms = _ms(event.at)
                    if previous.connection is ConnectionState.CONNECTED:
                        self.counters["Counters/Disconnections"] += 1
                status = snapshot.status
                if self.move_state is MoveState.SENT and status is not None and status.running:
                    self.move_state = MoveState.MOVING
            case CommandAccepted(command=command, argument=argument, skipped=skipped):
                if command == Command.MOVE and argument is not None:
                    self.move_target = argument
                    self.move_state = MoveState.ARRIVED if skipped else MoveState.SENT
            case MoveCompleted(position=position, travelled=travelled):
                self.move_state = MoveState.ARRIVED
                self.move_target = position
                self.counters["Counters/MovesCompleted"] += 1
                self.counters["Counters/PositionsTravelled"] += travelled
            case MoveFailed(target=target, travelled=travelled):
                self.move_state = MoveState.FAILED
                self.move_target = target
                self.counters["Counters/MovesFailed"] += 1
                self.counters["Counters/PositionsTravelled"] += travelled
            case TelemetrySourceChanged(source=source):
                self.telemetry_source = source
            case _:
                return False
        return self._refresh()

    def command_result(
        self,
        *,
        request_id: str | None,
        result: CommandResult,
        reason: str,
        target: int,
        at: float,
    ) -> bool:
        """Record the fate of a command from MQTT; True (its metrics changed)."""
        self.last_command = _LastCommand(request_id or "", result, reason, target, _ms(at))
        self._refresh()
        return True

    def _refresh(self) -> bool:
        values = self._compute()
        changed = values != self._values
        self._values = values
        return changed

    def _compute(self) -> dict[str, MetricValue]:
        snapshot = self.snapshot
        status = snapshot.status
        moving = self.move_state in (MoveState.SENT, MoveState.MOVING)
        # Target: where the carousel is going now (where it stands when idle); Move/Target:
        # the target of the move under way or of the last one.
        target = self.move_target if moving else snapshot.position
        move_target = self.move_target if self.move_target is not None else snapshot.position
        last = self.last_command
        values: dict[str, MetricValue] = {
            "Position": snapshot.position,
            "Target": target,
            "RawStatus": snapshot.raw_status,
            "Status/Ready": None if status is None else status.ready,
            "Status/Running": None if status is None else status.running,
            "Status/Remote": None if status is None else status.remote,
            "Status/Alarm": None if status is None else status.alarm,
            "Status/EStopPressed": None if status is None else status.emergency_stop,
            "Status/DriveFault": None if status is None else status.vfd_fault,
            "Status/PositioningError": None if status is None else status.positioning_error,
            "Status/Descending": None if status is None else status.descending,
            "Link/State": snapshot.connection.value,
            "Link/Since": self.link_since_ms,
            "Telemetry/Source": self.telemetry_source.value,
            "Move/State": self.move_state.value,
            "Move/Target": move_target,
            **self.counters,
            MOVE_TO: move_target,
            REQUEST_ID: last.request_id,
            "Command/Last/RequestId": last.request_id,
            "Command/Last/Result": last.result.value,
            "Command/Last/Reason": last.reason,
            "Command/Last/Target": last.target,
            "Command/Last/Timestamp": last.at_ms,
        }
        return values


def _ms(at: float) -> int:
    return round(at * 1000)
