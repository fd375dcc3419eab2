"""Pydantic models of every WebSocket message, in and out, and their JSON encoding.

Wire names follow the spec (``shared/spec/websocket-api.md``): Spanish status keys and
labels, ``machine_status``, ``command_result``, ``status_broadcast``... Everything that goes
out is built from these models; nothing else writes JSON by hand.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import Snapshot
from carousel_gateway.plc.status import FLAG_BY_KEY, StatusKey
from carousel_gateway.store import HistoryKind

__all__ = ["ErrorCode", "GatewayError"]

MODE = "multi-plc"
CAPABILITIES = (
    "status_updates",
    "command_execution",
    "real_time_notifications",
    "move_tracking",
    "machine_events",
)


def epoch_seconds(moment: datetime | None) -> float | None:
    """Seconds since the epoch; a time without a zone is taken as UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def utc_timestamp(at: float | None = None) -> str:
    """UTC ISO 8601 with milliseconds and ``Z`` (e.g. ``2025-01-27T10:30:00.000Z``)."""
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# -- shared pieces ------------------------------------------------------------------------


class SubscriptionType(StrEnum):
    STATUS_UPDATES = "status_updates"
    COMMAND_RESULTS = "command_results"
    ALL_EVENTS = "all_events"


class _Out(BaseModel):
    """Outgoing messages: ``None`` fields that are optional extras are left out."""

    model_config = ConfigDict(frozen=True)

    def encode(self) -> str:
        return self.model_dump_json(exclude_none=True)


class _OutWithNulls(_Out):
    """Outgoing messages whose nulls are meaningful (unknown position, never read...)."""

    _keep_null: frozenset[str] = frozenset()

    def encode(self) -> str:
        data = self.model_dump(mode="json")
        for key in [k for k, v in data.items() if v is None and k not in self._keep_null]:
            del data[key]
        return _json_adapter.dump_json(data).decode()


_json_adapter: TypeAdapter[Any] = TypeAdapter(Any)


class MachineInfo(BaseModel):
    id: str
    name: str
    ip: str
    port: int
    type: Literal["Real PLC", "Simulator"]
    positions: int
    position_base: int
    description: str = ""


class MachineState(BaseModel):
    """One machine's live state as clients see it (``status`` null until a first read)."""

    status: dict[str, str] | None
    position: int | None
    raw_status: int | None
    connection_status: str
    last_update: str | None = None


def machine_state(snapshot: Snapshot) -> MachineState:
    status = snapshot.status
    return MachineState(
        status=None if status is None else status.labels(),
        position=snapshot.position,
        raw_status=snapshot.raw_status,
        connection_status=snapshot.connection.value,
        last_update=None if snapshot.updated_at is None else utc_timestamp(snapshot.updated_at),
    )


# -- client → server ----------------------------------------------------------------------


class _In(BaseModel):
    """Client messages. A key a message does not know is refused (INVALID_MESSAGE_FORMAT
    naming it), so that a misspelt or invented field is never silently ignored; every key
    the spec's own messages carry is known, ``timestamp`` included."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: Annotated[str, Field(max_length=128)] | None = None
    timestamp: Any = None  # informative only; clients send many formats


class GetStatus(_In):
    type: Literal["get_status"]
    machine_id: str | None = None


class CommandBody(BaseModel):
    """The spec's nested ``command: {command, argument}``. Values are checked by the machine
    so that a bad command byte or argument is ``INVALID_COMMAND``, not a format error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: Any = None
    argument: Any = None


_COMMAND_BODY_KEYS = frozenset(CommandBody.model_fields)
_NESTED_EXTRA = "nested_extra_forbidden"


