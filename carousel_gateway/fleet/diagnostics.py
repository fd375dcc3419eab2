"""One machine's diagnostics at one instant, as plain frozen values.

The REST diagnostics route and the Prometheus collector both read this report instead of
walking ``machine.connection`` and the telemetry internals, so the drivers can change
without the APIs noticing. Values stay typed (enums, wall-clock seconds, fleet events);
turning them into JSON or metrics is each API's job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import (
    MoveCompleted,
    MoveFailed,
    PositionDesync,
    Snapshot,
    TelemetrySource,
)
from carousel_gateway.plc.connection import ConnectionState

if TYPE_CHECKING:
    from carousel_gateway.fleet.machine import Machine

__all__ = [
    "Blocker",
    "DiagnosticsReport",
    "LinkReport",
    "MoveRefusal",
    "TelemetryReport",
    "diagnose",
    "percentile",
]


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ascending values (rounded to the µs); None if empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return round(sorted_values[rank - 1], 6)


@dataclass(frozen=True, slots=True)
class LinkReport:
    """The port-3200 link (the command link; the telemetry too unless Modbus is)."""

    host: str
    port: int
    state: ConnectionState
    connected_since: float | None  # wall clock (time.time()), None while down
    reconnects: int
    last_error: str | None
    #: Recent request latencies, oldest first: the link's own float objects, so a reader
    #: can tell by identity which ones it has already seen (the metrics histogram does).
    latencies_s: tuple[float, ...]
    latency_p50_s: float | None
    latency_p99_s: float | None
    bad_replies: int  # readings the machine ignored plus replies the link refused
    out_of_step_faults: int  # link drops for bytes no request explains
    breaker_opened: int  # times repeated failures opened the link's circuit breaker


@dataclass(frozen=True, slots=True)
class TelemetryReport:
    """Where readings come from; the Modbus fields are None on a port-3200 machine."""

    configured: Literal["port3200", "modbus"]  # as configured
    source: TelemetrySource  # the source in use now
    fallbacks: int  # Modbus → port-3200 fallbacks so far
    modbus_state: ConnectionState | None
    modbus_last_error: str | None
    registers: Mapping[str, int] | None  # the last Modbus reading, by register ("D0": 5)
    position_desync: PositionDesync | None  # the desync being reported, if any


@dataclass(frozen=True, slots=True)
class Blocker:
    """A status condition that stops the machine from moving, with its operator text."""

    key: str
    text: str


@dataclass(frozen=True, slots=True)
class MoveRefusal:
    """Why a MOVE sent now would be refused (the error it would raise)."""

    code: ErrorCode
    message: str
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DiagnosticsReport:
    """Everything an operator asks about one machine, taken at one instant."""

    machine_id: str
    snapshot: Snapshot
    link: LinkReport
    telemetry: TelemetryReport
    faults: tuple[str, ...]  # active fault keys, in bit order
    blockers: tuple[Blocker, ...]  # every condition that forbids a move (faults included)
    move_refusal: MoveRefusal | None  # None: a MOVE would be sent now
    busy: bool
    move_outcome_unknown: bool
    active_target: int | None
    last_outcome: MoveCompleted | MoveFailed | None


def diagnose(machine: Machine) -> DiagnosticsReport:
    """The report of ``machine`` now (what ``Machine.diagnostics()`` returns)."""
    snapshot = machine.snapshot
    status = snapshot.status
    refusal: MoveRefusal | None = None
    try:
        machine.check_free()  # a command in flight, a move, or one whose outcome is unknown
        machine.check_interlocks(snapshot)
    except GatewayError as exc:
        refusal = MoveRefusal(code=exc.code, message=exc.message, reasons=tuple(exc.reasons))
    return DiagnosticsReport(
        machine_id=machine.id,
        snapshot=snapshot,
        link=_link(machine),
        telemetry=_telemetry(machine),
        faults=() if status is None else tuple(key.value for key in status.faults()),
        blockers=(
            ()
            if status is None
            else tuple(Blocker(key=b.key.value, text=b.text) for b in status.blockers())
        ),
        move_refusal=refusal,
        busy=machine.busy,
        move_outcome_unknown=machine.move_outcome_unknown,
        active_target=machine.active_target,
        last_outcome=machine.last_outcome,
    )


def _link(machine: Machine) -> LinkReport:
    connection = machine.connection
    latencies = tuple(connection.latencies_s)
    ordered = sorted(latencies)
    return LinkReport(
        host=connection.settings.host,
        port=connection.settings.port,
        state=connection.state,
        connected_since=connection.connected_since,
        reconnects=connection.reconnects,
        last_error=connection.last_error,
        latencies_s=latencies,
        latency_p50_s=percentile(ordered, 0.50),
        latency_p99_s=percentile(ordered, 0.99),
        bad_replies=machine.bad_replies + connection.bad_replies,
        out_of_step_faults=connection.out_of_step_faults,
        breaker_opened=connection.breaker.times_opened,
    )


def _telemetry(machine: Machine) -> TelemetryReport:
    modbus = machine.modbus
    reading = None if modbus is None else modbus.last_reading
    return TelemetryReport(
        configured=machine.config.telemetry,
        source=machine.telemetry_source,
        fallbacks=machine.telemetry_fallbacks,
        modbus_state=None if modbus is None else modbus.state,
        modbus_last_error=None if modbus is None else modbus.last_error,
        registers=None if reading is None else {f"D{k}": v for k, v in reading.registers},
        position_desync=machine.position_desync,
    )
