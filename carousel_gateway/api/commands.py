"""The one command path from the APIs to the machines.

The WebSocket API and REST both hand a command to :class:`CommandRunner`: it applies the
per-machine command rate before the machine sees anything (a flood must reach neither the
PLC nor the journal), hands the command to ``Machine.execute`` in a task of its own and
shields it, so a command runs to the end (sent at most once, journalled) even when its
requester goes away or the gateway stops, and keeps the tasks so that shutdown can wait for
them. The requester gets its result one way, from what ``run`` returns or raises, and a move's
outcome from :meth:`CommandRunner.outcome`; other clients learn the same from the fleet's
bus (the fleet knows nothing of API sessions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from carousel_gateway.api.guard import Guard
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import MoveCompleted, MoveFailed, Origin
from carousel_gateway.fleet.lifecycle import FailReason
from carousel_gateway.fleet.machine import ExecutedCommand, Machine

__all__ = ["DRAIN_COMMANDS_S", "CommandRunner", "failure_code"]

#: Seconds ``drain()`` waits for commands already handed to machines (each is one or two PLC
#: exchanges, bounded by the request timeouts), so their journal rows are written.
DRAIN_COMMANDS_S = 10.0


class CommandRunner:
    """Runs commands for every API: rate check, shielded execution, outcome, drain."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        #: Commands handed to machines (they run to the end; ``drain()`` waits for them).
        self.in_flight: set[asyncio.Future[ExecutedCommand]] = set()
        self._closing = asyncio.Event()
        #: Two gateways per cell: the refusal to give while this instance is not the active
        #: one (``NOT_ACTIVE`` naming the holder), or None while it may command. Every API
        #: and the pick jobs come through :meth:`run`, so one check here covers them all.
        self.refusal: Callable[[], GatewayError | None] | None = None

    async def run(
        self,
        machine: Machine,
        command: int,
        argument: int | None,
        origin: Origin,
        *,
        where: str,
    ) -> ExecutedCommand:
        """Execute one command; ``where`` names the API for the rate-limit refusal."""
        if self.refusal is not None and (refused := self.refusal()) is not None:
            refused.machine_id = refused.machine_id or machine.id
            raise refused
        self.guard.check_machine_command(where, machine.id)
        execution = asyncio.ensure_future(machine.execute(command, argument, origin))
        self.in_flight.add(execution)
        execution.add_done_callback(self.in_flight.discard)
        execution.add_done_callback(_retrieve)
        return await asyncio.shield(execution)

    async def outcome(
        self, machine: Machine, future: asyncio.Future[MoveCompleted | MoveFailed]
    ) -> MoveCompleted | MoveFailed:
        """A move's outcome (``ExecutedCommand.outcome``, or ``MoveOutcomeUnknown.outcome``),
        waited for within a bound; GatewayError when it does not come or the gateway stops."""
        config = machine.config
        # The machine ends a move itself after move_timeout_s (judged at its next reading);
        # the margin lets that verdict, with its reason, arrive before this bound.
        bound = config.move_timeout_s + config.request_timeout_s + config.poll_active_s
        closing = asyncio.ensure_future(self._closing.wait())
        waiting: set[asyncio.Future[Any]] = {future, closing}
        try:
            await asyncio.wait(waiting, timeout=bound, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
        if future.done() and not future.cancelled():
            return future.result()
        if self._closing.is_set() or future.cancelled():
            raise GatewayError(
                ErrorCode.CONNECTION_ERROR,
                "the gateway is shutting down; the move's outcome is unknown",
                machine_id=machine.id,
            )
        raise GatewayError(
            ErrorCode.PLC_TIMEOUT,
            f"no outcome for the move within {bound:g} s",
            machine_id=machine.id,
            reasons=(FailReason.TIMEOUT.value,),
        )

    def close(self) -> None:
        """Release every requester waiting for a move's outcome (the gateway is stopping)."""
        self._closing.set()

    async def drain(self, limit_s: float = DRAIN_COMMANDS_S) -> None:
        """Wait for the commands already handed to machines (nothing new starts now)."""
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=limit_s)


def failure_code(reasons: Sequence[str]) -> ErrorCode:
    """The table's code for a move that was sent but did not arrive."""
    if FailReason.CONNECTION_LOST.value in reasons or FailReason.GATEWAY_STOPPED.value in reasons:
        return ErrorCode.CONNECTION_ERROR
    if FailReason.TIMEOUT.value in reasons:
        return ErrorCode.PLC_TIMEOUT
    return ErrorCode.MACHINE_NOT_READY  # a fault or interlock, or stopped off target


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark an orphaned command's outcome as seen (its requester may be gone)."""
    if not future.cancelled():
        future.exception()