class SendCommand(_In):
    """``command`` is the spec's nested object, or (flat form) the command byte itself with
    ``argument`` beside it. Their values are left to the machine to judge; the nested
    object's keys are not: only ``command`` and ``argument``."""

    type: Literal["send_command"]
    machine_id: str
    command: Any = None
    argument: Any = None

    @field_validator("command")
    @classmethod
    def _known_command_keys(cls, value: Any) -> Any:
        """The nested form's keys are checked with the message (its values are not)."""
        if isinstance(value, dict):
            unknown = [key for key in value if key not in _COMMAND_BODY_KEYS]
            if unknown:
                raise PydanticCustomError(
                    _NESTED_EXTRA, "unknown key {key}", {"key": _shown_key(str(unknown[0]))}
                )
        return value

    def command_and_argument(self) -> tuple[Any, Any]:
        if isinstance(self.command, dict):
            body = CommandBody.model_validate(self.command)
            return body.command, body.argument
        return self.command, self.argument


class Subscribe(_In):
    type: Literal["subscribe"]
    subscription_type: SubscriptionType
    machine_ids: Annotated[list[str], Field(max_length=10_000)] | None = None


class Unsubscribe(_In):
    type: Literal["unsubscribe"]
    subscription_type: SubscriptionType
    machine_ids: Annotated[list[str], Field(max_length=10_000)] | None = None


class Ping(_In):
    type: Literal["ping"]


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _iso_only(value: Any) -> Any:
    """Times are ISO 8601 strings; a bare number (epoch seconds?) is ambiguous: refused."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("expected an ISO 8601 date-time string, not a number")
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("expected an ISO 8601 date-time string, not a number")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]


class GetHistory(_In):
    """Journal entries, newest first; ``next_cursor`` of a reply continues to older ones."""

    type: Literal["get_history"]
    machine_id: str | None = None
    since: IsoDateTime | None = None
    until: IsoDateTime | None = None
    kinds: Annotated[list[HistoryKind], Field(max_length=50)] | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    cursor: Annotated[int, Field(ge=1, le=2**62)] | None = None


class GetCounters(_In):
    type: Literal["get_counters"]
    machine_id: str | None = None


ClientMessage = Annotated[
    GetStatus | SendCommand | Subscribe | Unsubscribe | Ping | GetHistory | GetCounters,
    Field(discriminator="type"),
]
CLIENT_MESSAGE_TYPES = (
    "get_status",
    "send_command",
    "subscribe",
    "unsubscribe",
    "ping",
    "get_history",
    "get_counters",
)
_client_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)


def parse_client_message(
    raw: str | bytes,
) -> GetStatus | SendCommand | Subscribe | Unsubscribe | Ping:
    """Parse one frame; raises ``GatewayError(INVALID_MESSAGE_FORMAT)`` with a clear text."""
    try:
        data = _json_adapter.validate_json(raw)
    except ValidationError:
        raise GatewayError(ErrorCode.INVALID_MESSAGE_FORMAT, "message is not valid JSON") from None
    if not isinstance(data, dict):
        raise GatewayError(ErrorCode.INVALID_MESSAGE_FORMAT, "message must be a JSON object")
    kind = data.get("type")
    if kind not in CLIENT_MESSAGE_TYPES:
        known = ", ".join(CLIENT_MESSAGE_TYPES)
        shown = kind if isinstance(kind, str) and len(kind) <= 64 else "(missing or invalid)"
        raise GatewayError(
            ErrorCode.INVALID_MESSAGE_FORMAT, f"unknown message type {shown!r}; known: {known}"
        )
    try:
        return _client_adapter.validate_python(data)
    except ValidationError as exc:
        raise GatewayError(ErrorCode.INVALID_MESSAGE_FORMAT, _describe(exc)) from None


def request_id_of(raw: str | bytes) -> str | None:
    """Best effort: the request_id of a frame that failed validation, to echo it back."""
    try:
        data = _json_adapter.validate_json(raw)
    except ValidationError:
        return None
    if isinstance(data, dict):
        value = data.get("request_id")
        if isinstance(value, str) and len(value) <= 128:
            return value
    return None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        location = ".".join(_shown_key(str(p)) for p in error["loc"][1:]) or "message"
        if error["type"] == "extra_forbidden":
            text = "unknown key"
        elif error["type"] == _NESTED_EXTRA:
            location += f".{error.get('ctx', {}).get('key')}"
            text = "unknown key"
        else:
            text = error["msg"]
        parts.append(f"{location}: {text}")
    return "invalid message: " + "; ".join(parts)


def _shown_key(key: str) -> str:
    """A client's key as shown in an error: no longer than 64 characters."""
    return key if len(key) <= 64 else key[:63] + "…"


