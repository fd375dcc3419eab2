"""Endpoints about machines: the list, a machine's live state and diagnostics, and the
status shortcut."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from carousel_gateway.api.conversions import machine_state
from carousel_gateway.api.http.deps import ApiDep, MachineDep, protected_router
from carousel_gateway.api.http.diagnostics import diagnostics_of
from carousel_gateway.api.http.errors import MACHINE_READ_ERRORS, READ_ERRORS, documented_errors
from carousel_gateway.api.http.models import (
    DiagnosticsResponse,
    MachineEntry,
    MachinesResponse,
    MachineStatusResponse,
)
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.fleet import Fleet
from carousel_gateway.fleet.machine import Machine

__all__ = [
    "ShortcutMachineQuery",
    "first_status",
    "list_machines",
    "machine_diagnostics",
    "machine_status",
    "named_or_only",
    "router",
]

router = protected_router()


@router.get(
    "/v1/machines",
    response_model=MachinesResponse,
    responses=documented_errors(*READ_ERRORS),
    summary="Every configured machine",
    tags=["Machines"],
)
async def list_machines(api: ApiDep) -> MachinesResponse:
    """Every machine with its id, PLC address, kind, link state and position range: what a
    WMS needs to map its locations to machine ids and bucket numbers."""
    entries = [
        MachineEntry(
            id=m.id,
            name=m.config.name,
            ip=m.config.host,
            port=m.diagnostics().link.port,
            type="Simulator" if m.config.kind == "simulator" else "Real PLC",
            status=m.snapshot.connection.value,
            description=m.config.description,
            positions=m.config.positions,
            position_base=m.config.position_base,
        )
        for m in api.fleet
    ]
    return MachinesResponse(data=entries)


@router.get(
    "/v1/machines/{machine_id}/status",
    response_model=MachineStatusResponse,
    responses=documented_errors(*MACHINE_READ_ERRORS),
    summary="A machine's live state (from its latest reading; never waits on the PLC)",
    tags=["Machines"],
)
async def machine_status(machine: MachineDep) -> MachineStatusResponse:
    """The 8 labelled status bits, the position and the link state from the machine's latest
    reading, so a read never waits on the PLC; `status`, `position` and `raw_status` are
    null until a first reading."""
    return MachineStatusResponse(machine_id=machine.id, data=machine_state(machine.snapshot))


@router.get(
    "/v1/machines/{machine_id}/diagnostics",
    response_model=DiagnosticsResponse,
    responses=documented_errors(*MACHINE_READ_ERRORS),
    summary="Link details, decoded status with every fault and interlock, the last move",
    tags=["Machines"],
)
async def machine_diagnostics(api: ApiDep, machine: MachineDep) -> DiagnosticsResponse:
    """Everything a technician asks first: the link (latency, reconnects, last error), every
    active fault and interlock, why a move would be refused now, the last move, where
    telemetry comes from, and the maintenance counters."""
    counters = None
    if api.journal is not None:
        counters = (await api.journal.counters(machine.id)).get(machine.id, {})
    return DiagnosticsResponse(machine_id=machine.id, data=diagnostics_of(machine, counters))


def named_or_only(fleet: Fleet, machine_id: str | None) -> Machine:
    """The machine a shortcut acts on: the one named, else the gateway's only machine.
    Never "the first of several": a client that names none must not move the wrong one."""
    if machine_id is not None:
        return fleet.get(machine_id)
    if len(fleet) == 1:
        return fleet.first
    shown = ", ".join(fleet.ids[:10]) + (", ..." if len(fleet) > 10 else "")
    raise GatewayError(
        ErrorCode.INVALID_MESSAGE_FORMAT,
        f"machine_id is required: this gateway has {len(fleet)} machines ({shown})",
    )


ShortcutMachineQuery = Annotated[
    str | None,
    Query(max_length=128, description="The machine; required unless the gateway has exactly one"),
]


@router.get(
    "/v1/status",
    response_model=MachineStatusResponse,
    responses=documented_errors(400, *MACHINE_READ_ERRORS),
    summary="Shortcut: a machine's status (`machine_id` may be left out with one machine)",
    tags=["Machines"],
)
async def first_status(
    api: ApiDep, machine_id: ShortcutMachineQuery = None
) -> MachineStatusResponse:
    """A machine's status by query parameter; on a gateway with one carousel the id may be
    left out. With several, ``machine_id`` is required (never "the first machine")."""
    machine = named_or_only(api.fleet, machine_id)
    return MachineStatusResponse(machine_id=machine.id, data=machine_state(machine.snapshot))
