"""Reconnect backoff and a circuit breaker: pure policies, no I/O, driven by a clock value."""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Backoff",
    "BreakerState",
    "CircuitBreaker",
]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: ``initial * factor**n`` capped, scaled by 50–100 %."""

    initial_s: float = 0.25
    maximum_s: float = 5.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before retry number ``attempt`` (1 for the first retry)."""
        try:
            base = min(self.maximum_s, self.initial_s * self.factor ** max(0, attempt - 1))
        except OverflowError:  # a PLC down for hours: the cap is the answer
            base = self.maximum_s
        return base * (0.5 + 0.5 * (rng or random).random())


class BreakerState(StrEnum):
    CLOSED = "closed"  # normal: attempts allowed
    OPEN = "open"  # failing: attempts refused until the cooldown ends
    HALF_OPEN = "half_open"  # cooldown over: one trial attempt decides


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; one trial after ``cooldown_s``.

    A dead PLC then costs one connection attempt per cooldown instead of a stream of
    attempts and timeouts.
    """

    def __init__(self, threshold: int = 5, cooldown_s: float = 5.0) -> None:
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self.times_opened = 0

    def state(self, now: float) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if now - self.opened_at >= self.cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allows(self, now: float) -> bool:
        return self.state(now) is not BreakerState.OPEN

    def remaining(self, now: float) -> float:
        """Seconds until a trial attempt is allowed (0 when allowed now)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown_s - now)

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def record_failure(self, now: float) -> None:
        """Count a failure; a failed trial (half-open) re-opens at once."""
        self.failures += 1
        if self.opened_at is not None or self.failures >= self.threshold:
            if self.opened_at is None or now - self.opened_at >= self.cooldown_s:
                self.times_opened += 1
            self.opened_at = now

    @property
    def is_open_or_trial(self) -> bool:
        return self.opened_at is not None
