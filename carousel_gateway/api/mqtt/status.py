"""The MQTT link's state as health, metrics and the dashboard read it (pure values)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["MqttLinkState", "MqttStatus"]


class MqttLinkState(StrEnum):
    CONNECTING = "connecting"  # no connection yet, or reconnecting after a loss
    WAITING_FOR_HOST = "waiting_for_host"  # connected; the primary host is not online
    ONLINE = "online"  # connected, births published (or JSON: online status published)
    DISCONNECTED = "disconnected"  # stopped
    STANDBY = "standby"  # [ha]: this instance is not the cell's active; the active publishes


@dataclass(slots=True)
class MqttStatus:
    """Mutable counters and state kept by the link; read at request or scrape time."""

    broker: str
    format: str
    state: MqttLinkState = MqttLinkState.CONNECTING
    since: float = 0.0  # wall clock of the last state change
    last_error: str | None = None
    bd_seq: int | None = None
    connects: int = 0
    published: dict[str, int] = field(default_factory=dict)  # by kind (NBIRTH, DDATA, ...)
    commands: dict[str, int] = field(default_factory=dict)  # by result
    ignored: int = 0  # messages in that were ignored (unknown metric, wrong type, ...)

    @property
    def connected(self) -> bool:
        return self.state in (MqttLinkState.ONLINE, MqttLinkState.WAITING_FOR_HOST)
