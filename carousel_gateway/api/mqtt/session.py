"""A Sparkplug B 3.0 edge node session as a state machine (sans-I/O).

It is fed what happens (connected with a ``bdSeq``, a device's values changed, a message
arrived, time passed) and answers with actions: messages to publish, a move to run, a
reconnect, a note to log. It owns the Sparkplug rules: topics, QoS and retain, ``seq`` 0 on
NBIRTH then +1 per message mod 256, births before data, aliases, change-only DDATA, DDEATH
after a link has been down for ``device_death_s``, throttled rebirths, DCMD decoding and
request-id de-duplication, and the primary host's STATE. ``api/mqtt/link.py`` puts it on
a broker.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from carousel_gateway.api.mqtt.codec import (
    DataType,
    Metric,
    MetricValue,
    PayloadError,
    decode_payload,
    encode_payload,
)
from carousel_gateway.api.mqtt.device import COMMAND_METRICS, DEVICE_METRICS, MOVE_TO, REQUEST_ID

__all__ = [
    "BD_SEQ",
    "NAMESPACE",
    "REBIRTH",
    "REMEMBERED_REQUEST_IDS",
    "Action",
    "EdgeNodeSession",
    "MoveRequest",
    "NodeState",
    "Notice",
    "Publish",
    "Reconnect",
    "device_aliases",
]

NAMESPACE = "spBv1.0"
BD_SEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
#: Request ids remembered per device, to run a repeated DCMD only once.
REMEMBERED_REQUEST_IDS = 1000

#: Node metrics after bdSeq (which goes by name only, as in the NDEATH), with their aliases.
_NODE_METRICS: tuple[tuple[str, DataType], ...] = (
    (REBIRTH, DataType.BOOLEAN),
    ("Properties/Version", DataType.STRING),
    ("Properties/Instance", DataType.STRING),
    ("Properties/Devices", DataType.INT32),
    ("Properties/CommandsEnabled", DataType.BOOLEAN),
)
#: Under [ha], who publishes as the cell's edge node: the lease holder and its epoch (a
#: host tells a takeover from a restart by them). Appended so the other aliases keep theirs.
_OWNER_METRICS: tuple[tuple[str, DataType], ...] = (
    ("Owner/Instance", DataType.STRING),
    ("Owner/Epoch", DataType.INT64),
)
#: A device's aliases start at (its index + 1) * this; node metrics stay below it.
_ALIAS_BLOCK = 1000


@dataclass(frozen=True, slots=True)
class Publish:
    """A message for the broker; ``kind`` names it for logs and metrics (NBIRTH, ...)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    kind: str
    device: str | None = None


@dataclass(frozen=True, slots=True)
class MoveRequest:
    """A DCMD ``Command/MoveTo`` to run through the command path."""

    machine_id: str
    target: int
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Leave the broker (the NDEATH is published first) and come back: the primary host
    went offline."""

    reason: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Something for one log line: a message ignored (an unknown metric, a wrong type, a
    duplicate) or, with ``ignored`` False, a request put off (a throttled rebirth)."""

    text: str
    ignored: bool = True


Action = Publish | MoveRequest | Reconnect | Notice


class NodeState(StrEnum):
    OFFLINE = "offline"  # no broker connection
    WAITING_FOR_HOST = "waiting_for_host"  # connected, the primary host is not online
    ONLINE = "online"  # NBIRTH published


def device_aliases(index: int) -> dict[str, int]:
    """The aliases of the device at ``index`` (fleet order), unique within the node."""
    base = (index + 1) * _ALIAS_BLOCK
    return {name: base + offset for offset, (name, _type) in enumerate(DEVICE_METRICS)}


_DEVICE_TYPES = dict(DEVICE_METRICS)


@dataclass(slots=True)
class _Device:
    aliases: dict[str, int]
    names: dict[int, str]
    values: dict[str, MetricValue] = field(default_factory=dict)
    alive: bool = False
    born: bool = False
    published: dict[str, MetricValue] = field(default_factory=dict)
    down_since: float | None = None
    request_ids: OrderedDict[str, None] = field(default_factory=OrderedDict)


