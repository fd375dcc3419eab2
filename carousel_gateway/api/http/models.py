"""The REST API's request and response models: what goes over HTTP, and so what
``/openapi.json`` documents. Every JSON reply is an :class:`Envelope`."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from carousel_gateway.api.simulators import SimulatorFault, SimulatorLinkAction
from carousel_gateway.errors import ErrorCode
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.wire import (
    HistoryEntry,
    JobView,
    MachineInfo,
    MachineState,
    WorkstationView,
    utc_timestamp,
)

__all__ = [
    "WAIT_TEXT",
    "CommandData",
    "CommandRequest",
    "CommandResponse",
    "ConnectionDiagnostics",
    "DiagnosticsResponse",
    "Envelope",
    "ErrorData",
    "ErrorResponse",
    "FaultData",
    "FaultRequest",
    "FaultResponse",
    "HaHealth",
    "HaInstance",
    "HaTakeover",
    "HealthData",
    "HealthResponse",
    "HistoryData",
    "HistoryResponse",
    "Interlock",
    "JobControlRequest",
    "JobResponse",
    "JobsResponse",
    "JournalHealth",
    "LinkData",
    "LinkRequest",
    "LinkResponse",
    "MachineDiagnostics",
    "MachineEntry",
    "MachineEnvelope",
    "MachineStatusResponse",
    "MachinesResponse",
    "MoveOutcome",
    "MoveRequest",
    "MqttHealth",
    "PickConfirmRequest",
    "ReadyData",
    "ReadyResponse",
    "Refusal",
    "ShortcutCommandRequest",
    "TelemetryDiagnostics",
    "WaitMode",
    "WorkstationResponse",
    "WorkstationsResponse",
]

DataT = TypeVar("DataT")


class _Reply(BaseModel):
    """Reply models: every field is always sent, so the schema marks every one required."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class Envelope(_Reply, Generic[DataT]):
    """Every JSON reply: ``success`` with ``data``, or ``error`` with a ``code``."""

    success: bool = True
    data: DataT
    error: str | None = None
    code: ErrorCode | None = None
    timestamp: str = Field(
        default_factory=utc_timestamp,
        description="UTC, ISO 8601 with milliseconds",
        examples=["2025-01-27T10:30:00.000Z"],
    )


class MachineEnvelope(Envelope[DataT], Generic[DataT]):
    machine_id: str


class MachineEntry(MachineInfo):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    status: str = Field(description="Connection state of the gateway's link to the PLC")


class MoveOutcome(_Reply):
    """How a move ended: arrived at its target, or failed (and why)."""

    state: Literal["arrived", "failed"]
    command_id: int
    target: int
    position: int | None = Field(description="Where the carousel stood at the end")
    reason: str | None = Field(None, description="Main reason of a failure")
    reasons: list[str] = Field(
        default_factory=list, description="Every reason: fault keys, timeout, connection_lost..."
    )
    duration_s: float
    timestamp: str


class CommandData(_Reply):
    command_sent: int
    argument: int | None
    result: str
    skipped: bool = Field(description="True when the carousel already stood there: not sent")
    command_id: int
    outcome: MoveOutcome | None = Field(
        None, description="With wait=arrival: how the move ended (null without it)"
    )


class ErrorData(_Reply):
    reasons: list[str] = Field(
        default_factory=list, description="Status keys or reasons behind BUSY/MACHINE_NOT_READY"
    )
    command: CommandData | None = Field(
        None,
        description="The command, when it was sent but its move did not arrive (its own "
        "`outcome` is null: the outcome is `data.outcome`, where a success has it too)",
    )
    outcome: MoveOutcome | None = Field(
        None,
        description="With wait=arrival, a move that was sent and did not arrive: how it "
        "ended (null when that is unknown, and for every other error)",
    )
    active_instance: str | None = Field(
        None, description="NOT_ACTIVE: the gateway instance that holds the cell's lease"
    )
    active_url: str | None = Field(
        None, description="NOT_ACTIVE: that instance's REST base URL (send commands there)"
    )


class ErrorResponse(Envelope[ErrorData]):
    """Any error. ``code`` is null only for HTTP-level errors (unknown path, bad method)."""

    success: bool = False
    error: str
    machine_id: str | None = None


class ConnectionDiagnostics(_Reply):
    host: str
    port: int
    state: ConnectionState
    connected_since: str | None
    reconnects: int
    last_error: str | None
    latency_p50_s: float | None = Field(description="Over the recent requests to the PLC")
    latency_p99_s: float | None
    latency_samples: int
    bad_replies: int = Field(description="Replies ignored (position outside the machine)")


