"""Unit tests for carousel_gateway.plc.resilience (backoff and circuit breaker)."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carousel_gateway.plc.resilience import Backoff, BreakerState, CircuitBreaker


class FixedRandom(random.Random):
    """A Random whose ``random()`` always returns the same value (jitter pinned)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


LOWEST = FixedRandom(0.0)  # jitter at its floor: 50 % of nominal
HIGHEST = FixedRandom(1.0 - 2**-53)  # the largest value random() can return


def nominal(backoff: Backoff, attempt: int) -> float:
    return min(backoff.maximum_s, backoff.initial_s * backoff.factor ** max(0, attempt - 1))


# -- backoff -------------------------------------------------------------------------------


def test_default_backoff_nominal_sequence() -> None:
    backoff = Backoff()
    top = [backoff.delay(n, HIGHEST) for n in range(1, 9)]
    assert top == pytest.approx([0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0])
    bottom = [backoff.delay(n, LOWEST) for n in range(1, 9)]
    assert bottom == pytest.approx([0.125, 0.25, 0.5, 1.0, 2.0, 2.5, 2.5, 2.5])


@pytest.mark.parametrize("rng", [LOWEST, FixedRandom(0.37), HIGHEST])
def test_backoff_delays_grow_until_the_cap(rng: random.Random) -> None:
    backoff = Backoff(initial_s=0.1, maximum_s=3.0, factor=2.0)
    delays = [backoff.delay(n, rng) for n in range(1, 12)]
    capped_from = next(i for i, n in enumerate(range(1, 12)) if nominal(backoff, n) >= 3.0)
    growing = delays[: capped_from + 1]
    assert all(a < b for a, b in pairwise(growing))
    assert len(set(delays[capped_from:])) == 1
    assert max(delays) <= 3.0


def test_first_retry_and_attempt_zero_use_the_initial_delay() -> None:
    backoff = Backoff(initial_s=0.4, maximum_s=10.0)
    assert backoff.delay(0, LOWEST) == pytest.approx(0.2)
    assert backoff.delay(1, LOWEST) == pytest.approx(0.2)
    assert backoff.delay(1, HIGHEST) == pytest.approx(0.4)


def test_backoff_without_rng_uses_module_random() -> None:
    random.seed(1234)
    delays = [Backoff().delay(3) for _ in range(200)]
    assert all(0.5 <= d <= 1.0 for d in delays)
    assert len(set(delays)) > 1  # jitter actually varies


def test_backoff_stays_capped_after_a_long_outage() -> None:
    """A PLC dead for hours keeps the attempt counter growing; the delay must stay capped.

    The connection supervisor calls ``delay(attempt)`` with an unbounded attempt count.
    """
    backoff = Backoff()  # initial 0.25, factor 2, cap 5
    for attempt in (1_025, 2_000, 100_000):
        assert 2.5 <= backoff.delay(attempt, random.Random(attempt)) <= 5.0


@given(
    attempt=st.integers(min_value=0, max_value=200),
    initial=st.floats(min_value=0.01, max_value=2.0),
    maximum=st.floats(min_value=2.0, max_value=60.0),
    factor=st.floats(min_value=1.1, max_value=4.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_within_half_and_full_nominal(
    attempt: int, initial: float, maximum: float, factor: float, seed: int
) -> None:
    backoff = Backoff(initial, maximum, factor)
    expected = nominal(backoff, attempt)
    delay = backoff.delay(attempt, random.Random(seed))
    assert 0.5 * expected - 1e-12 <= delay <= expected + 1e-12
    assert delay <= maximum + 1e-12


# -- circuit breaker -----------------------------------------------------------------------


def test_breaker_starts_closed() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=5.0)
    assert breaker.state(0.0) is BreakerState.CLOSED
    assert breaker.allows(0.0)
    assert breaker.remaining(0.0) == 0.0
    assert not breaker.is_open_or_trial
    assert breaker.times_opened == 0


def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=5.0)
    breaker.record_failure(0.0)
    breaker.record_failure(1.0)
    assert breaker.state(1.0) is BreakerState.CLOSED
    assert breaker.allows(1.0)
    breaker.record_failure(2.0)
    assert breaker.state(2.0) is BreakerState.OPEN
    assert not breaker.allows(2.0)
    assert breaker.times_opened == 1
    assert breaker.is_open_or_trial


def test_success_resets_the_consecutive_count() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=5.0)
    breaker.record_failure(0.0)
    breaker.record_failure(1.0)
    breaker.record_success()
    breaker.record_failure(2.0)
    breaker.record_failure(3.0)
    assert breaker.state(3.0) is BreakerState.CLOSED
    breaker.record_failure(4.0)
    assert breaker.state(4.0) is BreakerState.OPEN


def test_open_breaker_refuses_until_cooldown_then_goes_half_open() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown_s=5.0)
    breaker.record_failure(10.0)
    breaker.record_failure(10.0)
    assert breaker.remaining(10.0) == pytest.approx(5.0)
    assert breaker.remaining(13.0) == pytest.approx(2.0)
    assert breaker.state(14.999) is BreakerState.OPEN
    assert not breaker.allows(14.999)
    assert breaker.state(15.0) is BreakerState.HALF_OPEN
    assert breaker.allows(15.0)
    assert breaker.remaining(15.0) == 0.0
    assert breaker.remaining(100.0) == 0.0


def test_failed_trial_reopens_at_once() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown_s=5.0)
    for t in (0.0, 0.1, 0.2):
        breaker.record_failure(t)
    assert breaker.state(6.0) is BreakerState.HALF_OPEN
    breaker.record_failure(6.0)  # one failed trial is enough, not `threshold` more
    assert breaker.state(6.0) is BreakerState.OPEN
    assert not breaker.allows(10.9)
    assert breaker.remaining(6.0) == pytest.approx(5.0)
    assert breaker.state(11.0) is BreakerState.HALF_OPEN
    assert breaker.times_opened == 2


def test_successful_trial_closes() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown_s=2.0)
    breaker.record_failure(0.0)
    assert breaker.state(1.0) is BreakerState.OPEN
    assert breaker.state(2.0) is BreakerState.HALF_OPEN
    breaker.record_success()
    assert breaker.state(2.0) is BreakerState.CLOSED
    assert breaker.failures == 0
    assert not breaker.is_open_or_trial
    assert breaker.remaining(2.0) == 0.0
    assert breaker.times_opened == 1


def test_failure_while_already_open_does_not_count_a_new_opening() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown_s=5.0)
    breaker.record_failure(0.0)
    breaker.record_failure(1.0)  # still open (before cooldown)
    assert breaker.times_opened == 1
    assert breaker.state(1.0) is BreakerState.OPEN


@pytest.mark.parametrize("threshold", [0, -1])
def test_breaker_rejects_threshold_below_one(threshold: int) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(threshold=threshold)


@given(st.integers(min_value=1, max_value=20), st.floats(min_value=0.1, max_value=100.0))
def test_breaker_opens_exactly_at_threshold(threshold: int, cooldown: float) -> None:
    breaker = CircuitBreaker(threshold=threshold, cooldown_s=cooldown)
    for n in range(1, threshold + 1):
        assert breaker.state(0.0) is BreakerState.CLOSED
        breaker.record_failure(0.0)
        assert breaker.failures == n
    assert breaker.state(0.0) is BreakerState.OPEN
    assert breaker.state(cooldown) is BreakerState.HALF_OPEN
