"""``GET /v1/machines/{id}/diagnostics``: a machine's link, faults, interlocks, last move and
telemetry, as a technician asks for them."""

from __future__ import annotations

import math
from collections.abc import Sequence

from carousel_gateway.api.http.conversions import outcome_of
from carousel_gateway.api.http.models import (
    ConnectionDiagnostics,
    Interlock,
    MachineDiagnostics,
    Refusal,
    TelemetryDiagnostics,
)
from carousel_gateway.api.messages import machine_state, utc_timestamp
from carousel_gateway.errors import GatewayError
from carousel_gateway.fleet.machine import Machine


def _percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return round(sorted_values[rank - 1], 6)


def _telemetry(machine: Machine) -> TelemetryDiagnostics:
    modbus = machine.modbus
    reading = None if modbus is None else modbus.last_reading
    desync = machine.position_desync
    return TelemetryDiagnostics(
        configured=machine.config.telemetry,
        source=machine.telemetry_source.value,
        fallbacks=machine.telemetry_fallbacks,
        modbus_state=None if modbus is None else modbus.state.value,
        modbus_last_error=None if modbus is None else modbus.last_error,
        registers=None if reading is None else {f"D{k}": v for k, v in reading.registers},
        position_desync=(
            None if desync is None else {"position": desync.position, "target": desync.target}
        ),
    )


def diagnostics_of(machine: Machine, counters: dict[str, float] | None) -> MachineDiagnostics:
    connection = machine.connection
    snapshot = machine.snapshot
    latencies = sorted(connection.latencies_s)
    status = snapshot.status
    refusal: Refusal | None = None
    try:
        machine.check_free()  # a command in flight, a move, or one whose outcome is unknown
        machine.check_interlocks(snapshot)
    except GatewayError as exc:
        refusal = Refusal(code=exc.code, message=exc.message, reasons=list(exc.reasons))
    last = machine.last_outcome
    return MachineDiagnostics(
        connection=ConnectionDiagnostics(
            host=connection.settings.host,
            port=connection.settings.port,
            state=connection.state,
            connected_since=(
                None
                if connection.connected_since is None
                else utc_timestamp(connection.connected_since)
            ),
            reconnects=connection.reconnects,
            last_error=connection.last_error,
            latency_p50_s=_percentile(latencies, 0.50),
            latency_p99_s=_percentile(latencies, 0.99),
            latency_samples=len(latencies),
            bad_replies=machine.bad_replies + connection.bad_replies,
        ),
        state=machine_state(snapshot),
        faults=[] if status is None else [key.value for key in status.faults()],
        interlocks=(
            []
            if status is None
            else [Interlock(key=b.key.value, text=b.text) for b in status.blockers()]
        ),
        move_refusal=refusal,
        busy=machine.busy,
        active_target=machine.active_target,
        last_move=None if last is None else outcome_of(last),
        telemetry=_telemetry(machine),
        counters=counters,
    )