class Interlock(_Reply):
    key: str
    text: str


class Refusal(_Reply):
    """Why a move would be refused right now."""

    code: ErrorCode
    message: str
    reasons: list[str]


class TelemetryDiagnostics(_Reply):
    """Where status and position come from (Modbus machines can fall back to port 3200)."""

    configured: Literal["port3200", "modbus"]
    source: str = Field(description="The source in use now: modbus or port3200")
    fallbacks: int
    modbus_state: str | None
    modbus_last_error: str | None
    registers: dict[str, int] | None = Field(description="Raw registers of the last Modbus read")
    position_desync: dict[str, int] | None = Field(
        description="Idle with the latched target (D2) not at the position (D0): a warning"
    )


class MachineDiagnostics(_Reply):
    connection: ConnectionDiagnostics
    state: MachineState
    faults: list[str] = Field(description="Active fault keys, in bit order")
    interlocks: list[Interlock] = Field(description="Every status bit that blocks a move now")
    move_refusal: Refusal | None = Field(description="Null when a move would be accepted now")
    busy: bool
    active_target: int | None
    last_move: MoveOutcome | None
    telemetry: TelemetryDiagnostics
    counters: dict[str, int | float] | None = Field(
        description="Maintenance counters from the journal (null when it is disabled)"
    )


class HistoryData(_Reply):
    entries: list[HistoryEntry]
    next_cursor: int | None = Field(description="Pass as `cursor` for the next, older page")


class JournalHealth(_Reply):
    state: Literal["ok", "degraded", "disabled"]
    dropped: int = Field(description="Records the journal could not write so far")
    pending: int
    last_error: str | None


class MqttHealth(_Reply):
    state: Literal["connecting", "waiting_for_host", "online", "disconnected", "standby"] = (
        Field(
            description="online: connected and born (JSON: online status published); "
            "waiting_for_host: connected, the primary host is not online; "
            "standby: [ha] standby, not connected on purpose (the cell's active publishes)"
        )
    )
    since: str = Field(description="When the link entered this state")
    broker: str = Field(description="host:port of the broker")
    format: Literal["sparkplug", "json"]
    bd_seq: int | None = Field(description="The Sparkplug bdSeq of the current connection")
    last_error: str | None


class HaTakeover(_Reply):
    """The latest take of the cell's lease, by the database's clock."""

    instance: str = Field(description="The instance that took the lease")
    epoch: int = Field(description="The epoch it took")
    at: str = Field(description="When it took the lease (UTC, ISO 8601)")
    ready_at: str | None = Field(
        description="When it had read every machine of the cell and drove them (null while "
        "it has not yet)"
    )
    previous_instance: str | None = Field(
        description="Who held the lease before (null for the cell's first take)"
    )
    seconds: float | None = Field(
        description="From the previous holder's last renewal to ready_at, one decimal: how "
        "long the cell was not driven (null while not ready, or when unknown)"
    )


class HaInstance(_Reply):
    """An instance of the cell, as it registered itself in the database."""

    instance: str
    http_url: str | None = Field(description="Its REST base URL (where its pages are)")
    ws_url: str | None = Field(description="Its WebSocket API URL")


class HaHealth(_Reply):
    """This instance's part in its cell (two gateways per cell, ``[ha]``)."""

    role: Literal["standby", "active", "fenced"]
    cell: str
    instance: str
    epoch: int | None = Field(description="The lease epoch held (null unless active)")
    lease_deadline_s: float | None = Field(
        description="Seconds until this active instance fences itself unless it renews"
    )
    active_instance: str | None = Field(description="Who holds the lease, as last read")
    active_url: str | None = Field(description="That instance's REST base URL")
    takeovers: int
    fenced_writes: int
    takeover: HaTakeover | None = Field(
        default=None, description="The latest takeover of the cell (null: none read yet)"
    )
    instances: list[HaInstance] = Field(
        default_factory=list,
        description="Every instance of the cell, this one included: a page served by one "
        "finds the others here (their /v1/health answers the cell's own origins)",
    )


class HealthData(_Reply):
    status: Literal["healthy", "degraded", "critical"] = Field(
        description="healthy: every PLC connected; critical: none; degraded: some. A standby "
        "(two gateways per cell) drives no PLC: healthy while another instance is active, "
        "critical while none is"
    )
    version: str
    machines: dict[str, ConnectionState]
    journal: JournalHealth
    mqtt: MqttHealth | None = Field(
        default=None, description="The MQTT north interface (null when [mqtt] is off)"
    )
    ha: HaHealth | None = Field(
        default=None, description="Active/standby in a cell (null when [ha] is off)"
    )


