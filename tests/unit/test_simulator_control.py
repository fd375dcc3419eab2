"""The API's words for the simulator controls match the simulator's own, value for value."""

from __future__ import annotations

from carousel_gateway.api.simulators import SimulatorFault, SimulatorLinkAction
from carousel_gateway.sim.carousel import Fault
from carousel_gateway.sim.server import LinkAction


def test_fault_names_match_the_simulator() -> None:
    assert [f.value for f in SimulatorFault] == [f.value for f in Fault]


def test_link_actions_match_the_simulator() -> None:
    assert [a.value for a in SimulatorLinkAction] == [a.value for a in LinkAction]
