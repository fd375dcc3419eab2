"""Endpoints that drive embedded simulators (faults, link drops and stalls), through the
``SimulatorControl`` protocol the composition root fills: this API never imports ``sim``."""

from __future__ import annotations

import logging

from carousel_gateway.api.http.deps import ApiDep, IdentityDep, MachineId, protected_router
from carousel_gateway.api.http.errors import SIMULATOR_ERRORS, documented_errors
from carousel_gateway.api.http.models import (
    FaultData,
    FaultRequest,
    FaultResponse,
    LinkData,
    LinkRequest,
    LinkResponse,
)

__all__ = [
    "router",
    "simulator_fault",
    "simulator_link",
]

log = logging.getLogger(__name__)

router = protected_router()


@router.post(
    "/v1/simulators/{machine_id}/faults",
    response_model=FaultResponse,
    responses=documented_errors(*SIMULATOR_ERRORS),
    summary="Raise or clear a fault on an embedded simulator (as a real one would)",
    tags=["Simulators"],
)
async def simulator_fault(
    api: ApiDep, machine_id: MachineId, body: FaultRequest, identity: IdentityDep
) -> FaultResponse:
    """To rehearse a WMS's error handling without hardware: the fault is set on the simulated
    PLC, and the gateway sees it at its next poll as it would see a real one."""
    machine, server = api.simulator(machine_id)
    server.set_fault(body.fault, body.active)
    log.warning(
        "%s simulator fault %s %s by %s",
        machine.id,
        body.fault.value,
        "raised" if body.active else "cleared",
        identity.client,
    )
    data = FaultData(
        fault=body.fault,
        active=body.active,
        faults=server.active_faults(),
        status_byte=server.status_byte(),
    )
    return FaultResponse(machine_id=machine.id, data=data)


@router.post(
    "/v1/simulators/{machine_id}/link",
    response_model=LinkResponse,
    responses=documented_errors(*SIMULATOR_ERRORS),
    summary="Drop the simulator's PLC link, stall it (no replies), or resume it",
    tags=["Simulators"],
)
async def simulator_link(
    api: ApiDep, machine_id: MachineId, body: LinkRequest, identity: IdentityDep
) -> LinkResponse:
    """To rehearse lost and silent PLC links: `drop` closes the connection (the gateway
    reconnects), `stall` stops answering (requests time out), `resume` answers again."""
    machine, server = api.simulator(machine_id)
    server.link(body.action)
    log.warning("%s simulator link %s by %s", machine.id, body.action.value, identity.client)
    data = LinkData(action=body.action, stalled=server.stalled, session_open=server.session_open)
    return LinkResponse(machine_id=machine.id, data=data)