# -- server → client ----------------------------------------------------------------------


class ServerInfo(BaseModel):
    version: str
    capabilities: list[str]


class Welcome(_Out):
    type: Literal["welcome"] = "welcome"
    timestamp: str
    mode: str = MODE
    server_info: ServerInfo
    machines: list[MachineInfo]
    auth: dict[str, str] | None = None  # {"role": ..., "client": ...} when auth is on


class MachineStatus(_OutWithNulls):
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


class FleetStatus(_Out):
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


class CommandResult(_Out):
    type: Literal["command_result"] = "command_result"
    machine_id: str
    success: bool = True
    data: CommandData
    timestamp: str
    request_id: str | None = None

    def encode(self) -> str:
        # data.argument stays even when null (a STATUS command has none), as in the spec.
        return self.model_dump_json(exclude={"request_id"} if self.request_id is None else None)


class MoveCompletedMessage(_Out):
    type: Literal["move_completed"] = "move_completed"
    machine_id: str
    command_id: int
    position: int
    duration_s: float
    timestamp: str
    request_id: str | None = None


class MoveFailedMessage(_Out):
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


def main_reason(reasons: tuple[str, ...]) -> str:
    """The most telling reason: a fault key before READY/mode, else the first."""
    for reason in reasons:
        try:
            if FLAG_BY_KEY[StatusKey(reason)].is_fault:
                return reason
        except ValueError:
            continue
    return reasons[0] if reasons else "unknown"


class SubscriptionConfirmed(_Out):
    type: Literal["subscription_confirmed"] = "subscription_confirmed"
    subscription_type: SubscriptionType
    machine_ids: list[str]
    timestamp: str
    request_id: str | None = None


class UnsubscriptionConfirmed(_Out):
    type: Literal["unsubscription_confirmed"] = "unsubscription_confirmed"
    subscription_type: SubscriptionType
    machine_ids: list[str]
    timestamp: str
    request_id: str | None = None


class StatusBroadcast(_Out):
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


class MachineEvent(_Out):
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


class History(_Out):
    type: Literal["history"] = "history"
    machine_id: str | None = None
    entries: list[HistoryEntry]
    next_cursor: int | None = None
    timestamp: str
    request_id: str | None = None


class Counters(_Out):
    type: Literal["counters"] = "counters"
    machine_id: str | None = None
    counters: dict[str, dict[str, float]]
    timestamp: str
    request_id: str | None = None


class ErrorMessage(_Out):
    type: Literal["error"] = "error"
    error: str
    code: ErrorCode
    machine_id: str | None = None
    reasons: list[str] | None = None
    timestamp: str
    request_id: str | None = None


def error_message(error: GatewayError, request_id: str | None = None) -> ErrorMessage:
    """The one place a GatewayError becomes a WebSocket ``error`` message."""
    return ErrorMessage(
        error=error.message,
        code=error.code,
        machine_id=error.machine_id,
        reasons=list(error.reasons) or None,
        timestamp=utc_timestamp(),
        request_id=request_id,
    )


class Pong(_Out):
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
)
CLIENT_MESSAGES = (GetStatus, SendCommand, Subscribe, Unsubscribe, Ping, GetHistory, GetCounters)
SERVER_MESSAGES = (
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
)


def history_entry(row: dict[str, Any]) -> HistoryEntry:
    """A journal row as clients see it: times as ISO strings."""
    data = dict(row)
    data["timestamp"] = utc_timestamp(data.pop("at"))
    if "completed_at" in data:
        data["completed_at"] = utc_timestamp(data["completed_at"])
    return HistoryEntry.model_validate(data)
