"""Unit tests for carousel_gateway.fleet.lifecycle (MoveTracker)."""

from __future__ import annotations

import pytest

from carousel_gateway.fleet.lifecycle import (
    Arrived,
    Failed,
    FailReason,
    MovePhase,
    MoveTracker,
    stopping_conditions,
)
from carousel_gateway.plc.status import StatusWord

IDLE = StatusWord(21)
MOVING_UP = StatusWord(23)
MOVING_DOWN = StatusWord(151)

TARGET = 9


def tracker(
    target: int = TARGET,
    *,
    started_at: float = 100.0,
    timeout_s: float = 60.0,
    start_timeout_s: float = 5.0,
) -> MoveTracker:
    return MoveTracker(
        target, started_at=started_at, timeout_s=timeout_s, start_timeout_s=start_timeout_s
    )


def test_new_tracker_is_sent_and_not_done() -> None:
    move = tracker()
    assert move.phase is MovePhase.SENT
    assert move.verdict is None
    assert not move.done
    assert move.deadline == 160.0
    assert move.start_deadline == 105.0


def test_arrival_after_run_seen() -> None:
    move = tracker()
    assert move.observe(IDLE, 5, 100.2) is None  # not started yet
    assert move.phase is MovePhase.SENT
    assert move.observe(MOVING_UP, 6, 100.5) is None
    assert move.phase is MovePhase.MOVING
    assert move.observe(MOVING_UP, 8, 102.0) is None
    verdict = move.observe(IDLE, TARGET, 103.0)
    assert verdict == Arrived(TARGET)
    assert move.verdict == Arrived(TARGET)
    assert move.phase is MovePhase.ARRIVED
    assert move.done


def test_running_at_target_is_not_yet_arrival() -> None:
    # RUN still 1 at the target index (e.g. a full turn passing it): keep waiting.
    move = tracker()
    assert move.observe(MOVING_DOWN, TARGET, 101.0) is None
    assert move.phase is MovePhase.MOVING
    assert move.observe(IDLE, TARGET, 102.0) == Arrived(TARGET)


def test_arrival_without_ever_seeing_run() -> None:
    # A short move done between two polls: RUN never observed.
    move = tracker()
    verdict = move.observe(IDLE, TARGET, 100.4)
    assert verdict == Arrived(TARGET)
    assert move.phase is MovePhase.ARRIVED


STOPPING = [
    pytest.param(21 & ~0x01, "READY", id="not-ready"),
    pytest.param(21 & ~0x04, "MODO_OPERACION", id="manual"),
    pytest.param(21 | 0x08, "ALARMA", id="alarm"),
    pytest.param(21 & ~0x10, "PARADA_EMERGENCIA", id="estop"),
    pytest.param(21 | 0x20, "VFD", id="vfd"),
    pytest.param(21 | 0x40, "ERROR_POSICIONAMIENTO", id="positioning"),
]


@pytest.mark.parametrize(("raw", "key"), STOPPING)
def test_each_stopping_condition_fails_with_its_key_while_moving(raw: int, key: str) -> None:
    move = tracker()
    move.observe(MOVING_UP, 4, 101.0)
    verdict = move.observe(StatusWord(raw), 5, 102.0)
    assert verdict == Failed((key,))
    assert move.phase is MovePhase.FAILED
    assert move.done


@pytest.mark.parametrize(("raw", "key"), STOPPING)
def test_each_stopping_condition_fails_even_with_run_still_set(raw: int, key: str) -> None:
    move = tracker()
    verdict = move.observe(StatusWord(raw | 0x02), 5, 101.0)
    assert verdict == Failed((key,))


@pytest.mark.parametrize(("raw", "key"), STOPPING)
def test_stopping_condition_wins_over_being_at_target(raw: int, key: str) -> None:
    move = tracker()
    assert move.observe(StatusWord(raw), TARGET, 101.0) == Failed((key,))


