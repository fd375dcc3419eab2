"""Pieces both directions share: the outgoing bases, machine shapes, journal kinds.

``HistoryKind`` is defined here, not in the journal (:mod:`carousel_gateway.store` imports
it from here), because ``get_history`` names it and the wire must not load the server.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, TypeAdapter

__all__ = [
    "CAPABILITIES",
    "JOB_CAPABILITY",
    "KINDS",
    "MODE",
    "HistoryKind",
    "MachineInfo",
    "MachineState",
    "Outgoing",
    "OutgoingWithNulls",
    "SubscriptionType",
    "json_adapter",
]

MODE = "multi-plc"
CAPABILITIES = (
    "status_updates",
    "command_execution",
    "real_time_notifications",
    "move_tracking",
    "machine_events",
)
#: Listed in ``welcome`` capabilities when the gateway runs pick jobs (it has workstations).
JOB_CAPABILITY = "pick_jobs"

#: Row kinds a history query can filter on (the APIs validate against this type).
HistoryKind = Literal[
    "command",
    "command_refused",
    "move_completed",
    "move_failed",
    "connected",
    "disconnected",
    "error",
    "fault_raised",
    "fault_cleared",
    "telemetry_source_changed",
    "position_desync",
    "position_desync_cleared",
]
KINDS: tuple[str, ...] = get_args(HistoryKind)


class SubscriptionType(StrEnum):
    STATUS_UPDATES = "status_updates"
    COMMAND_RESULTS = "command_results"
    ALL_EVENTS = "all_events"
    JOB_EVENTS = "job_events"  # pick jobs' job_event messages, filtered by workstation_ids


class Outgoing(BaseModel):
    """Outgoing messages: ``None`` fields that are optional extras are left out."""

    model_config = ConfigDict(frozen=True)

    def encode(self) -> str:
        return self.model_dump_json(exclude_none=True)


class OutgoingWithNulls(Outgoing):
    """Outgoing messages whose nulls are meaningful (unknown position, never read...)."""

    _keep_null: frozenset[str] = frozenset()

    def encode(self) -> str:
        data = self.model_dump(mode="json")
        for key in [k for k, v in data.items() if v is None and k not in self._keep_null]:
            del data[key]
        return json_adapter.dump_json(data).decode()


json_adapter: TypeAdapter[Any] = TypeAdapter(Any)


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
