"""What the REST endpoints share: the fleet, the journal, the simulators, the guard, the
command runner, metrics and readiness."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Protocol
from urllib.parse import urlsplit

from carousel_gateway.api.auth import Authenticator
from carousel_gateway.api.commands import CommandRunner
from carousel_gateway.api.guard import Guard, RateLimiter
from carousel_gateway.api.metrics import GatewayMetrics
from carousel_gateway.api.mqtt.status import MqttStatus
from carousel_gateway.api.simulators import SimulatorControl
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.fleet import Fleet
from carousel_gateway.fleet.machine import Machine
from carousel_gateway.picking.service import JobService
from carousel_gateway.store import Journal

__all__ = [
    "JOBS_PATH",
    "MAX_BODY_BYTES",
    "MAX_JOB_BODY_BYTES",
    "RestApi",
    "instance_origins",
]

#: Largest request body accepted (every valid body is a few dozen bytes)...
MAX_BODY_BYTES = 64 * 1024
#: ... but a submitted pick job (up to 500 lines, each with a SKU and a description).
MAX_JOB_BODY_BYTES = 1024 * 1024
JOBS_PATH = "/v1/jobs"


class TakeoverState(Protocol):
    """The latest take of the lease (``ha.coordinator.Takeover`` is one)."""

    @property
    def instance(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def at(self) -> float: ...
    @property
    def previous_instance(self) -> str | None: ...
    @property
    def ready_at(self) -> float | None: ...
    @property
    def seconds(self) -> float | None: ...


class InstanceState(Protocol):
    """An instance of the cell (``ha.coordinator.CellInstance`` is one)."""

    @property
    def instance(self) -> str: ...
    @property
    def http_url(self) -> str | None: ...
    @property
    def ws_url(self) -> str | None: ...


class HaState(Protocol):
    """What health reads of the cell's lease (``ha.coordinator.HaCoordinator`` is one)."""

    @property
    def role(self) -> str: ...
    @property
    def epoch(self) -> int | None: ...
    @property
    def cell(self) -> str: ...
    @property
    def instance(self) -> str: ...
    @property
    def active_instance(self) -> str | None: ...
    @property
    def active_url(self) -> str | None: ...
    @property
    def takeovers(self) -> int: ...
    @property
    def fenced_writes(self) -> int: ...
    def deadline_in(self) -> float | None: ...
    @property
    def takeover(self) -> TakeoverState | None: ...
    @property
    def instances(self) -> Sequence[InstanceState]: ...


def instance_origins(ha: HaState | None) -> frozenset[str]:
    """The web origins (``scheme://host:port``) of the cell's instances' pages."""
    if ha is None:
        return frozenset()
    return _origins(tuple(instance.http_url for instance in ha.instances))


@functools.lru_cache(maxsize=8)
def _origins(urls: tuple[str | None, ...]) -> frozenset[str]:
    """Parsed once per set of URLs (asked on every HTTP response under [ha]; the set
    changes only when an instance registers)."""
    found = set()
    for url in urls:
        if not url:
            continue
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            continue
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            continue
        host = parts.hostname.lower()
        if ":" in host:
            host = f"[{host}]"
        default = 443 if scheme == "https" else 80
        found.add(f"{scheme}://{host}" + ("" if port in (None, default) else f":{port}"))
    return frozenset(found)


class RestApi:
    """What the endpoints share: the fleet, the simulators, auth, the command runner,
    metrics, readiness."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        simulators: Mapping[str, SimulatorControl],
        authenticator: Authenticator,
        max_body_bytes: int = MAX_BODY_BYTES,
        rate_limiter: RateLimiter | None = None,
        journal: Journal | None = None,
        guard: Guard | None = None,
        runner: CommandRunner | None = None,
        metrics: GatewayMetrics | None = None,
        websocket_port: int | None = None,
        mqtt: MqttStatus | None = None,
        jobs: JobService | None = None,
        ha: HaState | None = None,
    ) -> None:
        self.fleet = fleet
        #: Two gateways per cell: the lease as this instance sees it (None: [ha] off).
        self.ha = ha
        #: Pick jobs (None: no workstations configured; the job endpoints refuse).
        self._jobs = jobs
        self.journal = journal
        #: The MQTT link's state (None: [mqtt] is off), for health and the dashboard.
        self.mqtt = mqtt
        self.simulators = simulators
        self.authenticator = authenticator
        self.max_body_bytes = max_body_bytes
        #: Where the dashboard's page finds the WebSocket API (None: the spec's 8765).
        self.websocket_port = websocket_port
        #: Origins, lockouts, per-machine command rates (shared with the WebSocket API).
        self.guard = guard = guard if guard is not None else Guard()
        limits = guard.limits
        self.limiter = rate_limiter or RateLimiter(
            limits.http_writes_per_second, limits.http_write_burst
        )
        #: The gateway's one command path (shared with the WebSocket API when given).
        self.runner = runner if runner is not None else CommandRunner(guard)
        #: The gateway's metrics (built by the composition root; a REST-only app gets its own).
        self._own_metrics = metrics is None
        self.metrics = metrics if metrics is not None else GatewayMetrics(fleet, guard=guard)
        #: True while the servers are up (set by :class:`HttpServer`).
        self.ready = False

    def close(self) -> None:
        """Stop answering as ready and release requests waiting for a move's outcome."""
        self.ready = False
        self.runner.close()
        if self._own_metrics:
            self.metrics.close()

    @property
    def jobs(self) -> JobService:
        """The job service (``WORKSTATION_NOT_FOUND`` when the gateway runs no pick jobs)."""
        if self._jobs is None:
            raise GatewayError(
                ErrorCode.WORKSTATION_NOT_FOUND,
                "pick jobs are off: this gateway has no [[workstations]] configured",
            )
        return self._jobs

    @property
    def jobs_enabled(self) -> bool:
        return self._jobs is not None

    def body_limit(self, path: str) -> int:
        """The largest body a path takes: a submitted job may be larger than the rest."""
        if path == JOBS_PATH:
            return max(self.max_body_bytes, MAX_JOB_BODY_BYTES)
        return self.max_body_bytes

    def simulator(self, machine_id: str) -> tuple[Machine, SimulatorControl]:
        machine = self.fleet.get(machine_id)
        server = self.simulators.get(machine.id)
        if machine.config.kind != "simulator" or server is None:
            raise GatewayError(
                ErrorCode.MACHINE_NOT_FOUND,
                f"{machine.id} is not a simulator embedded in this gateway",
                machine_id=machine.id,
            )
        # A standby of the cell drives nothing, its simulators included: NOT_ACTIVE.
        if self.runner.refusal is not None and (refused := self.runner.refusal()) is not None:
            refused.machine_id = machine.id
            raise refused
        return machine, server
