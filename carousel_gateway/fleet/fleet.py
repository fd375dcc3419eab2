"""The fleet: every configured machine, looked up by id, started and stopped together."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Mapping, Sequence

from carousel_gateway.config import MachineConfig
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import CommandJournal, EventBus
from carousel_gateway.fleet.machine import Machine

__all__ = [
    "Fleet",
]


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
            raise GatewayError(
                ErrorCode.MACHINE_NOT_FOUND,
                "Machine not found",
                machine_id=machine_id if isinstance(machine_id, str) else None,
            ) from None

    def start(self) -> None:
        for machine in self:
            machine.start()

    async def stop(self) -> None:
        await asyncio.gather(*(machine.stop() for machine in self))