def test_several_stopping_conditions_are_all_reported_in_bit_order() -> None:
    # E-stop as the simulator reports it: READY and PARADA_EMERGENCIA both cleared.
    move = tracker()
    move.observe(MOVING_UP, 3, 101.0)
    assert move.observe(StatusWord(0b0000_0100), 4, 102.0) == Failed(("READY", "PARADA_EMERGENCIA"))


def test_stopping_conditions_exclude_run_and_direction() -> None:
    assert stopping_conditions(MOVING_DOWN) == ()
    assert stopping_conditions(IDLE) == ()
    assert stopping_conditions(StatusWord(0)) == ("READY", "MODO_OPERACION", "PARADA_EMERGENCIA")


def test_stopped_off_target_fails_after_two_readings_not_one() -> None:
    move = tracker()
    move.observe(MOVING_UP, 4, 101.0)
    assert move.observe(IDLE, 6, 102.0) is None  # one reading of lag is allowed
    assert move.phase is MovePhase.MOVING
    assert not move.done
    verdict = move.observe(IDLE, 6, 102.2)
    assert verdict == Failed((FailReason.STOPPED_OFF_TARGET.value,))
    assert verdict == Failed(("stopped_off_target",))
    assert move.phase is MovePhase.FAILED


def test_position_lag_then_target_is_arrival() -> None:
    # RUN falls one reading before the position register catches up.
    move = tracker()
    move.observe(MOVING_UP, 8, 101.0)
    assert move.observe(IDLE, 8, 101.2) is None
    assert move.observe(IDLE, TARGET, 101.4) == Arrived(TARGET)


def test_run_again_resets_the_off_target_count() -> None:
    move = tracker()
    move.observe(MOVING_UP, 4, 101.0)
    assert move.observe(IDLE, 5, 101.2) is None
    assert move.observe(MOVING_UP, 6, 101.4) is None
    assert move.observe(IDLE, 7, 101.6) is None  # a fresh first stopped reading
    assert move.observe(IDLE, 7, 101.8) == Failed(("stopped_off_target",))


def test_not_started_after_start_timeout() -> None:
    move = tracker(started_at=100.0, start_timeout_s=5.0)
    assert move.observe(IDLE, 3, 101.0) is None
    assert move.observe(IDLE, 3, 104.99) is None
    assert move.phase is MovePhase.SENT
    verdict = move.observe(IDLE, 3, 105.0)
    assert verdict == Failed((FailReason.NOT_STARTED.value,))
    assert verdict == Failed(("not_started",))
    assert move.phase is MovePhase.FAILED


def test_not_started_does_not_apply_once_moving() -> None:
    move = tracker(started_at=100.0, start_timeout_s=5.0)
    move.observe(MOVING_UP, 4, 101.0)
    assert move.observe(MOVING_UP, 7, 110.0) is None
    assert move.phase is MovePhase.MOVING


def test_timeout_after_deadline_while_moving() -> None:
    move = tracker(started_at=100.0, timeout_s=60.0)
    move.observe(MOVING_UP, 4, 101.0)
    assert move.observe(MOVING_UP, 5, 159.9) is None
    verdict = move.observe(MOVING_UP, 6, 160.0)
    assert verdict == Failed(("timeout",))
    assert move.phase is MovePhase.FAILED


def test_check_deadline_without_a_reading() -> None:
    move = tracker(started_at=100.0, timeout_s=60.0)
    assert move.check_deadline(159.0) is None
    assert not move.done
    assert move.check_deadline(160.0) == Failed((FailReason.TIMEOUT.value,))
    assert move.done


def test_connection_lost() -> None:
    move = tracker()
    move.observe(MOVING_UP, 4, 101.0)
    assert move.connection_lost() == Failed(("connection_lost",))
    assert move.phase is MovePhase.FAILED
    assert move.verdict == Failed((FailReason.CONNECTION_LOST.value,))


def test_no_verdict_after_done() -> None:
    move = tracker()
    assert move.observe(IDLE, TARGET, 101.0) == Arrived(TARGET)
    assert move.observe(StatusWord(21 | 0x20), 3, 102.0) is None
    assert move.observe(IDLE, 3, 1_000.0) is None
    assert move.check_deadline(1_000.0) is None
    assert move.connection_lost() is None
    assert move.verdict == Arrived(TARGET)
    assert move.phase is MovePhase.ARRIVED


