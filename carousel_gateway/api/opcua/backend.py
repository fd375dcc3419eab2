"""What the OPC UA server needs of the gateway, and the gateway's side of it.

The server sees the machines (their settings, first snapshot and telemetry source), the
fleet's events, the journal's counters, and one way to move a machine. In the gateway's
process :class:`FleetBackend` gives them straight from the fleet, the command runner and the
journal; with ``[opcua] own_process`` the OPC UA process gets the same over a pipe
(``process.py``), so the one command path stays in the gateway either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from carousel_gateway.api.commands import CommandRunner
from carousel_gateway.config import MachineConfig
from carousel_gateway.fleet.events import Handler, Origin, OriginChannel, Snapshot, TelemetrySource
from carousel_gateway.fleet.fleet import Fleet
from carousel_gateway.plc.protocol import Command
from carousel_gateway.store import Journal

__all__ = ["Backend", "Counters", "FleetBackend", "MachineView"]

#: Per machine, the journal's counters (``moves_completed``, ...).
Counters = dict[str, dict[str, int | float]]


@dataclass(frozen=True, slots=True)
class MachineView:
    """A machine as the address space starts from it."""

    config: MachineConfig
    snapshot: Snapshot
    telemetry_source: TelemetrySource


class Backend(Protocol):
    def machines(self) -> list[MachineView]: ...

    def subscribe(self, handler: Handler) -> Callable[[], None]: ...

    async def counters(self) -> Counters: ...

    async def move(self, machine_id: str, target: int, client: str) -> str:
        """Hand a MOVE to the command path; the text of the accepted command, or raises
        ``GatewayError`` (refused, or the PLC did not take it)."""
        ...


class FleetBackend:
    """The gateway's own fleet, command runner and journal."""

    def __init__(self, fleet: Fleet, runner: CommandRunner, journal: Journal | None) -> None:
        self.fleet = fleet
        self.runner = runner
        self.journal = journal

    def machines(self) -> list[MachineView]:
        return [
            MachineView(machine.config, machine.snapshot, machine.telemetry_source)
            for machine in self.fleet
        ]

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        return self.fleet.bus.subscribe(handler)

    async def counters(self) -> Counters:
        return await self.journal.counters() if self.journal is not None else {}

    async def move(self, machine_id: str, target: int, client: str) -> str:
        machine = self.fleet.get(machine_id)  # GatewayError MACHINE_NOT_FOUND
        origin = Origin(client=client, channel=OriginChannel.OPCUA)
        executed = await self.runner.run(machine, Command.MOVE, target, origin, where="opcua")
        accepted = executed.accepted
        return f"{accepted.result} (command {accepted.command_id})"
