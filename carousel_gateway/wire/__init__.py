"""The WebSocket wire: pydantic models of every message, in and out, and their JSON.

Wire names follow the spec (``docs/spec/websocket-api.md``): Spanish status keys and
labels, ``machine_status``, ``command_result``... A leaf: it imports pydantic, the stdlib
and the error table only, so :mod:`carousel_gateway.client` loads no server code
(import-linter and ``tests/unit/test_wire_leaf.py`` keep it so).
"""

from __future__ import annotations

from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.wire.clock import (
    epoch_seconds,
    utc_timestamp,
)
from carousel_gateway.wire.common import (
    CAPABILITIES,
    KINDS,
    MODE,
    HistoryKind,
    MachineInfo,
    MachineState,
    SubscriptionType,
)
from carousel_gateway.wire.inbound import (
    CLIENT_MESSAGE_TYPES,
    CLIENT_MESSAGES,
    ClientMessage,
    CommandBody,
    GetCounters,
    GetHistory,
    GetStatus,
    IsoDateTime,
    Ping,
    SendCommand,
    Subscribe,
    Unsubscribe,
    parse_client_message,
    request_id_of,
)
from carousel_gateway.wire.outbound import (
    SERVER_MESSAGES,
    CommandData,
    CommandResult,
    Counters,
    ErrorMessage,
    FleetStatus,
    History,
    HistoryEntry,
    MachineEvent,
    MachineEventKind,
    MachineStatus,
    MoveCompletedMessage,
    MoveFailedMessage,
    Pong,
    ServerInfo,
    ServerMessage,
    StatusBroadcast,
    SubscriptionConfirmed,
    UnsubscriptionConfirmed,
    Welcome,
    error_message,
)

__all__ = [
    "CAPABILITIES",
    "CLIENT_MESSAGES",
    "CLIENT_MESSAGE_TYPES",
    "KINDS",
    "MODE",
    "SERVER_MESSAGES",
    "ClientMessage",
    "CommandBody",
    "CommandData",
    "CommandResult",
    "Counters",
    "ErrorCode",
    "ErrorMessage",
    "FleetStatus",
    "GatewayError",
    "GetCounters",
    "GetHistory",
    "GetStatus",
    "History",
    "HistoryEntry",
    "HistoryKind",
    "IsoDateTime",
    "MachineEvent",
    "MachineEventKind",
    "MachineInfo",
    "MachineState",
    "MachineStatus",
    "MoveCompletedMessage",
    "MoveFailedMessage",
    "Ping",
    "Pong",
    "SendCommand",
    "ServerInfo",
    "ServerMessage",
    "StatusBroadcast",
    "Subscribe",
    "SubscriptionConfirmed",
    "SubscriptionType",
    "Unsubscribe",
    "UnsubscriptionConfirmed",
    "Welcome",
    "epoch_seconds",
    "error_message",
    "parse_client_message",
    "request_id_of",
    "utc_timestamp",
]
