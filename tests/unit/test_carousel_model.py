"""Unit tests for carousel_gateway.sim.carousel, driven by a fake clock (no sleeps)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carousel_gateway.plc.status import StatusKey
from carousel_gateway.sim.carousel import CarouselModel, Fault, MoveResponse

RUN_BIT = 0b0000_0010
DESCENDING_BIT = 0b1000_0000


class FakeClock:
    """A mutable clock: tests move time forward explicitly."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def set(self, now: float) -> None:
        self.now = now


def make(
    positions: int = 30,
    start_index: int = 0,
    seconds_per_position: float = 1.0,
    start_time: float = 0.0,
) -> tuple[CarouselModel, FakeClock]:
    clock = FakeClock(start_time)
    model = CarouselModel(positions, seconds_per_position, clock=clock, start_index=start_index)
    return model, clock


def path(model: CarouselModel, clock: FakeClock, steps: int, step_s: float = 1.0) -> list[int]:
    """The position at t0, t0 + step_s, ..., t0 + steps * step_s."""
    t0 = clock.now
    indices = []
    for k in range(steps + 1):
        clock.set(t0 + k * step_s)
        indices.append(model.position_index)
    return indices


# -- idle ----------------------------------------------------------------------------------


def test_idle_model_reports_21() -> None:
    model, _ = make(start_index=7)
    assert model.status_byte() == 21
    assert model.status().raw == 21
    assert model.position_index == 7
    assert model.target_index == 7
    assert model.moving is False
    assert model.arrival_time() is None
    assert model.faults == frozenset()
    assert model.moves_started == 0


def test_idle_model_does_not_drift_with_time() -> None:
    model, clock = make(start_index=4)
    clock.set(10_000.0)
    assert model.position_index == 4
    assert model.status_byte() == 21


# -- travelling ----------------------------------------------------------------------------


def test_ascending_move_steps_one_bucket_per_period_and_arrives() -> None:
    model, clock = make(start_index=0)
    assert model.move(5) is MoveResponse.STARTED
    assert model.moves_started == 1
    assert model.target_index == 5
    assert model.arrival_time() == pytest.approx(5.0)
    # Ascending: RUN set, SENTIDO_GIRO clear -> 23, the observed "moving, remote".
    assert model.status_byte() == 23
    for k in range(5):
        clock.set(k + 0.999)
        assert model.position_index == k
        assert model.moving is True
        assert model.status_byte() & RUN_BIT
        clock.set(k + 1.0)
        assert model.position_index == k + 1
    assert model.position_index == 5
    assert model.moving is False
    assert model.status_byte() & RUN_BIT == 0
    assert model.status_byte() == 21
    assert model.arrival_time() is None


def test_descending_move_sets_sentido_giro_and_arrives() -> None:
    model, clock = make(start_index=10)
    assert model.move(7) is MoveResponse.STARTED
    # Descending: RUN and SENTIDO_GIRO set -> 151, the observed "moving downwards, remote".
    assert model.status_byte() == 151
    assert model.status().descending is True
    for k, expected in enumerate([10, 9, 8]):
        clock.set(float(k))
        assert model.position_index == expected
        clock.set(k + 0.5)
        assert model.status_byte() == 151
    clock.set(3.0)
    assert model.position_index == 7
    assert model.moving is False
    assert model.status_byte() & RUN_BIT == 0
    assert not model.status().running


def test_shorter_way_is_taken() -> None:
    # 0 -> 20 on 30 positions: 20 forward, 10 backward -> descend 10 buckets.
    model, clock = make(start_index=0)
    model.move(20)
    assert model.status_byte() & DESCENDING_BIT
    assert model.arrival_time() == pytest.approx(10.0)
    assert path(model, clock, 10) == [0, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20]


def test_wrap_around_ascending_28_to_2() -> None:
    model, clock = make(positions=30, start_index=28)
    assert model.move(2) is MoveResponse.STARTED
    assert model.status_byte() & DESCENDING_BIT == 0
    assert model.arrival_time() == pytest.approx(4.0)
    assert path(model, clock, 4) == [28, 29, 0, 1, 2]
    assert model.moving is False
    assert model.status_byte() == 21


def test_wrap_around_descending_2_to_28() -> None:
    model, clock = make(positions=30, start_index=2)
    model.move(28)
    assert model.status_byte() & DESCENDING_BIT
    assert path(model, clock, 4) == [2, 1, 0, 29, 28]
    assert model.moving is False


def test_move_to_current_index_makes_a_full_turn() -> None:
    model, clock = make(positions=30, start_index=12)
    assert model.move(12) is MoveResponse.STARTED
    assert model.moving is True
    assert model.status_byte() & RUN_BIT
    assert model.arrival_time() == pytest.approx(30.0)
    visited = path(model, clock, 30)
    assert visited == [(12 + k) % 30 for k in range(31)]
    assert model.moving is False
    assert model.position_index == 12


def test_fractional_period_steps_exactly() -> None:
    model, clock = make(start_index=0, seconds_per_position=0.1, start_time=100.0)
    model.move(3)
    clock.set(100.0 + 0.3)  # 0.3 / 0.1 is 2.999... in floating point
    assert model.position_index == 3
    assert model.moving is False
    assert model.move(6) is MoveResponse.STARTED
    clock.set(100.3 + 0.2)
    assert model.position_index == 5
    assert model.moving is True


def test_move_is_ignored_while_running() -> None:
    model, clock = make(start_index=0)
    model.move(5)
    clock.set(2.0)
    assert model.move(9) is MoveResponse.IGNORED_RUNNING
    assert model.target_index == 5
    assert model.moves_started == 1
    clock.set(5.0)
    assert model.position_index == 5
    assert model.moving is False


