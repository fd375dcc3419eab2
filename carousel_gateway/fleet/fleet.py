"""The fleet: every configured machine, looked up by id, started and stopped together."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Mapping, Sequence

from carousel_gateway.config import MachineConfig
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import CommandJournal, EventBus, MoveGate
from carousel_gateway.fleet.machine import Machine

__all__ = [
    "SHOWN_MACHINE_IDS",
    "Fleet",
    "machine_not_found",
]

#: How many valid ids a MACHINE_NOT_FOUND error lists (a large fleet ends with "...").
SHOWN_MACHINE_IDS = 10


def machine_not_found(asked: Sequence[object], known: Sequence[str]) -> GatewayError:
    """MACHINE_NOT_FOUND naming the ids asked for and the valid ones, so a typo shows at
    once (a bare "Machine not found" left clients guessing which id was wrong)."""
    shown_asked = ", ".join(_shown_id(m) for m in asked[:SHOWN_MACHINE_IDS])
    valid = ", ".join(known[:SHOWN_MACHINE_IDS]) + (
        ", ..." if len(known) > SHOWN_MACHINE_IDS else ""
    )
    first = asked[0] if asked else None
    return GatewayError(
        ErrorCode.MACHINE_NOT_FOUND,
        f"Machine not found: {shown_asked}; valid ids: {valid or '(none)'}",
        machine_id=first if isinstance(first, str) and len(first) <= 128 else None,
    )


def _shown_id(machine_id: object) -> str:
    """An id as a client sent it, quoted and cut to 64 characters."""
    text = repr(machine_id)
    return text if len(text) <= 64 else text[:63] + "…"


class Fleet:
    """Owns the machines; ``ports`` and ``modbus_ports`` override configured ports (embedded
    simulators bound to free ports)."""

    def __init__(
        self,
        configs: Sequence[MachineConfig],
        bus: EventBus | None = None,
        *,
        ports: Mapping[str, int] | None = None,
        modbus_ports: Mapping[str, int] | None = None,
        command_journal: CommandJournal | None = None,
        move_gate: MoveGate | None = None,
    ) -> None:
        self.bus = bus or EventBus()
        ports = ports or {}
        modbus_ports = modbus_ports or {}
        # One counter for the whole fleet: command ids are unique within a boot (the
        # journal's key), whichever machine ran the command.
        command_ids = itertools.count(1)
        self._machines: dict[str, Machine] = {
            config.id: Machine(
                config,
                self.bus,
                port=ports.get(config.id),
                modbus_port=modbus_ports.get(config.id),
                command_journal=command_journal,
                next_command_id=command_ids.__next__,
                move_gate=move_gate,
            )
            for config in configs
        }

    def __iter__(self) -> Iterator[Machine]:
        return iter(self._machines.values())

    def __len__(self) -> int:
        return len(self._machines)

    def __contains__(self, machine_id: object) -> bool:
        return machine_id in self._machines

    @property
    def ids(self) -> list[str]:
        return list(self._machines)

    @property
    def first(self) -> Machine:
        return next(iter(self._machines.values()))

    def get(self, machine_id: str) -> Machine:
        try:
            return self._machines[machine_id]
        except (KeyError, TypeError):
            raise machine_not_found([machine_id], self.ids) from None

    def start(self) -> None:
        for machine in self:
            machine.start()

    async def stop(self) -> None:
        await asyncio.gather(*(machine.stop() for machine in self))

    def expect_refusals(self, window_s: float) -> None:
        """The PLCs may refuse us for ``window_s`` (a takeover: another instance's
        sessions are still ending); see :meth:`LinkSupervisor.expect_refusals`."""
        for machine in self:
            machine.connection.supervisor.expect_refusals(window_s)

    def abort_links(self, reason: str) -> None:
        """Close every PLC socket now, synchronously, and open none again until
        :meth:`start` (a fenced gateway must stop driving its carousels at once, not after
        a graceful wait, and leave the PLCs' single session to the new active); ``stop()``
        then ends the tasks."""
        for machine in self:
            machine.connection.supervisor.abort(reason, hold=True)
            if machine.modbus is not None:
                machine.modbus.supervisor.abort(reason, hold=True)