def test_no_verdict_after_failure() -> None:
    move = tracker()
    assert move.connection_lost() == Failed(("connection_lost",))
    assert move.observe(IDLE, TARGET, 101.0) is None
    assert move.connection_lost() is None
    assert move.verdict == Failed(("connection_lost",))
    assert move.phase is MovePhase.FAILED


# -- unconfirmed readings (port 3200): a verdict stands when the next reading agrees ----------


def test_unconfirmed_arrival_needs_the_next_reading_to_agree() -> None:
    move = tracker()
    move.observe(MOVING_UP, 6, 100.5, confirmed=False)
    assert move.observe(IDLE, TARGET, 101.0, confirmed=False) is None
    assert move.awaiting_confirmation and not move.done
    assert move.observe(IDLE, TARGET, 101.1, confirmed=False) == Arrived(TARGET)


def test_unconfirmed_arrival_is_dropped_when_the_next_reading_differs() -> None:
    # A shifted reading "arrives"; the next, in step, shows the chain still turning.
    move = tracker()
    move.observe(MOVING_UP, 6, 100.5, confirmed=False)
    assert move.observe(IDLE, TARGET, 101.0, confirmed=False) is None
    assert move.observe(MOVING_UP, 7, 101.1, confirmed=False) is None
    assert not move.awaiting_confirmation and move.phase is MovePhase.MOVING
    assert move.observe(IDLE, TARGET, 102.0, confirmed=False) is None
    assert move.observe(IDLE, TARGET, 102.1, confirmed=False) == Arrived(TARGET)


def test_a_restarted_stream_voids_an_unconfirmed_verdict() -> None:
    move = tracker()
    move.observe(MOVING_UP, 6, 100.5, confirmed=False)
    assert move.observe(IDLE, TARGET, 101.0, confirmed=False) is None
    move.stream_restarted()
    assert move.observe(IDLE, TARGET, 101.5, confirmed=False) is None
    assert move.observe(IDLE, TARGET, 101.6, confirmed=False) == Arrived(TARGET)


def test_unconfirmed_fault_needs_a_second_reading() -> None:
    move = tracker()
    estop = StatusWord(5)
    assert stopping_conditions(estop)
    assert move.observe(estop, 5, 100.2, confirmed=False) is None
    verdict = move.observe(estop, 5, 100.3, confirmed=False)
    assert isinstance(verdict, Failed)


def test_confirmed_readings_decide_at_once() -> None:
    move = tracker()
    move.observe(MOVING_UP, 6, 100.5)
    assert move.observe(IDLE, TARGET, 101.0) == Arrived(TARGET)


# -- a MOVE whose outcome is unknown (sent, no trustworthy reply) ------------------------------


def test_unacknowledged_move_survives_a_lost_link_and_is_followed() -> None:
    move = MoveTracker(
        TARGET, started_at=100.0, timeout_s=60.0, start_timeout_s=5.0, acknowledged=False
    )
    assert move.outcome_unknown
    assert move.connection_lost() is None  # still followed on the next link
    assert not move.done and move.outcome_unknown
    move.observe(MOVING_UP, 7, 103.0)
    assert not move.outcome_unknown  # motion seen: the PLC took it
    assert move.observe(IDLE, TARGET, 104.0) == Arrived(TARGET)


def test_unacknowledged_move_settles_only_past_the_start_timeout() -> None:
    move = MoveTracker(
        TARGET, started_at=100.0, timeout_s=60.0, start_timeout_s=5.0, acknowledged=False
    )
    assert move.observe(IDLE, 5, 104.9) is None  # stopped, but the PLC may start yet
    assert move.outcome_unknown
    assert move.observe(IDLE, 5, 105.0) == Failed((FailReason.NOT_STARTED.value,))
    assert not move.outcome_unknown


def test_acknowledged_move_fails_on_a_lost_link() -> None:
    move = tracker()
    assert move.connection_lost() == Failed((FailReason.CONNECTION_LOST.value,))
