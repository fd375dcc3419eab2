"""What the REST API may do to a simulator embedded in the gateway, and nothing more.

The API never imports ``sim/``: it knows this protocol, and the composition root
(``app.py``) hands it one adapter per embedded simulator. The two enums are the API's
vocabulary for the simulator controls; ``tests/unit/test_simulator_control.py`` keeps
their values equal to the simulator's own.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

__all__ = [
    "SimulatorControl",
    "SimulatorFault",
    "SimulatorLinkAction",
]


class SimulatorFault(StrEnum):
    """Conditions the simulator controls can raise on a simulated carousel."""

    EMERGENCY_STOP = "emergency_stop"
    MANUAL_MODE = "manual_mode"
    ALARM = "alarm"
    VFD_FAULT = "vfd_fault"
    POSITIONING_ERROR = "positioning_error"


class SimulatorLinkAction(StrEnum):
    """Link faults the simulator controls can produce."""

    DROP = "drop"  # close the current connection now
    STALL = "stall"  # keep the connection but stop answering
    RESUME = "resume"  # answer again


class SimulatorControl(Protocol):
    """One embedded simulator, as the REST API may drive it."""

    def set_fault(self, fault: SimulatorFault, active: bool) -> None:
        """Raise or clear a fault on the simulated carousel."""

    def active_faults(self) -> list[SimulatorFault]:
        """Every fault active now, sorted."""

    def status_byte(self) -> int:
        """The simulated PLC's status byte now."""

    def link(self, action: SimulatorLinkAction) -> None:
        """Drop, stall or resume the simulated PLC's link."""

    @property
    def stalled(self) -> bool: ...

    @property
    def session_open(self) -> bool: ...
