"""The machines: one Machine per carousel (snapshot, polling, one command at a time,
interlocks on a fresh reading), the events they publish and the Fleet that holds them.

The names below load their module on first use, so importing one module of the package
does not load the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carousel_gateway.lazy_names import lazy_getattr

__all__ = [
    "DiagnosticsReport",
    "Event",
    "EventBus",
    "ExecutedCommand",
    "Fleet",
    "Machine",
    "MoveOutcomeUnknown",
    "Origin",
    "OriginChannel",
    "Snapshot",
]

_HOMES = {
    "Event": "events",
    "EventBus": "events",
    "Origin": "events",
    "OriginChannel": "events",
    "Snapshot": "events",
    "ExecutedCommand": "machine",
    "Machine": "machine",
    "MoveOutcomeUnknown": "machine",
    "DiagnosticsReport": "diagnostics",
    "Fleet": "fleet",
}


__getattr__ = lazy_getattr(__name__, _HOMES)

if TYPE_CHECKING:
    from carousel_gateway.fleet.diagnostics import DiagnosticsReport as DiagnosticsReport
    from carousel_gateway.fleet.events import Event as Event
    from carousel_gateway.fleet.events import EventBus as EventBus
    from carousel_gateway.fleet.events import Origin as Origin
    from carousel_gateway.fleet.events import OriginChannel as OriginChannel
    from carousel_gateway.fleet.events import Snapshot as Snapshot
    from carousel_gateway.fleet.fleet import Fleet as Fleet
    from carousel_gateway.fleet.machine import ExecutedCommand as ExecutedCommand
    from carousel_gateway.fleet.machine import Machine as Machine
    from carousel_gateway.fleet.machine import MoveOutcomeUnknown as MoveOutcomeUnknown
