"""Prometheus metrics of one gateway, on a registry of its own.

A dedicated :class:`CollectorRegistry` (never the process-global one) lets several gateways
live in one process, as they do in the tests. Counters of things that happen (commands,
moves, faults) follow the EventBus; what is a state (connected, position, fault bits,
sessions) is read from the fleet and the WebSocket API at scrape time, so it is never stale.

Wiring (the composition root's job): build ``GatewayMetrics(fleet, guard=guard)`` first,
give ``metrics.observe_broadcast_delay`` to ``WebSocketApi(broadcast_delay_observer=...)``
and call ``metrics.follow(websocket)``. Nothing here assigns into the WebSocket API.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sized
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from carousel_gateway.api.conversions import main_reason
from carousel_gateway.api.guard import LIMIT_CODES, PLACES, Guard
from carousel_gateway.api.mqtt.status import MqttLinkState, MqttStatus
from carousel_gateway.fleet.events import (
    CommandAccepted,
    CommandRefused,
    Event,
    FaultRaised,
    MoveCompleted,
    MoveFailed,
)
from carousel_gateway.fleet.fleet import Fleet
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.plc.status import FLAGS

__all__ = [
    "BROADCAST_DELAY_BUCKETS",
    "PLC_LATENCY_BUCKETS",
    "GatewayMetrics",
    "HaStats",
    "SessionStats",
]


class SessionStats(Protocol):
    """What the metrics read from a WebSocket API at scrape time (``api.ws.WebSocketApi``
    is one; metrics do not import it, so REST, which serves them, does not either)."""

    @property
    def sessions(self) -> Sized: ...
    @property
    def sent_by_type(self) -> Mapping[str, int]: ...
    @property
    def slow_clients_dropped(self) -> int: ...
    @property
    def guard(self) -> Guard: ...


class HaStats(Protocol):
    """What the metrics read from the cell's lease (``ha.coordinator.HaCoordinator``)."""

    @property
    def role(self) -> str: ...
    @property
    def takeovers(self) -> int: ...
    @property
    def fenced_writes(self) -> int: ...


#: The roles ``carousel_ha_role`` has a series for.
HA_ROLES = ("standby", "active", "fenced")

#: PLC replies take 0.2–0.8 s in the field and a few ms from a simulator.
PLC_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.5, 5.0)
#: From a machine's state change to its status_broadcast written to the sockets.
BROADCAST_DELAY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

_FAULT_FLAGS = tuple(spec for spec in FLAGS if spec.is_fault)


