"""Where a Modbus machine's readings come from, and when to switch: a pure policy.

No I/O and no events: the machine feeds it loop times and readings, asks it what to do,
and does the talking and the publishing itself. That keeps the fallback rules (Modbus
silent for ``modbus_fallback_s`` → port 3200; the first good Modbus reading → back) and
the desync confirmation testable without links.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from carousel_gateway.config import MachineConfig
from carousel_gateway.fleet.events import TelemetrySource

__all__ = [
    "DESYNC_CONFIRM_READINGS",
    "DesyncStep",
    "TelemetryPolicy",
]

#: Consecutive idle readings with D2 != D0 before a desync is reported: one reading could
#: catch a move started by someone else between the PLC's writes of D2 and RUN.
DESYNC_CONFIRM_READINGS = 2


class DesyncStep(Enum):
    """What one Modbus reading means for the position-desync report."""

    NONE = "none"
    REPORT = "report"
    CLEAR = "clear"


@dataclass(slots=True)
class TelemetryPolicy:
    """The source in use, the fallbacks so far, and the clocks the switches are judged on."""

    source: TelemetrySource
    fallback_s: float
    poll_idle_s: float
    poll_active_s: float
    confirm_readings: int = DESYNC_CONFIRM_READINGS
    fallbacks: int = 0
    modbus_ok_at: float = 0.0  # loop time of the last good Modbus reading (or the start)
    desync_readings: int = 0

    @classmethod
    def for_machine(cls, config: MachineConfig) -> TelemetryPolicy:
        modbus = config.telemetry == "modbus"
        return cls(
            source=TelemetrySource.MODBUS if modbus else TelemetrySource.PORT3200,
            fallback_s=config.modbus_fallback_s,
            poll_idle_s=config.modbus_poll_idle_s,
            poll_active_s=config.modbus_poll_active_s,
        )

    def restart_clock(self, now: float) -> None:
        """Polling starts: Modbus gets ``fallback_s`` to give a first reading."""
        self.modbus_ok_at = now

    def modbus_reading_ok(self, now: float) -> bool:
        """Record a good Modbus reading; True when Modbus should become the source again."""
        self.modbus_ok_at = now
        return self.source is not TelemetrySource.MODBUS

    def fallback_due(self, now: float) -> bool:
        """Modbus has given no good reading for ``fallback_s`` (a hiccup is shorter)."""
        return now - self.modbus_ok_at >= self.fallback_s

    def switch(self, source: TelemetrySource) -> bool:
        """Take ``source``; False when it already was the source (nothing to report)."""
        if source is self.source:
            return False
        self.source = source
        if source is TelemetrySource.PORT3200:
            self.fallbacks += 1
        self.desync_readings = 0
        return True

    def modbus_interval(self, now: float, started: float, *, busy: bool, plc_up: bool) -> float:
        """Seconds to the next Modbus reading, the last one started at ``started``.

        Readings start every ``poll_active_s`` while busy, ``poll_idle_s`` otherwise; with
        the port-3200 link up, never later than the fallback is due (fall back on time, not
        a poll later).
        """
        period = self.poll_active_s if busy else self.poll_idle_s
        interval = max(0.0, started + period - now)
        fallback_in = self.modbus_ok_at + self.fallback_s - now
        if plc_up and fallback_in > 0:
            interval = min(interval, fallback_in)
        return interval

    def desync_step(self, *, busy: bool, desync: bool, reported: bool) -> DesyncStep:
        """One Modbus reading's verdict on the desync report (reported once per occurrence)."""
        if busy:
            # Our own move: D2 leads D0 until arrival, and the MOVE cleared any report.
            self.desync_readings = 0
            return DesyncStep.NONE
        if not desync:
            self.desync_readings = 0
            return DesyncStep.CLEAR
        self.desync_readings += 1
        if not reported and self.desync_readings >= self.confirm_readings:
            return DesyncStep.REPORT
        return DesyncStep.NONE
