"""A pure model of one vertical carousel, advanced by an injected clock.

No I/O and no waiting: the model computes where the chain is from the time elapsed since a
move started, so tests drive it with a fake clock and a server drives it with the real one.
Behaviour follows the PLC as ``docs/plc-protocol.md`` describes it, quirks included (a move
to the current bucket makes a full turn looking for a mark it has passed; the target stays
latched after a stop).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from carousel_gateway.plc.status import StatusKey, StatusWord

__all__ = [
    "CarouselModel",
    "Clock",
    "Fault",
    "MoveResponse",
]

Clock = Callable[[], float]


class Fault(StrEnum):
    """Conditions an operator (or a test) can raise on the machine."""

    EMERGENCY_STOP = "emergency_stop"
    MANUAL_MODE = "manual_mode"
    ALARM = "alarm"
    VFD_FAULT = "vfd_fault"
    POSITIONING_ERROR = "positioning_error"


class MoveResponse(StrEnum):
    """What the PLC program does with a MOVE request."""

    STARTED = "started"
    IGNORED_RUNNING = "ignored_running"
    IGNORED_BLOCKED = "ignored_blocked"
    IGNORED_OUT_OF_RANGE = "ignored_out_of_range"


@dataclass(frozen=True, slots=True)
class _Travel:
    started_at: float
    start_index: int
    direction: int  # +1 ascending, -1 descending
    distance: int


class CarouselModel:
    """One carousel: ``positions`` buckets on a loop, travelling the shorter way."""

    def __init__(
        self,
        positions: int = 30,
        seconds_per_position: float = 1.0,
        *,
        clock: Clock = time.monotonic,
        start_index: int = 0,
    ) -> None:
        if not 2 <= positions <= 256:
            raise ValueError(f"positions must be in 2..256, got {positions}")
        if seconds_per_position <= 0:
            raise ValueError("seconds_per_position must be > 0")
        if not 0 <= start_index < positions:
            raise ValueError(f"start_index must be in 0..{positions - 1}")
        self.positions = positions
        self.seconds_per_position = seconds_per_position
        self._clock = clock
        self._index = start_index
        self._target = start_index
        self._descending = False
        self._travel: _Travel | None = None
        self._faults: set[Fault] = set()
        self._position_since = clock()
        self.moves_started = 0

    # -- reading -------------------------------------------------------------------------

    @property
    def position_index(self) -> int:
        self._advance()
        return self._index

    @property
    def position_since(self) -> float:
        """Clock time at which the chain reached its current bucket (for latency benchmarks)."""
        self._advance()
        return self._position_since

    @property
    def target_index(self) -> int:
        """The latched target (the PLC's D2): it keeps its value after a stop."""
        return self._target

    @property
    def moving(self) -> bool:
        self._advance()
        return self._travel is not None

    @property
    def faults(self) -> frozenset[Fault]:
        return frozenset(self._faults)

    def status(self) -> StatusWord:
        self._advance()
        return StatusWord.from_flags(
            {
                StatusKey.READY: Fault.EMERGENCY_STOP not in self._faults,
                StatusKey.RUN: self._travel is not None,
                StatusKey.MODO_OPERACION: Fault.MANUAL_MODE not in self._faults,
                StatusKey.ALARMA: Fault.ALARM in self._faults,
                StatusKey.PARADA_EMERGENCIA: Fault.EMERGENCY_STOP not in self._faults,
                StatusKey.VFD: Fault.VFD_FAULT in self._faults,
                StatusKey.ERROR_POSICIONAMIENTO: Fault.POSITIONING_ERROR in self._faults,
                StatusKey.SENTIDO_GIRO: self._descending,
            }
        )

    def status_byte(self) -> int:
        return self.status().raw

    def arrival_time(self) -> float | None:
        """Clock time at which the current travel ends, or None when stopped."""
        self._advance()
        if self._travel is None:
            return None
        return self._travel.started_at + self._travel.distance * self.seconds_per_position

    # -- acting --------------------------------------------------------------------------

    def move(self, index: int) -> MoveResponse:
        """Handle a MOVE request as the PLC program would."""
        self._advance()
        if not 0 <= index < self.positions:
            return MoveResponse.IGNORED_OUT_OF_RANGE
        if self._travel is not None:
            return MoveResponse.IGNORED_RUNNING
        if self._faults:
            return MoveResponse.IGNORED_BLOCKED
        forward = (index - self._index) % self.positions
        if forward == 0:
            # The field quirk: the mark was already passed, so the chain makes a full turn.
            direction, distance = 1, self.positions
        elif forward <= self.positions - forward:
            direction, distance = 1, forward
        else:
            direction, distance = -1, self.positions - forward
        self._target = index
        self._descending = direction < 0
        self._travel = _Travel(self._clock(), self._index, direction, distance)
        self.moves_started += 1
        return MoveResponse.STARTED

    def set_fault(self, fault: Fault | str, active: bool) -> None:
        """Raise or clear a fault; any fault raised during travel stops the chain there."""
        fault = Fault(fault)
        self._advance()
        if active:
            self._faults.add(fault)
            self._travel = None  # stops where it is; the target stays latched
        else:
            self._faults.discard(fault)

    def teleport(self, index: int) -> None:
        """Place the chain at a bucket (test set-up; as if moved by hand while stopped)."""
        if not 0 <= index < self.positions:
            raise ValueError(f"index must be in 0..{self.positions - 1}")
        self._advance()
        self._travel = None
        self._index = index
        self._position_since = self._clock()

    # -- internals -----------------------------------------------------------------------

    def _advance(self) -> None:
        travel = self._travel
        if travel is None:
            return
        # A tiny epsilon keeps exact multiples (0.3 / 0.1) from rounding down a step.
        steps = int((self._clock() - travel.started_at) / self.seconds_per_position + 1e-9)
        if steps >= travel.distance:
            self._index = self._target
            self._travel = None
            self._descending = False  # an idle machine reads 21, whatever its last direction
            self._position_since = travel.started_at + travel.distance * self.seconds_per_position
        elif steps > 0:
            self._index = (travel.start_index + travel.direction * steps) % self.positions
            self._position_since = travel.started_at + steps * self.seconds_per_position
