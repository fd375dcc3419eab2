"""Server-side conversions into wire models: a snapshot, a failure's reasons, a journal
row, a command's result and a move's outcome.

They need the fleet's and the PLC's types, which the wire (a leaf the client imports) must
not load; so they live here, on the server side of the line.
"""

from __future__ import annotations

from typing import Any

from carousel_gateway.fleet.events import (
    CommandAccepted,
    ConnectionChanged,
    Event,
    FaultCleared,
    FaultRaised,
    MoveCompleted,
    MoveFailed,
    PositionDesync,
    PositionDesyncCleared,
    Snapshot,
    TelemetrySourceChanged,
)
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.plc.status import FLAG_BY_KEY, StatusKey
from carousel_gateway.wire import (
    CommandData,
    CommandResult,
    HistoryEntry,
    MachineEvent,
    MachineEventKind,
    MachineState,
    MoveCompletedMessage,
    MoveFailedMessage,
    utc_timestamp,
)

__all__ = [
    "command_result",
    "history_entry",
    "machine_event",
    "machine_state",
    "main_reason",
    "move_message",
]


def machine_state(snapshot: Snapshot) -> MachineState:
    status = snapshot.status
    return MachineState(
        status=None if status is None else status.labels(),
        position=snapshot.position,
        raw_status=snapshot.raw_status,
        connection_status=snapshot.connection.value,
        last_update=None if snapshot.updated_at is None else utc_timestamp(snapshot.updated_at),
    )


def main_reason(reasons: tuple[str, ...]) -> str:
    """The most telling reason: a fault key before READY/mode, else the first."""
    for reason in reasons:
        try:
            if FLAG_BY_KEY[StatusKey(reason)].is_fault:
                return reason
        except ValueError:
            continue
    return reasons[0] if reasons else "unknown"


def history_entry(row: dict[str, Any]) -> HistoryEntry:
    """A journal row as clients see it: times as ISO strings."""
    data = dict(row)
    data["timestamp"] = utc_timestamp(data.pop("at"))
    if "completed_at" in data:
        data["completed_at"] = utc_timestamp(data["completed_at"])
    return HistoryEntry.model_validate(data)


def command_result(event: CommandAccepted, request_id: str | None) -> CommandResult:
    """A command as sent (or skipped): to its requester with its request_id, to command
    subscribers without one."""
    return CommandResult(
        machine_id=event.machine_id,
        data=CommandData(
            command_sent=event.command,
            argument=event.argument,
            result=event.result,
            skipped=event.skipped,
            command_id=event.command_id,
        ),
        timestamp=utc_timestamp(event.at),
        request_id=request_id,
    )


def move_message(
    event: MoveCompleted | MoveFailed, request_id: str | None
) -> MoveCompletedMessage | MoveFailedMessage:
    """How a move ended (arrived, or failed with its reasons), as the wire tells it."""
    if isinstance(event, MoveCompleted):
        return MoveCompletedMessage(
            machine_id=event.machine_id,
            command_id=event.command_id,
            position=event.position,
            duration_s=round(event.duration_s, 3),
            timestamp=utc_timestamp(event.at),
            request_id=request_id,
        )
    return MoveFailedMessage(
        machine_id=event.machine_id,
        command_id=event.command_id,
        reason=main_reason(event.reasons),
        reasons=list(event.reasons),
        target=event.target,
        position=event.position,
        duration_s=round(event.duration_s, 3),
        timestamp=utc_timestamp(event.at),
        request_id=request_id,
    )


_LINK_EVENTS = {
    ConnectionState.CONNECTED: MachineEventKind.CONNECTED,
    ConnectionState.DISCONNECTED: MachineEventKind.DISCONNECTED,
    ConnectionState.ERROR: MachineEventKind.ERROR,
}


def machine_event(event: Event) -> MachineEvent | None:
    """A machine event for ``all_events`` subscribers (None: not one of theirs: states go
    out as status broadcasts, commands and moves as their own messages)."""
    machine_id, at = event.machine_id, utc_timestamp(event.at)
    match event:
        case ConnectionChanged(state=state, reason=reason):
            kind = _LINK_EVENTS[state]
            return MachineEvent(machine_id=machine_id, event=kind, reason=reason, timestamp=at)
        case FaultRaised(keys=keys) | FaultCleared(keys=keys):
            kind = (
                MachineEventKind.FAULT_RAISED
                if isinstance(event, FaultRaised)
                else MachineEventKind.FAULT_CLEARED
            )
            return MachineEvent(machine_id=machine_id, event=kind, keys=list(keys), timestamp=at)
        case TelemetrySourceChanged(source=source, reason=reason):
            return MachineEvent(
                machine_id=machine_id,
                event=MachineEventKind.TELEMETRY_SOURCE,
                source=source.value,
                reason=reason,
                timestamp=at,
            )
        case PositionDesync(position=position, target=target):
            return MachineEvent(
                machine_id=machine_id,
                event=MachineEventKind.POSITION_DESYNC,
                position=position,
                target=target,
                timestamp=at,
            )
        case PositionDesyncCleared(position=position):
            return MachineEvent(
                machine_id=machine_id,
                event=MachineEventKind.POSITION_DESYNC_CLEARED,
                position=position,
                timestamp=at,
            )
    return None
