"""A move's lifecycle as one explicit state machine: sent → moving → arrived | failed.

Pure logic: it is fed readings (status word, position index, a clock value) and answers
with a verdict. The machine's poll loop and connection callbacks drive it.

Port-3200 replies have no framing: a reading can only be misread when stray bytes put the
stream out of step, and the link finds that out at the latest when the next reply comes in
(TCP keeps bytes in order, so any byte left over shows up before that reply ends). Such
readings are fed as unconfirmed, and a verdict taken on one (arrived, or failed) stands
only when the next reading on the same stream gives the same verdict. Modbus readings are
framed and count at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from carousel_gateway.plc.status import StatusKey, StatusWord

__all__ = [
    "Arrived",
    "FailReason",
    "Failed",
    "MovePhase",
    "MoveTracker",
    "Verdict",
    "stopping_conditions",
]


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
    #: This gateway stopped driving the carousel (fenced, or shut down) before the move's
    #: outcome was known: it may still be moving; the next reading (or the cell's new
    #: active, which marks the intent ``lost``) tells.
    GATEWAY_STOPPED = "gateway_stopped"


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
        acknowledged: bool = True,
    ) -> None:
        self.target_index = target_index
        self.started_at = started_at
        self.deadline = started_at + timeout_s
        self.start_deadline = started_at + start_timeout_s
        self.phase = MovePhase.SENT
        self.verdict: Verdict | None = None
        self._settle_readings = settle_readings
        self._stopped_readings = 0
        #: A verdict seen on an unconfirmed reading, waiting for the next one to agree.
        self._candidate: Verdict | None = None
        #: False for a MOVE whose bytes were written but whose reply never came (or could
        #: not be trusted): the PLC may or may not have taken it. Such a move is followed
        #: through link losses until a reading settles it (motion seen, arrival, or
        #: standing still past the start timeout), because only a reading can tell.
        self.acknowledged = acknowledged

    @property
    def outcome_unknown(self) -> bool:
        """Sent, with no sign yet of whether the PLC took it."""
        return not self.acknowledged and self.verdict is None

    @property
    def done(self) -> bool:
        return self.verdict is not None

    def observe(
        self, status: StatusWord, position_index: int, now: float, *, confirmed: bool = True
    ) -> Verdict | None:
        """Feed one reading; returns the verdict once the move has ended.

        ``confirmed=False`` marks a reading from an unframed stream: a verdict on it waits
        for the next reading, and stands only if that one gives the same verdict.
        """
        if self.verdict is not None:
            return None
        verdict = self._judge(status, position_index, now)
        if verdict is None:
            self._candidate = None
            return self.check_deadline(now)
        if confirmed or _same_verdict(self._candidate, verdict):
            return self._end(verdict)
        self._candidate = verdict
        return self.check_deadline(now)

    def stream_restarted(self) -> None:
        """The stream readings come from was re-opened: an unconfirmed verdict is void."""
        self._candidate = None

    @property
    def awaiting_confirmation(self) -> bool:
        return self._candidate is not None

    def _judge(self, status: StatusWord, position_index: int, now: float) -> Verdict | None:
        stopping = stopping_conditions(status)
        if stopping:
            return Failed(stopping)
        if status.running:
            self.phase = MovePhase.MOVING
            self.acknowledged = True
            self._stopped_readings = 0
        elif position_index == self.target_index:
            return Arrived(position_index)
        elif self.phase is MovePhase.MOVING:
            # Stopped elsewhere with no fault. Allow one reading of lag for the position.
            self._stopped_readings += 1
            if self._stopped_readings >= self._settle_readings:
                return Failed((FailReason.STOPPED_OFF_TARGET.value,))
        elif now >= self.start_deadline:
            return Failed((FailReason.NOT_STARTED.value,))
        return None

    def check_deadline(self, now: float) -> Verdict | None:
        if self.verdict is None and now >= self.deadline:
            return self._end(Failed((FailReason.TIMEOUT.value,)))
        return None

    def connection_lost(self) -> Verdict | None:
        """No link can observe the move any more: it fails, unless its outcome is unknown
        (then it is followed on the next link, see ``acknowledged``)."""
        self._candidate = None
        if self.verdict is not None or not self.acknowledged:
            return None
        return self._end(Failed((FailReason.CONNECTION_LOST.value,)))

    def _end(self, verdict: Verdict) -> Verdict:
        self.verdict = verdict
        self.phase = MovePhase.ARRIVED if isinstance(verdict, Arrived) else MovePhase.FAILED
        return verdict


def _same_verdict(candidate: Verdict | None, verdict: Verdict) -> bool:
    """Two readings agree: the same arrival, or both a failure."""
    if candidate is None:
        return False
    if isinstance(candidate, Arrived):
        return candidate == verdict
    return isinstance(verdict, Failed)