@pytest.mark.parametrize("index", [-1, 30, 255])
def test_move_out_of_range_is_ignored(index: int) -> None:
    model, _ = make(start_index=3)
    assert model.move(index) is MoveResponse.IGNORED_OUT_OF_RANGE
    assert model.moving is False
    assert model.target_index == 3
    assert model.moves_started == 0


# -- faults --------------------------------------------------------------------------------

# The status byte of an idle machine at rest with only that fault raised.
FAULT_STATUS = {
    Fault.EMERGENCY_STOP: 21 & ~0b0001_0001,  # READY and PARADA_EMERGENCIA cleared -> 4
    Fault.MANUAL_MODE: 21 & ~0b0000_0100,  # 17, the observed "ready, manual"
    Fault.ALARM: 21 | 0b0000_1000,
    Fault.VFD_FAULT: 21 | 0b0010_0000,
    Fault.POSITIONING_ERROR: 21 | 0b0100_0000,
}


@pytest.mark.parametrize("fault", list(Fault))
def test_fault_during_travel_stops_where_it_is_and_keeps_target(fault: Fault) -> None:
    model, clock = make(start_index=0)
    model.move(10)
    clock.set(3.5)
    model.set_fault(fault, True)
    assert model.moving is False
    assert model.position_index == 3
    assert model.target_index == 10
    assert model.arrival_time() is None
    assert model.faults == frozenset({fault})
    assert model.status_byte() == FAULT_STATUS[fault]
    clock.set(100.0)
    assert model.position_index == 3
    assert model.target_index == 10


@pytest.mark.parametrize("fault", list(Fault))
def test_move_is_ignored_while_a_fault_is_active(fault: Fault) -> None:
    model, clock = make(start_index=2)
    model.set_fault(fault, True)
    assert model.move(6) is MoveResponse.IGNORED_BLOCKED
    assert model.moving is False
    assert model.target_index == 2
    assert model.moves_started == 0
    clock.set(10.0)
    assert model.position_index == 2
    model.set_fault(fault, False)
    assert model.status_byte() == 21
    assert model.move(6) is MoveResponse.STARTED
    assert model.target_index == 6


def test_emergency_stop_clears_ready_and_parada_emergencia() -> None:
    model, _ = make()
    model.set_fault(Fault.EMERGENCY_STOP, True)
    status = model.status()
    assert status.raw == 4
    assert not status.ready
    assert status.emergency_stop is True
    assert status.bit(StatusKey.PARADA_EMERGENCIA) == 0
    assert status.labels()["PARADA_EMERGENCIA"] == "Activa"
    assert status.remote is True


def test_manual_mode_clears_bit_2() -> None:
    model, _ = make()
    model.set_fault("manual_mode", True)
    assert model.status_byte() == 17
    assert model.status().remote is False
    model.set_fault("manual_mode", False)
    assert model.status_byte() == 21


def test_fault_stays_until_every_fault_is_cleared() -> None:
    model, _ = make()
    model.set_fault(Fault.ALARM, True)
    model.set_fault(Fault.VFD_FAULT, True)
    model.set_fault(Fault.ALARM, False)
    assert model.faults == frozenset({Fault.VFD_FAULT})
    assert model.move(5) is MoveResponse.IGNORED_BLOCKED
    model.set_fault(Fault.VFD_FAULT, False)
    assert model.move(5) is MoveResponse.STARTED


def test_unknown_fault_name_raises() -> None:
    model, _ = make()
    with pytest.raises(ValueError):
        model.set_fault("coffee_spill", True)


# -- set-up --------------------------------------------------------------------------------


def test_teleport_places_the_chain() -> None:
    model, _ = make()
    model.teleport(17)
    assert model.position_index == 17
    with pytest.raises(ValueError):
        model.teleport(30)


@pytest.mark.parametrize(
    ("positions", "seconds_per_position", "start_index"),
    [(1, 1.0, 0), (257, 1.0, 0), (30, 0.0, 0), (30, -1.0, 0), (30, 1.0, 30), (30, 1.0, -1)],
)
def test_constructor_rejects_bad_arguments(
    positions: int, seconds_per_position: float, start_index: int
) -> None:
    with pytest.raises(ValueError):
        CarouselModel(positions, seconds_per_position, start_index=start_index)


# -- properties ----------------------------------------------------------------------------


@st.composite
def trips(draw: st.DrawFn) -> tuple[int, int, int]:
    positions = draw(st.integers(min_value=2, max_value=256))
    start = draw(st.integers(min_value=0, max_value=positions - 1))
    target = draw(st.integers(min_value=0, max_value=positions - 1).filter(lambda t: t != start))
    return positions, start, target


@given(
    trips(),
    st.sampled_from([0.25, 0.5, 1.0, 2.0]),
    st.floats(min_value=0.0, max_value=1e5, allow_nan=False),
)
def test_travel_is_the_shorter_way_and_arrives_at_target(
    trip: tuple[int, int, int], period: float, start_time: float
) -> None:
    positions, start, target = trip
    forward = (target - start) % positions
    distance = min(forward, positions - forward)
    model, clock = make(positions, start, period, start_time)

    assert model.move(target) is MoveResponse.STARTED
    arrival = model.arrival_time()
    assert arrival is not None
    assert arrival - start_time == pytest.approx(distance * period)

    direction = -1 if model.status().descending else 1
    assert model.status().running
    # Each period moves the chain one bucket in that direction, never further.
    for k in range(distance):
        clock.set(start_time + (k + 0.5) * period)
        assert model.position_index == (start + direction * k) % positions
        assert model.moving
    assert (start + direction * distance) % positions == target

    clock.set(start_time + distance * period + 1e-6)
    assert model.position_index == target
    assert model.moving is False
    assert not model.status().running
