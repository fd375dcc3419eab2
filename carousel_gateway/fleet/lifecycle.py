"""A move's lifecycle as one explicit state machine: sent → moving → arrived | failed.

Pure logic: it is fed readings (status word, position index, a clock value) and answers
with a verdict. The machine's poll loop and connection callbacks drive it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from carousel_gateway.plc.status import StatusKey, StatusWord


class MovePhase(StrEnum):
    SENT = "sent"  # the PLC took the MOVE; motion not yet seen
    MOVING = "moving"  # RUN seen
    ARRIVED = "arrived"
    FAILED = "failed"


class FailReason(StrEnum):
    TIMEOUT = "timeout"
    CONNECTION_LOST = "connection_lost"
    NOT_STARTED = "not_started"  # the PLC took the command but the chain never moved
    STOPPED_OFF_TARGET = "stopped_off_target"  # RUN fell with no fault, elsewhere


@dataclass(frozen=True, slots=True)
class Arrived:
    position_index: int


@dataclass(frozen=True, slots=True)
class Failed:
    reasons: tuple[str, ...]


Verdict = Arrived | Failed

# Keys whose blocking value ends a move (RUN is motion itself, SENTIDO_GIRO never blocks).
_STOPPING_KEYS = frozenset(
    {
        StatusKey.READY,
        StatusKey.MODO_OPERACION,
        StatusKey.ALARMA,
        StatusKey.PARADA_EMERGENCIA,
        StatusKey.VFD,
        StatusKey.ERROR_POSICIONAMIENTO,
    }
)


def stopping_conditions(status: StatusWord) -> tuple[str, ...]:
    """The blocker keys that stop or forbid motion, in bit order (RUN excluded)."""
    return tuple(b.key.value for b in status.blockers() if b.key in _STOPPING_KEYS)


class MoveTracker:
    """Follows one move from the PLC's acceptance to arrival or failure."""

    def __init__(
        self,
        target_index: int,
        *,
        started_at: float,
        timeout_s: float,
        start_timeout_s: float,
        settle_readings: int = 2,
    ) -> None:
        self.target_index = target_index
        self.started_at = started_at
        self.deadline = started_at + timeout_s
        self.start_deadline = started_at + start_timeout_s
        self.phase = MovePhase.SENT
        self.verdict: Verdict | None = None
        self._settle_readings = settle_readings
        self._stopped_readings = 0

    @property
    def done(self) -> bool:
        return self.verdict is not None

    def observe(self, status: StatusWord, position_index: int, now: float) -> Verdict | None:
        """Feed one reading; returns the verdict once the move has ended."""
        if self.verdict is not None:
            return None
        stopping = stopping_conditions(status)
        if stopping:
            return self._end(Failed(stopping))
        if status.running:
            self.phase = MovePhase.MOVING
            self._stopped_readings = 0
        elif position_index == self.target_index:
            return self._end(Arrived(position_index))
        elif self.phase is MovePhase.MOVING:
            # Stopped elsewhere with no fault. Allow one reading of lag for the position.
            self._stopped_readings += 1
            if self._stopped_readings >= self._settle_readings:
                return self._end(Failed((FailReason.STOPPED_OFF_TARGET.value,)))
        elif now >= self.start_deadline:
            return self._end(Failed((FailReason.NOT_STARTED.value,)))
        return self.check_deadline(now)

    def check_deadline(self, now: float) -> Verdict | None:
        if self.verdict is None and now >= self.deadline:
            return self._end(Failed((FailReason.TIMEOUT.value,)))
        return None

    def connection_lost(self) -> Verdict | None:
        if self.verdict is not None:
            return None
        return self._end(Failed((FailReason.CONNECTION_LOST.value,)))

    def _end(self, verdict: Verdict) -> Verdict:
        self.verdict = verdict
        self.phase = MovePhase.ARRIVED if isinstance(verdict, Arrived) else MovePhase.FAILED
        return verdict