class ReadyData(_Reply):
    ready: bool


class FaultData(_Reply):
    fault: SimulatorFault
    active: bool
    faults: list[SimulatorFault] = Field(description="Every fault now active on the simulator")
    status_byte: int = Field(description="The simulator's status byte now")


class LinkData(_Reply):
    action: SimulatorLinkAction
    stalled: bool
    session_open: bool


class MachinesResponse(Envelope[list[MachineEntry]]):
    pass


class MachineStatusResponse(MachineEnvelope[MachineState]):
    pass


class CommandResponse(MachineEnvelope[CommandData]):
    pass


class DiagnosticsResponse(MachineEnvelope[MachineDiagnostics]):
    pass


class HealthResponse(Envelope[HealthData]):
    pass


class HistoryResponse(Envelope[HistoryData]):
    machine_id: str | None = None


class ReadyResponse(Envelope[ReadyData]):
    pass


class FaultResponse(MachineEnvelope[FaultData]):
    pass


class LinkResponse(MachineEnvelope[LinkData]):
    pass


class JobResponse(Envelope[JobView]):
    """A pick job with its lines (and their states), the planned route and its stats."""


class JobsResponse(Envelope[list[JobView]]):
    pass


class WorkstationResponse(Envelope[WorkstationView]):
    """A workstation: the stop to pick from now, every presented stop, queue and route."""


class WorkstationsResponse(Envelope[list[WorkstationView]]):
    pass


WaitMode = Literal["arrival"]

WAIT_TEXT = (
    '"arrival": hold the reply until the move arrives or fails (bounded by the machine\'s '
    "move_timeout_s) and return its outcome"
)


class CommandRequest(BaseModel):
    """A command as in the WebSocket ``send_command``. Values are judged by the machine.
    Like every request body, a key it does not know is refused (400, naming the key)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"command": 1, "argument": 25}]}
    )

    # No bounds here: the machine judges values (INVALID_COMMAND, journalled), as it does
    # for the WebSocket API, so both APIs refuse a bad value the same way.
    command: StrictInt = Field(
        description="0 STATUS, 1 MOVE (others only where the machine allows); 0..255"
    )
    argument: StrictInt | None = Field(
        None, description="For MOVE: the target position (1..positions)"
    )
    wait: WaitMode | None = Field(None, description=WAIT_TEXT)


class ShortcutCommandRequest(CommandRequest):
    """``POST /v1/command``: the machine is named in the body, and may be left out only when
    the gateway has exactly one machine."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"machine_id": "machine_1", "command": 1, "argument": 25}]},
    )

    machine_id: str | None = Field(
        None, max_length=128, description="The machine; required unless the gateway has exactly one"
    )


class MoveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"position": 7}]})

    position: StrictInt = Field(
        description="Target position, in the machine's numbering (1..positions)"
    )
    wait: WaitMode | None = Field(None, description=WAIT_TEXT)


class FaultRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"fault": "emergency_stop", "active": True}]},
    )

    fault: SimulatorFault
    active: StrictBool


class LinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"action": "drop"}]})

    action: SimulatorLinkAction


class PickConfirmRequest(BaseModel):
    """What the operator took from a presented line's bucket."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"quantity_picked": 2},
                {"quantity_picked": 1, "reason": "only 1 in the bucket"},
                {"quantity_picked": 2, "confirmation_id": "7f9c2ba4-e88f-4e2b-9d1c-3b5a0d6e1f20"},
            ]
        },
    )

    quantity_picked: StrictInt = Field(
        description="0..quantity; less than asked is a short pick and needs a reason"
    )
    reason: str | None = Field(None, max_length=500, description="Why a short pick")
    confirmation_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="The client's id for this confirmation (a UUID, say), sent again "
        "unchanged with every retry: a retry of a confirmation already stored is answered "
        "with the stored result (200), also by the other gateway of a cell after a "
        "takeover; the same id with another line, quantity or reason is JOB_CONFLICT (409). "
        "Without an id, the same quantity and reason for a line already confirmed is "
        "answered the same way.",
    )


class JobControlRequest(BaseModel):
    """Optional body of pause and cancel: why (journalled, shown on the station view)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "tote missing"}]}
    )

    reason: str | None = Field(None, max_length=500, description="Why (shown to the operator)")