class GatewayMetrics:
    """Every metric of one gateway; ``render()`` is what ``GET /metrics`` returns."""

    def __init__(self, fleet: Fleet, *, guard: Guard | None = None) -> None:
        self.fleet = fleet
        self.websocket: SessionStats | None = None
        self.registry = CollectorRegistry()
        registry = self.registry
        self.commands = Counter(
            "carousel_commands",
            "Commands by machine and result code (OK, SKIPPED, or the error code)",
            ["machine", "code"],
            registry=registry,
        )
        self.moves_completed = Counter(
            "carousel_moves_completed",
            "Moves that arrived at their target",
            ["machine"],
            registry=registry,
        )
        self.moves_failed = Counter(
            "carousel_moves_failed",
            "Moves that did not arrive, by main reason (a fault key, timeout, connection_lost...)",
            ["machine", "reason"],
            registry=registry,
        )
        self.faults_raised = Counter(
            "carousel_faults_raised",
            "Stopping conditions raised (fault, e-stop, manual mode, not ready), by status key",
            ["machine", "key"],
            registry=registry,
        )
        self.plc_latency = Histogram(
            "carousel_plc_request_duration_seconds",
            "Time from a request to the PLC (poll or command) to its reply",
            ["machine"],
            buckets=PLC_LATENCY_BUCKETS,
            registry=registry,
        )
        self.broadcast_delay = Histogram(
            "carousel_ws_broadcast_delay_seconds",
            "Delay from a machine's state change to its status_broadcast being written",
            buckets=BROADCAST_DELAY_BUCKETS,
            registry=registry,
        )
        for machine in fleet:
            # Zero-valued series exist from the start, so rate() works on the first move.
            self.moves_completed.labels(machine.id)
            self.plc_latency.labels(machine.id)
        self._live = _LiveCollector(fleet, None, guard)
        self.mqtt: MqttStatus | None = None
        registry.register(self._live)
        # The last latency sample taken from each link's recent-samples window.
        self._last_sample: dict[str, float] = {}
        self._unsubscribe = fleet.bus.subscribe(self._on_event)

    def follow(self, websocket: SessionStats) -> None:
        """Report this WebSocket API's sessions, messages and drops at scrape time (and its
        guard's refusals, unless a guard was given). Its broadcast delays arrive through
        :meth:`observe_broadcast_delay`, given to its constructor."""
        self.websocket = websocket
        self._live.websocket = websocket
        if self._live.guard is None:
            self._live.guard = websocket.guard

    def follow_mqtt(self, status: MqttStatus) -> None:
        """Report the MQTT link (state, messages published, commands) at scrape time."""
        self.mqtt = status
        self._live.mqtt = status

    def follow_ha(self, ha: HaStats) -> None:
        """Report this instance's role in its cell, its takeovers and fenced writes."""
        self._live.ha = ha

    def observe_broadcast_delay(self, seconds: float) -> None:
        """One state change's delay until its status_broadcast was written (the WebSocket
        API's ``broadcast_delay_observer``)."""
        self.broadcast_delay.observe(seconds)

    def close(self) -> None:
        """Stop following the fleet."""
        self._unsubscribe()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric, fresh."""
        self._take_latency_samples()
        return generate_latest(self.registry)

    def _on_event(self, event: Event) -> None:
        match event:
            case CommandAccepted(skipped=skipped):
                self.commands.labels(event.machine_id, "SKIPPED" if skipped else "OK").inc()
            case CommandRefused(code=code):
                self.commands.labels(event.machine_id, code).inc()
            case MoveCompleted():
                self.moves_completed.labels(event.machine_id).inc()
            case MoveFailed(reasons=reasons):
                self.moves_failed.labels(event.machine_id, main_reason(reasons)).inc()
            case FaultRaised(keys=keys):
                for key in keys:
                    self.faults_raised.labels(event.machine_id, key).inc()

    def _take_latency_samples(self) -> None:
        """Move the samples each PLC link recorded since the last scrape into the histogram.

        A link keeps a bounded window of recent samples (``LinkReport.latencies_s``) with no
        running count, so the newest sample already taken is remembered by identity: every
        reply appends a new float object and the reference kept here stops it from being
        reused.
        Samples pushed out of the deque between two scrapes (over 1024) are not counted.
        """
        for machine in self.fleet:
            samples = machine.diagnostics().link.latencies_s
            if not samples:
                continue
            last = self._last_sample.get(machine.id)
            fresh: list[float] = []
            for value in reversed(samples):
                if value is last:
                    break
                fresh.append(value)
            histogram = self.plc_latency.labels(machine.id)
            for value in reversed(fresh):
                histogram.observe(value)
            self._last_sample[machine.id] = samples[-1]


class _LiveCollector(Collector):
    """States read from the fleet and the WebSocket API when Prometheus scrapes."""

    def __init__(self, fleet: Fleet, websocket: SessionStats | None, guard: Guard | None) -> None:
        self._fleet = fleet
        self.websocket = websocket
        self.guard = guard
        self.mqtt: MqttStatus | None = None
        self.ha: HaStats | None = None

    def collect(self) -> Iterator[Metric]:
        if self.ha is not None:
            yield from self._ha(self.ha)
        yield from self._machines()
        if self.websocket is not None:
            yield from self._sessions(self.websocket)
        if self.guard is not None:
            yield from self._limits(self.guard)
        if self.mqtt is not None:
            yield from self._mqtt(self.mqtt)

    @staticmethod
    def _ha(ha: HaStats) -> Iterator[Metric]:
        role = GaugeMetricFamily(
            "carousel_ha_role",
            "This instance's role in its cell (1 for the current one: standby, active, fenced)",
            labels=["role"],
        )
        current = str(ha.role)
        for value in HA_ROLES:
            role.add_metric([value], float(current == value))
        takeovers = CounterMetricFamily(
            "carousel_ha_takeovers", "Times this instance took the cell's lease and drove it"
        )
        takeovers.add_metric([], ha.takeovers)
        fenced = CounterMetricFamily(
            "carousel_ha_fenced_writes",
            "Writes the database refused because this instance's lease epoch was stale",
        )
        fenced.add_metric([], ha.fenced_writes)
        yield from (role, takeovers, fenced)

    @staticmethod
    def _mqtt(status: MqttStatus) -> Iterator[Metric]:
        connected = GaugeMetricFamily(
            "carousel_mqtt_connected", "1 while the MQTT broker connection is up"
        )
        connected.add_metric([], float(status.connected))
        state = GaugeMetricFamily(
            "carousel_mqtt_link_state",
            "The MQTT link's state (1 for the current one)",
            labels=["state"],
        )
        for value in MqttLinkState:
            state.add_metric([value.value], float(status.state is value))
        connects = CounterMetricFamily(
            "carousel_mqtt_connects", "Connections made to the broker (each a new bdSeq)"
        )
        connects.add_metric([], status.connects)
        published = CounterMetricFamily(
            "carousel_mqtt_messages_published",
            "MQTT messages published, by kind (NBIRTH, DBIRTH, DDATA, DDEATH, NDEATH; "
            "JSON: status, state, event, result)",
            labels=["kind"],
        )
        for kind, count in sorted(status.published.items()):
            published.add_metric([kind], count)
        commands = CounterMetricFamily(
            "carousel_mqtt_commands",
            "Moves asked for over MQTT, by result (accepted, refused, arrived, failed, unknown)",
            labels=["result"],
        )
        for result, count in sorted(status.commands.items()):
            commands.add_metric([result], count)
        ignored = CounterMetricFamily(
            "carousel_mqtt_ignored",
            "MQTT messages in that were ignored (unknown metric, wrong type, duplicate, "
            "commands disabled)",
        )
        ignored.add_metric([], status.ignored)
        yield from (connected, state, connects, published, commands, ignored)

    @staticmethod
    def _limits(guard: Guard) -> Iterator[Metric]:
        refusals = CounterMetricFamily(
            "carousel_refusals",
            "Handshakes, messages and requests refused by a limit, the origin check or auth, "
            "by where (ws_handshake, ws_message, http) and error code",
            labels=["where", "code"],
        )
        counts = dict.fromkeys(((w, c.value) for w in PLACES for c in LIMIT_CODES), 0)
        counts.update(guard.refusals)
        for (where, code), count in sorted(counts.items()):
            refusals.add_metric([where, code], count)
        lockouts = CounterMetricFamily(
            "carousel_auth_lockouts", "Addresses locked out after repeated wrong tokens"
        )
        lockouts.add_metric([], guard.lockout.lockouts)
        locked = GaugeMetricFamily("carousel_auth_locked_out_addresses", "Addresses locked out now")
        locked.add_metric([], guard.lockout.locked_out)
        slots = GaugeMetricFamily(
            "carousel_ws_session_slots",
            "WebSocket sessions open or being opened (what the session limits count)",
        )
        slots.add_metric([], guard.sessions.count)
        yield from (refusals, lockouts, locked, slots)

    def _machines(self) -> Iterator[Metric]:
        labels = ["machine"]
        connected = GaugeMetricFamily(
            "carousel_machine_connected", "1 while the link to the PLC is up", labels=labels
        )
        state = GaugeMetricFamily(
            "carousel_machine_connection_state",
            "The PLC link's state (1 for the current one)",
            labels=["machine", "state"],
        )
        position = GaugeMetricFamily(
            "carousel_machine_position",
            "Bucket at the picking window, in the API's numbering (absent until first read)",
            labels=labels,
        )
        status_byte = GaugeMetricFamily(
            "carousel_machine_status_byte", "The PLC's raw status byte", labels=labels
        )
        ready = GaugeMetricFamily("carousel_machine_ready", "READY bit", labels=labels)
        remote = GaugeMetricFamily(
            "carousel_machine_remote", "1 in remote mode, 0 in manual mode", labels=labels
        )
        moving = GaugeMetricFamily("carousel_machine_moving", "RUN bit", labels=labels)
        fault = GaugeMetricFamily(
            "carousel_machine_fault_active",
            "1 while a fault is active (ALARMA, PARADA_EMERGENCIA pressed, VFD, "
            "ERROR_POSICIONAMIENTO)",
            labels=["machine", "key"],
        )
        busy = GaugeMetricFamily(
            "carousel_machine_busy", "1 while a command or a move is in progress", labels=labels
        )
        reconnects = CounterMetricFamily(
            "carousel_plc_reconnects", "Times the PLC link was re-established", labels=labels
        )
        bad_replies = CounterMetricFamily(
            "carousel_plc_bad_replies",
            "PLC replies refused (position outside the machine's range)",
            labels=labels,
        )
        out_of_step = CounterMetricFamily(
            "carousel_plc_out_of_step",
            "PLC links dropped for bytes no request explains (stray, doubled or junk bytes)",
            labels=labels,
        )
        breaker_opened = CounterMetricFamily(
            "carousel_plc_breaker_opened",
            "Times repeated connection failures opened the PLC link's circuit breaker "
            "(reconnects then wait out breaker_cooldown_s)",
            labels=labels,
        )
        unknown = GaugeMetricFamily(
            "carousel_move_outcome_unknown",
            "1 while a MOVE was sent with no trustworthy reply and no reading has settled it",
            labels=labels,
        )
        for machine in self._fleet:
            report = machine.diagnostics()
            snapshot = report.snapshot
            key = [machine.id]
            connected.add_metric(key, float(snapshot.connection is ConnectionState.CONNECTED))
            for value in ConnectionState:
                state.add_metric([machine.id, value.value], float(snapshot.connection is value))
            if snapshot.position is not None:
                position.add_metric(key, snapshot.position)
            status = snapshot.status
            if status is not None:
                status_byte.add_metric(key, status.raw)
                ready.add_metric(key, float(status.ready))
                remote.add_metric(key, float(status.remote))
                moving.add_metric(key, float(status.running))
                active = set(status.faults())
                for spec in _FAULT_FLAGS:
                    fault.add_metric([machine.id, spec.key.value], float(spec.key in active))
            busy.add_metric(key, float(report.busy))
            reconnects.add_metric(key, report.link.reconnects)
            bad_replies.add_metric(key, report.link.bad_replies)
            out_of_step.add_metric(key, report.link.out_of_step_faults)
            breaker_opened.add_metric(key, report.link.breaker_opened)
            unknown.add_metric(key, float(report.move_outcome_unknown))
        yield from (connected, state, position, status_byte, ready, remote, moving, fault, busy)
        yield from (reconnects, bad_replies, out_of_step, breaker_opened, unknown)

    @staticmethod
    def _sessions(websocket: SessionStats) -> Iterator[Metric]:
        sessions = GaugeMetricFamily("carousel_ws_sessions", "Open WebSocket sessions")
        sessions.add_metric([], len(websocket.sessions))
        sent = CounterMetricFamily(
            "carousel_ws_messages_sent", "WebSocket messages written, by type", labels=["type"]
        )
        for kind, count in sorted(websocket.sent_by_type.items()):
            sent.add_metric([kind], count)
        dropped = CounterMetricFamily(
            "carousel_ws_slow_clients_dropped",
            "WebSocket sessions cut off because they stopped reading",
        )
        dropped.add_metric([], websocket.slow_clients_dropped)
        yield from (sessions, sent, dropped)
