"""``GET /v1/machines/{id}/diagnostics``: a machine's link, faults, interlocks, last move and
telemetry, as a technician asks for them, from the fleet's own ``Machine.diagnostics()``."""

from __future__ import annotations

from carousel_gateway.api.conversions import machine_state
from carousel_gateway.api.http.conversions import outcome_of
from carousel_gateway.api.http.models import (
    ConnectionDiagnostics,
    Interlock,
    MachineDiagnostics,
    Refusal,
    TelemetryDiagnostics,
)
from carousel_gateway.fleet.diagnostics import LinkReport, TelemetryReport
from carousel_gateway.fleet.machine import Machine
from carousel_gateway.wire import (
    utc_timestamp,
)

__all__ = [
    "diagnostics_of",
]


def diagnostics_of(
    machine: Machine, counters: dict[str, int | float] | None
) -> MachineDiagnostics:
    report = machine.diagnostics()
    refusal, last = report.move_refusal, report.last_outcome
    return MachineDiagnostics(
        connection=_connection(report.link),
        state=machine_state(report.snapshot),
        faults=list(report.faults),
        interlocks=[Interlock(key=b.key, text=b.text) for b in report.blockers],
        move_refusal=(
            None
            if refusal is None
            else Refusal(code=refusal.code, message=refusal.message, reasons=list(refusal.reasons))
        ),
        busy=report.busy,
        active_target=report.active_target,
        last_move=None if last is None else outcome_of(last),
        telemetry=_telemetry(report.telemetry),
        counters=counters,
    )


def _connection(link: LinkReport) -> ConnectionDiagnostics:
    return ConnectionDiagnostics(
        host=link.host,
        port=link.port,
        state=link.state,
        connected_since=(
            None if link.connected_since is None else utc_timestamp(link.connected_since)
        ),
        reconnects=link.reconnects,
        last_error=link.last_error,
        latency_p50_s=link.latency_p50_s,
        latency_p99_s=link.latency_p99_s,
        latency_samples=len(link.latencies_s),
        bad_replies=link.bad_replies,
    )


def _telemetry(report: TelemetryReport) -> TelemetryDiagnostics:
    desync = report.position_desync
    return TelemetryDiagnostics(
        configured=report.configured,
        source=report.source.value,
        fallbacks=report.fallbacks,
        modbus_state=None if report.modbus_state is None else report.modbus_state.value,
        modbus_last_error=report.modbus_last_error,
        registers=None if report.registers is None else dict(report.registers),
        position_desync=(
            None if desync is None else {"position": desync.position, "target": desync.target}
        ),
    )
