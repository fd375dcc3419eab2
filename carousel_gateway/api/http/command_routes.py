"""Endpoints that command a machine: a command, a move, and the command shortcut. Each goes
through the gateway's one :class:`~carousel_gateway.api.commands.CommandRunner`."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from carousel_gateway.api.auth import Identity
from carousel_gateway.api.commands import failure_code
from carousel_gateway.api.conversions import main_reason
from carousel_gateway.api.guard import HTTP
from carousel_gateway.api.http.conversions import command_data, move_outcome
from carousel_gateway.api.http.deps import (
    ApiDep,
    IdentityDep,
    MachineDep,
    WaitQuery,
    protected_router,
)
from carousel_gateway.api.http.errors import COMMAND_ERRORS, documented_errors, error_response
from carousel_gateway.api.http.machine_routes import named_or_only
from carousel_gateway.api.http.models import (
    CommandRequest,
    CommandResponse,
    ErrorData,
    MoveRequest,
    ShortcutCommandRequest,
    WaitMode,
)
from carousel_gateway.api.http.state import RestApi
from carousel_gateway.errors import GatewayError
from carousel_gateway.fleet.events import MoveFailed, Origin, OriginChannel
from carousel_gateway.fleet.machine import Machine
from carousel_gateway.plc.protocol import Command

__all__ = [
    "first_command",
    "machine_command",
    "machine_move",
    "router",
]

router = protected_router()


@router.post(
    "/v1/machines/{machine_id}/command",
    response_model=CommandResponse,
    responses=documented_errors(*COMMAND_ERRORS),
    summary="Send a command (1 = MOVE to `argument`), optionally waiting for arrival",
    tags=["Commands"],
)
async def machine_command(
    api: ApiDep,
    identity: IdentityDep,
    machine: MachineDep,
    body: CommandRequest,
    wait: WaitQuery = None,
) -> CommandResponse | JSONResponse:
    """The command as in the WebSocket `send_command`: interlocks are judged on a fresh
    reading, a move to where the carousel stands is skipped, and nothing is ever retried.
    With `wait=arrival` the reply holds until the move arrives or fails."""
    return await _run(
        api, machine, body.command, body.argument, identity, wait=_waits(body.wait, wait)
    )


@router.post(
    "/v1/machines/{machine_id}/move",
    response_model=CommandResponse,
    responses=documented_errors(*COMMAND_ERRORS),
    summary="Move to a position (the same as command 1)",
    tags=["Commands"],
)
async def machine_move(
    api: ApiDep,
    identity: IdentityDep,
    machine: MachineDep,
    body: MoveRequest,
    wait: WaitQuery = None,
) -> CommandResponse | JSONResponse:
    """A MOVE by position, for clients that do not speak command numbers; the same checks
    and outcome as command 1."""
    return await _run(
        api, machine, Command.MOVE, body.position, identity, wait=_waits(body.wait, wait)
    )


@router.post(
    "/v1/command",
    response_model=CommandResponse,
    responses=documented_errors(*COMMAND_ERRORS),
    summary="Shortcut: a command to the machine in the body (left out with one machine)",
    tags=["Commands"],
)
async def first_command(
    api: ApiDep, identity: IdentityDep, body: ShortcutCommandRequest, wait: WaitQuery = None
) -> CommandResponse | JSONResponse:
    """A command to the machine the body names; on a gateway with one carousel the id may
    be left out. With several, ``machine_id`` is required (never "the first machine")."""
    machine = named_or_only(api.fleet, body.machine_id)
    return await _run(
        api, machine, body.command, body.argument, identity, wait=_waits(body.wait, wait)
    )


def _waits(in_body: WaitMode | None, in_query: WaitMode | None) -> bool:
    return in_body == "arrival" or in_query == "arrival"


async def _run(
    api: RestApi,
    machine: Machine,
    command: int,
    argument: int | None,
    identity: Identity,
    *,
    wait: bool,
) -> CommandResponse | JSONResponse:
    """One command through the gateway's command runner; with ``wait``, a MOVE's reply holds
    its outcome at ``data.outcome``, success or failure alike (a failed or unknown outcome is
    an error reply that also holds the command, at ``data.command``)."""
    origin = Origin(client=identity.client, channel=OriginChannel.REST)
    executed = await api.runner.run(machine, command, argument, origin, where=HTTP)
    data = command_data(executed.accepted)
    if not wait or command != Command.MOVE:
        return CommandResponse(machine_id=machine.id, data=data)
    try:
        # No outcome to wait for: a move skipped because the carousel already stands there.
        outcome = None
        if executed.outcome is not None:
            outcome = await api.runner.outcome(machine, executed.outcome)
    except GatewayError as exc:
        return error_response(exc, data=ErrorData(reasons=list(exc.reasons), command=data))
    ended = move_outcome(outcome, executed.accepted)
    if isinstance(outcome, MoveFailed):
        failure = GatewayError(
            failure_code(outcome.reasons),
            f"move of {machine.id} to position {outcome.target} failed: "
            f"{main_reason(outcome.reasons)}",
            machine_id=machine.id,
            reasons=outcome.reasons,
        )
        failed = ErrorData(reasons=list(outcome.reasons), command=data, outcome=ended)
        return error_response(failure, data=failed)
    return CommandResponse(machine_id=machine.id, data=data.model_copy(update={"outcome": ended}))