class EdgeNodeSession:
    """The Sparkplug rules of one edge node; every method returns the actions to take."""

    def __init__(
        self,
        *,
        group_id: str,
        edge_node_id: str,
        machine_ids: Sequence[str],
        version: str,
        instance: str,
        commands_enabled: bool = False,
        primary_host_id: str | None = None,
        device_death_s: float = 10.0,
        rebirth_min_interval_s: float = 5.0,
        owner: tuple[str, int] | None = None,
    ) -> None:
        self.group_id = group_id
        #: ``(instance, epoch)`` of the [ha] lease this node publishes under (None: no [ha]).
        self.owner = owner
        self.edge_node_id = edge_node_id
        self.version = version
        self.instance = instance
        self.commands_enabled = commands_enabled
        self.primary_host_id = primary_host_id
        self.device_death_s = device_death_s
        self.rebirth_min_interval_s = rebirth_min_interval_s
        self.state = NodeState.OFFLINE
        self.bd_seq: int | None = None
        self.seq = 0
        self._devices: dict[str, _Device] = {}
        for index, machine_id in enumerate(machine_ids):
            aliases = device_aliases(index)
            self._devices[machine_id] = _Device(
                aliases, {alias: name for name, alias in aliases.items()}
            )
        node_metrics = _NODE_METRICS + (_OWNER_METRICS if owner is not None else ())
        self._node_metrics = node_metrics
        self._node_aliases = {name: i + 1 for i, (name, _type) in enumerate(node_metrics)}
        self._host_online = primary_host_id is None
        self._host_timestamp: int | None = None
        self._last_birth: float | None = None
        self._rebirth_due: float | None = None

    # -- topics ---------------------------------------------------------------------------

    def node_topic(self, kind: str) -> str:
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.edge_node_id}"

    def device_topic(self, kind: str, machine_id: str) -> str:
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.edge_node_id}/{machine_id}"

    @property
    def state_topic(self) -> str | None:
        if self.primary_host_id is None:
            return None
        return f"{NAMESPACE}/STATE/{self.primary_host_id}"

    def subscriptions(self) -> list[tuple[str, int]]:
        """What to subscribe to, before any birth (QoS 1): NCMD, DCMD, the host's STATE."""
        topics = [
            (self.node_topic("NCMD"), 1),
            (f"{NAMESPACE}/{self.group_id}/DCMD/{self.edge_node_id}/+", 1),
        ]
        if self.state_topic is not None:
            topics.append((self.state_topic, 1))
        return topics

    # -- the connection -------------------------------------------------------------------

    def will(self, bd_seq: int, now_ms: int) -> Publish:
        """The NDEATH a connection with ``bd_seq`` leaves as its Will (QoS 1, not retained)."""
        return self._death(bd_seq, now_ms, qos=1)

    def connected(self, bd_seq: int, now: float) -> list[Action]:
        """The broker accepted a connection whose Will carries ``bd_seq`` (subscriptions
        made): births now, or once the primary host is online."""
        self.bd_seq = bd_seq
        self.state = NodeState.WAITING_FOR_HOST
        for device in self._devices.values():
            device.born = False
            device.down_since = None
        if not self._host_online:
            return []
        return self._births(now)

    def disconnecting(self, now: float) -> list[Action]:
        """A graceful disconnect: the NDEATH goes out first (the broker drops the Will)."""
        if self.state is NodeState.OFFLINE or self.bd_seq is None:
            return []
        death = self._death(self.bd_seq, _ms(now), qos=0)
        self.connection_lost()
        return [death]

    def connection_lost(self) -> None:
        self.state = NodeState.OFFLINE
        self._rebirth_due = None
        for device in self._devices.values():
            device.born = False
            device.published = {}

    # -- values ---------------------------------------------------------------------------

    def update(
        self, machine_id: str, values: Mapping[str, MetricValue], *, alive: bool, now: float
    ) -> list[Action]:
        """A device's values now (all of them); ``alive``: its link is up with a reading."""
        device = self._devices[machine_id]
        device.values = dict(values)
        device.alive = alive
        if self.state is not NodeState.ONLINE:
            return []
        if not device.born:
            return [self._dbirth(machine_id, device, now)] if alive else []
        if alive:
            device.down_since = None
        elif device.down_since is None:
            device.down_since = now
        actions: list[Action] = []
        data = self._ddata(machine_id, device, now)
        if data is not None:
            actions.append(data)
        if not alive and self.device_death_s == 0:
            actions.append(self._ddeath(machine_id, device, now))
        return actions

    def tick(self, now: float) -> list[Action]:
        """Time passed: DDEATHs that are due, a throttled rebirth that is due."""
        if self.state is not NodeState.ONLINE:
            return []
        actions: list[Action] = []
        if self._rebirth_due is not None and now >= self._rebirth_due:
            self._rebirth_due = None
            return self._births(now)
        for machine_id, device in self._devices.items():
            if (
                device.born
                and device.down_since is not None
                and now - device.down_since >= self.device_death_s
            ):
                actions.append(self._ddeath(machine_id, device, now))
        return actions

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do next (None: nothing timed)."""
        if self.state is not NodeState.ONLINE:
            return None
        times = [
            device.down_since + self.device_death_s
            for device in self._devices.values()
            if device.born and device.down_since is not None
        ]
        if self._rebirth_due is not None:
            times.append(self._rebirth_due)
        return min(times, default=None)

    def rebirth(self, now: float) -> list[Action]:
        """NBIRTH and every DBIRTH again, at most once per ``rebirth_min_interval_s``."""
        if self.state is not NodeState.ONLINE:
            return []
        allowed = (self._last_birth or 0.0) + self.rebirth_min_interval_s
        if self._last_birth is None or now >= allowed:
            return self._births(now)
        if self._rebirth_due is None:
            self._rebirth_due = allowed
        return [Notice(f"rebirth request throttled: births again in {allowed - now:.1f} s", False)]

    # -- messages in ----------------------------------------------------------------------

    def received(self, topic: str, payload: bytes, now: float) -> list[Action]:
        """A message on one of :meth:`subscriptions`."""
        if topic == self.state_topic:
            return self._host_state(payload, now)
        parts = topic.split("/")
        if (
            len(parts) == 4
            and parts[:3] == [NAMESPACE, self.group_id, "NCMD"]
            and parts[3] == self.edge_node_id
        ):
            return self._ncmd(payload, now)
        if (
            len(parts) == 5
            and parts[:3] == [NAMESPACE, self.group_id, "DCMD"]
            and parts[3] == self.edge_node_id
        ):
            return self._dcmd(parts[4], payload)
        return [Notice(f"message on {topic!r} ignored: not a topic of this node")]

    def _ncmd(self, payload: bytes, now: float) -> list[Action]:
        try:
            metrics = decode_payload(payload).metrics
        except PayloadError as exc:
            return [Notice(f"NCMD ignored: {exc}")]
        actions: list[Action] = []
        for metric in metrics:
            name = metric.name
            if name is None and metric.alias is not None:
                name = next((n for n, a in self._node_aliases.items() if a == metric.alias), None)
            if name != REBIRTH:
                actions.append(Notice(f"NCMD metric {name or metric.alias!r} ignored: unknown"))
            elif metric.datatype != DataType.BOOLEAN or not isinstance(metric.value, bool):
                actions.append(Notice(f"NCMD {REBIRTH} ignored: not a Boolean"))
            elif metric.value:
                actions.extend(self.rebirth(now))
        return actions

    def _dcmd(self, machine_id: str, payload: bytes) -> list[Action]:
        device = self._devices.get(machine_id)
        if device is None:
            return [Notice(f"DCMD for unknown device {machine_id!r} ignored")]
        try:
            metrics = decode_payload(payload).metrics
        except PayloadError as exc:
            return [Notice(f"DCMD for {machine_id} ignored: {exc}")]
        notices: list[Action] = []
        given: dict[str, MetricValue] = {}
        for metric in metrics:
            name = metric.name
            if name is None and metric.alias is not None:
                name = device.names.get(metric.alias)
            wanted = COMMAND_METRICS.get(name or "")
            if name is None or wanted is None:
                shown = name if name is not None else f"alias {metric.alias}"
                notices.append(Notice(f"DCMD for {machine_id}: metric {shown!r} ignored"))
            elif metric.datatype != wanted or metric.value is None:
                notices.append(
                    Notice(
                        f"DCMD for {machine_id}: {name} ignored: it must be a "
                        f"{wanted.name.title()} with a value"
                    )
                )
            else:
                given[name] = metric.value
        if MOVE_TO not in given:
            return notices
        target = given[MOVE_TO]
        request_id = given.get(REQUEST_ID)
        assert isinstance(target, int) and (request_id is None or isinstance(request_id, str))
        if not self.commands_enabled:
            notices.append(
                Notice(
                    f"DCMD {MOVE_TO} {target} for {machine_id} ignored: commands over MQTT "
                    "are disabled ([mqtt] commands_enabled = false)"
                )
            )
            return notices
        if request_id:
            if request_id in device.request_ids:
                notices.append(
                    Notice(
                        f"DCMD {MOVE_TO} for {machine_id} with request id {request_id!r} "
                        "ignored: that request id was already run"
                    )
                )
                return notices
            device.request_ids[request_id] = None
            while len(device.request_ids) > REMEMBERED_REQUEST_IDS:
                device.request_ids.popitem(last=False)
        return [*notices, MoveRequest(machine_id, target, request_id or None)]

    def _host_state(self, payload: bytes, now: float) -> list[Action]:
        """Sparkplug 3.0 STATE: ``{"online": bool, "timestamp": ms}``, retained."""
        try:
            state = json.loads(payload)
            online = state["online"]
            timestamp = state["timestamp"]
            if not isinstance(online, bool) or not isinstance(timestamp, int):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return [Notice(f"STATE of {self.primary_host_id} ignored: not Sparkplug 3.0 JSON")]
        if self._host_timestamp is not None and timestamp < self._host_timestamp:
            return [Notice(f"STATE of {self.primary_host_id} ignored: older than the last one")]
        self._host_timestamp = timestamp
        self._host_online = online
        if online:
            if self.state is NodeState.WAITING_FOR_HOST:
                return self._births(now)
            return []
        if self.state is NodeState.ONLINE:
            return [
                *self.disconnecting(now),
                Reconnect(f"primary host {self.primary_host_id} is offline"),
            ]
        return []

    @property
    def host_online(self) -> bool:
        return self._host_online

    # -- building messages ----------------------------------------------------------------

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) % 256
        return seq

    def _births(self, now: float) -> list[Action]:
        assert self.bd_seq is not None
        self.state = NodeState.ONLINE
        self._last_birth = now
        self._rebirth_due = None
        self.seq = 0
        at = _ms(now)
        node_values: dict[str, MetricValue] = {
            REBIRTH: False,
            "Properties/Version": self.version,
            "Properties/Instance": self.instance,
            "Properties/Devices": len(self._devices),
            "Properties/CommandsEnabled": self.commands_enabled,
        }
        if self.owner is not None:
            node_values["Owner/Instance"], node_values["Owner/Epoch"] = self.owner
        metrics = [Metric(BD_SEQ, None, DataType.INT64, self.bd_seq, at)]
        metrics += [
            Metric(name, self._node_aliases[name], datatype, node_values[name], at)
            for name, datatype in self._node_metrics
        ]
        actions: list[Action] = [
            Publish(
                self.node_topic("NBIRTH"),
                encode_payload(metrics, timestamp=at, seq=self._next_seq()),
                0,
                False,
                "NBIRTH",
            )
        ]
        for machine_id, device in self._devices.items():
            device.born = False
            device.published = {}
            device.down_since = None
            if device.alive:
                actions.append(self._dbirth(machine_id, device, now))
        return actions

    def _dbirth(self, machine_id: str, device: _Device, now: float) -> Publish:
        at = _ms(now)
        metrics = [
            Metric(name, device.aliases[name], datatype, device.values.get(name), at)
            for name, datatype in DEVICE_METRICS
        ]
        device.born = True
        device.down_since = None
        device.published = {name: device.values.get(name) for name, _type in DEVICE_METRICS}
        return Publish(
            self.device_topic("DBIRTH", machine_id),
            encode_payload(metrics, timestamp=at, seq=self._next_seq()),
            0,
            False,
            "DBIRTH",
            machine_id,
        )

    def _ddata(self, machine_id: str, device: _Device, now: float) -> Publish | None:
        at = _ms(now)
        changed = [
            Metric(None, device.aliases[name], datatype, device.values.get(name), at)
            for name, datatype in DEVICE_METRICS
            if device.values.get(name) != device.published.get(name)
            or type(device.values.get(name)) is not type(device.published.get(name))
        ]
        if not changed:
            return None
        for name, _type in DEVICE_METRICS:
            device.published[name] = device.values.get(name)
        return Publish(
            self.device_topic("DDATA", machine_id),
            encode_payload(changed, timestamp=at, seq=self._next_seq()),
            0,
            False,
            "DDATA",
            machine_id,
        )

    def _ddeath(self, machine_id: str, device: _Device, now: float) -> Publish:
        device.born = False
        device.published = {}
        device.down_since = None
        at = _ms(now)
        return Publish(
            self.device_topic("DDEATH", machine_id),
            encode_payload([], timestamp=at, seq=self._next_seq()),
            0,
            False,
            "DDEATH",
            machine_id,
        )

    def _death(self, bd_seq: int, now_ms: int, *, qos: int) -> Publish:
        return Publish(
            self.node_topic("NDEATH"),
            encode_payload([Metric(BD_SEQ, None, DataType.INT64, bd_seq)], timestamp=now_ms),
            qos,
            False,
            "NDEATH",
        )


def _ms(now: float) -> int:
    return round(now * 1000)
