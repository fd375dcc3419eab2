"""The Modbus telemetry rules without links: fallback timing, return, desync confirmation."""

from __future__ import annotations

from carousel_gateway.fleet.diagnostics import percentile
from carousel_gateway.fleet.events import TelemetrySource
from carousel_gateway.fleet.telemetry import DesyncStep, TelemetryPolicy


def policy() -> TelemetryPolicy:
    return TelemetryPolicy(
        source=TelemetrySource.MODBUS, fallback_s=1.0, poll_idle_s=0.5, poll_active_s=0.1
    )


def test_fallback_is_due_only_after_fallback_s_without_a_good_reading() -> None:
    rules = policy()
    rules.restart_clock(10.0)
    assert not rules.fallback_due(10.9)
    assert rules.fallback_due(11.0)
    assert rules.switch(TelemetrySource.PORT3200)
    assert not rules.switch(TelemetrySource.PORT3200)  # already there: nothing to report
    assert rules.fallbacks == 1
    assert rules.modbus_reading_ok(12.0)  # Modbus is back: switch to it
    assert rules.switch(TelemetrySource.MODBUS)
    assert not rules.modbus_reading_ok(12.5)
    assert rules.fallbacks == 1


def test_modbus_interval_follows_the_period_but_never_misses_the_fallback() -> None:
    rules = policy()
    rules.restart_clock(0.0)
    assert rules.modbus_interval(0.05, 0.0, busy=False, plc_up=False) == 0.45
    assert abs(rules.modbus_interval(0.05, 0.0, busy=True, plc_up=True) - 0.05) < 1e-9
    assert abs(rules.modbus_interval(0.8, 0.7, busy=False, plc_up=True) - 0.2) < 1e-9


def test_desync_is_reported_after_confirming_readings_and_once() -> None:
    rules = policy()
    assert rules.desync_step(busy=False, desync=True, reported=False) is DesyncStep.NONE
    assert rules.desync_step(busy=False, desync=True, reported=False) is DesyncStep.REPORT
    assert rules.desync_step(busy=False, desync=True, reported=True) is DesyncStep.NONE
    assert rules.desync_step(busy=False, desync=False, reported=True) is DesyncStep.CLEAR
    assert rules.desync_step(busy=True, desync=True, reported=False) is DesyncStep.NONE
    assert rules.desync_readings == 0


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([0.1, 0.2, 0.3, 0.4], 0.5) == 0.2
    assert percentile([0.1, 0.2, 0.3, 0.4], 0.99) == 0.4
