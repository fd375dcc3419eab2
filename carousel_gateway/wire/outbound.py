"""Server → client messages (spec shapes: ``machine_status``, ``command_result``...).

Everything the gateway sends is built from these models; nothing else writes JSON by hand.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.wire.clock import utc_timestamp
from carousel_gateway.wire.common import (
    MODE,
    MachineInfo,
    MachineState,
    Outgoing,
    OutgoingWithNulls,
    SubscriptionType,
)
from carousel_gateway.wire.jobs import (
    JobAccepted,
    JobEventMessage,
    Jobs,
    JobUpdate,
    PickConfirmed,
)

__all__ = [
    "SERVER_MESSAGES",
    "CommandData",
    "CommandResult",
    "Counters",
    "ErrorMessage",
    "FleetStatus",
    "History",
    "HistoryEntry",
    "MachineEvent",
    "MachineEventKind",
    "MachineStatus",
    "MoveCompletedMessage",
    "MoveFailedMessage",
    "Pong",
    "ServerInfo",
    "ServerMessage",
    "StatusBroadcast",
    "SubscriptionConfirmed",
    "UnsubscriptionConfirmed",
    "Welcome",
    "error_message",
]


class ServerInfo(BaseModel):
    version: str
    capabilities: list[str]


class Welcome(Outgoing):
    type: Literal["welcome"] = "welcome"
    timestamp: str
    mode: str = MODE
    server_info: ServerInfo
    machines: list[MachineInfo]
    auth: dict[str, str] | None = None  # {"role": ..., "client": ...} when auth is on


class MachineStatus(OutgoingWithNulls):
    """Reply to ``get_status`` for one machine (spec shape), nulls kept."""

    _keep_null = frozenset({"status", "position", "raw_status"})

    type: Literal["machine_status"] = "machine_status"
    machine_id: str
    status: dict[str, str] | None
    position: int | None
    raw_status: int | None
    connection_status: str
    last_update: str | None = None
    timestamp: str
    request_id: str | None = None


class FleetStatus(Outgoing):
    """Reply to ``get_status`` without ``machine_id``: every machine at once."""

    type: Literal["machine_status"] = "machine_status"
    machines: dict[str, MachineState]
    timestamp: str
    request_id: str | None = None

    def encode(self) -> str:
        return self.model_dump_json(exclude={"request_id"} if self.request_id is None else None)


class CommandData(BaseModel):
    command_sent: int
    argument: int | None = None
    result: str
    skipped: bool = False
    command_id: int


class CommandResult(Outgoing):
    type: Literal["command_result"] = "command_result"
    machine_id: str
    success: bool = True
    data: CommandData
    timestamp: str
    request_id: str | None = None

    def encode(self) -> str:
        # data.argument stays even when null (a STATUS command has none), as in the spec.
        return self.model_dump_json(exclude={"request_id"} if self.request_id is None else None)


class MoveCompletedMessage(Outgoing):
    type: Literal["move_completed"] = "move_completed"
    machine_id: str
    command_id: int
    position: int
    duration_s: float
    timestamp: str
    request_id: str | None = None


class MoveFailedMessage(Outgoing):
    type: Literal["move_failed"] = "move_failed"
    machine_id: str
    command_id: int
    reason: str  # the main reason: a fault key, "timeout", "connection_lost", ...
    reasons: list[str]  # every reason, in bit order
    target: int
    position: int | None
    duration_s: float
    timestamp: str
    request_id: str | None = None


class SubscriptionConfirmed(Outgoing):
    type: Literal["subscription_confirmed"] = "subscription_confirmed"
    subscription_type: SubscriptionType
    machine_ids: list[str]
    workstation_ids: list[str] | None = None  # job_events: the workstations it covers
    timestamp: str
    request_id: str | None = None


class UnsubscriptionConfirmed(Outgoing):
    type: Literal["unsubscription_confirmed"] = "unsubscription_confirmed"
    subscription_type: SubscriptionType
    machine_ids: list[str]
    workstation_ids: list[str] | None = None  # job_events: the workstations it covers
    timestamp: str
    request_id: str | None = None


class StatusBroadcast(Outgoing):
    type: Literal["status_broadcast"] = "status_broadcast"
    timestamp: str
    status: dict[str, MachineState]

    def encode(self) -> str:
        return self.model_dump_json()


class MachineEventKind(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    ERROR = "error"
    FAULT_RAISED = "fault_raised"
    FAULT_CLEARED = "fault_cleared"
    TELEMETRY_SOURCE = "telemetry_source"  # Modbus ↔ port-3200 fallback
    POSITION_DESYNC = "position_desync"  # warning: idle, latched target ≠ position
    POSITION_DESYNC_CLEARED = "position_desync_cleared"


class MachineEvent(Outgoing):
    type: Literal["machine_event"] = "machine_event"
    machine_id: str
    event: MachineEventKind
    keys: list[str] | None = None
    reason: str | None = None
    source: str | None = None  # telemetry_source: "modbus" or "port3200"
    position: int | None = None  # position_desync
    target: int | None = None  # position_desync: the latched target
    timestamp: str


class HistoryEntry(BaseModel):
    """One journal row: a command (with its outcome once known) or a machine event."""

    model_config = ConfigDict(extra="allow")

    id: int
    timestamp: str
    machine_id: str
    kind: str


class History(Outgoing):
    type: Literal["history"] = "history"
    machine_id: str | None = None
    entries: list[HistoryEntry]
    next_cursor: int | None = None
    timestamp: str
    request_id: str | None = None


class Counters(Outgoing):
    type: Literal["counters"] = "counters"
    machine_id: str | None = None
    counters: dict[str, dict[str, int | float]] = Field(
        description="Per machine: counts are integers; seconds_in_motion is a float"
    )
    timestamp: str
    request_id: str | None = None


class ErrorMessage(Outgoing):
    type: Literal["error"] = "error"
    error: str
    code: ErrorCode
    machine_id: str | None = None
    reasons: list[str] | None = None
    #: NOT_ACTIVE: the instance that holds the cell's lease, and its WebSocket URL.
    active_instance: str | None = None
    active_url: str | None = None
    timestamp: str
    request_id: str | None = None


def error_message(error: GatewayError, request_id: str | None = None) -> ErrorMessage:
    """The one place a GatewayError becomes a WebSocket ``error`` message."""
    return ErrorMessage(
        error=error.message,
        code=error.code,
        machine_id=error.machine_id,
        reasons=list(error.reasons) or None,
        active_instance=error.active_instance,
        active_url=error.active_ws_url,
        timestamp=utc_timestamp(),
        request_id=request_id,
    )


class Pong(Outgoing):
    type: Literal["pong"] = "pong"
    timestamp: str
    request_id: str | None = None


ServerMessage = (
    Welcome
    | MachineStatus
    | FleetStatus
    | CommandResult
    | MoveCompletedMessage
    | MoveFailedMessage
    | SubscriptionConfirmed
    | UnsubscriptionConfirmed
    | StatusBroadcast
    | MachineEvent
    | ErrorMessage
    | Pong
    | History
    | Counters
    | JobAccepted
    | Jobs
    | PickConfirmed
    | JobUpdate
    | JobEventMessage
)
SERVER_MESSAGES: tuple[type[BaseModel], ...] = (
    Welcome,
    MachineStatus,
    FleetStatus,
    CommandResult,
    MoveCompletedMessage,
    MoveFailedMessage,
    SubscriptionConfirmed,
    UnsubscriptionConfirmed,
    StatusBroadcast,
    MachineEvent,
    ErrorMessage,
    Pong,
    History,
    Counters,
    JobAccepted,
    Jobs,
    PickConfirmed,
    JobUpdate,
    JobEventMessage,
)
