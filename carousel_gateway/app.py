"""Composition root: config → embedded simulators → fleet → servers; graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from carousel_gateway.api.auth import install_log_redaction
from carousel_gateway.api.commands import CommandRunner
from carousel_gateway.api.guard import Guard, HostPolicy
from carousel_gateway.api.http import HttpServer, RestApi, create_app
from carousel_gateway.api.metrics import GatewayMetrics
from carousel_gateway.api.mqtt.link import MqttLink
from carousel_gateway.api.mqtt.status import MqttLinkState, MqttStatus
from carousel_gateway.api.simulators import SimulatorFault, SimulatorLinkAction
from carousel_gateway.api.ws import WebSocketApi
from carousel_gateway.config import GatewayConfig, MachineConfig, SecurityConfig
from carousel_gateway.fleet.events import (
    CommandAccepted,
    CommandRefused,
    ConnectionChanged,
    Event,
    FaultCleared,
    FaultRaised,
    MoveCompleted,
    MoveFailed,
    Origin,
    OriginChannel,
)
from carousel_gateway.fleet.fleet import Fleet
from carousel_gateway.ha.coordinator import READY_LIMIT_S, HaCoordinator, Transitions
from carousel_gateway.picking.engine import JobEngine
from carousel_gateway.picking.service import JobService
from carousel_gateway.picking.store import JobStore, PostgresJobStore, SqliteJobStore
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.sim.carousel import CarouselModel, Fault
from carousel_gateway.sim.modbus_server import ModbusSimulatorServer, ModbusSimulatorSettings
from carousel_gateway.sim.server import LinkAction, SimulatorServer, SimulatorSettings
from carousel_gateway.store import Journal

if TYPE_CHECKING:  # asyncua is loaded only when the OPC UA server is enabled
    from carousel_gateway.api.opcua.process import OpcUaProcess
    from carousel_gateway.api.opcua.server import OpcUaServer

__all__ = [
    "BindError",
    "EmbeddedSimulatorControl",
    "Gateway",
    "build_modbus_simulator",
    "build_simulator",
    "log_event",
    "tls_context",
]

log = logging.getLogger("carousel_gateway")


def build_simulator(config: MachineConfig) -> SimulatorServer:
    """A simulator serving one machine's settings (positions, layout, timing)."""
    sim = config.simulator
    assert sim is not None
    start_index = 0 if sim.start_position is None else sim.start_position - config.position_base
    model = CarouselModel(config.positions, sim.seconds_per_position, start_index=start_index)
    settings = SimulatorSettings(
        reply_delay_s=sim.reply_delay_s,
        layout=config.reply.to_layout(),
        single_session=sim.single_session,
        release_time_s=sim.release_time_s,
        idle_drop_s=sim.idle_drop_s,
    )
    return SimulatorServer(model, host=config.host, port=config.port, settings=settings)


def build_modbus_simulator(config: MachineConfig, model: CarouselModel) -> ModbusSimulatorServer:
    """The Modbus TCP side of an embedded simulator: the same model, on ``modbus_port``."""
    sim = config.simulator
    assert sim is not None
    settings = ModbusSimulatorSettings(
        reply_delay_s=sim.modbus_reply_delay_s, unit=config.modbus_unit
    )
    return ModbusSimulatorServer(
        model, host=config.host, port=config.modbus_port, settings=settings
    )


def tls_context(security: SecurityConfig) -> ssl.SSLContext | None:
    """The server TLS context both APIs use (None without ``tls_cert``): TLS 1.2 or newer,
    Python's default (secure) ciphers. A bad certificate or key stops the start (OSError)."""
    if security.tls_cert is None or security.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(security.tls_cert, security.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise OSError(
            f"TLS certificate {security.tls_cert} / key {security.tls_key}: {exc}"
        ) from exc
    return context


class BindError(OSError):
    """A server of the gateway could not listen. "[Errno 98] Address already in use" names
    nothing; this names the port, the server and the setting that moves it, so whoever
    started the gateway can fix it without reading the code."""

    def __init__(
        self,
        cause: OSError,
        *,
        server: str,
        host: str,
        port: int,
        port_setting: str,
        host_setting: str,
    ) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.server = server  #: "WebSocket API", ...
        self.host = host
        self.port = port
        #: Where the config sets what to change: the port (``[websocket] port``) when it is
        #: taken or privileged, the host when that is what cannot be bound.
        self.about_host = isinstance(cause, socket.gaierror) or cause.errno not in (
            errno.EADDRINUSE,
            errno.EACCES,
        )
        self.setting = host_setting if self.about_host else port_setting
        self.reason = self._reason(cause)

    def _reason(self, cause: OSError) -> str:
        if isinstance(cause, socket.gaierror):
            return f"{self.server}: host {self.host!r} is not a known name or address"
        if cause.errno == errno.EADDRINUSE:
            return f"port {self.port} ({self.server}) is in use"
        if cause.errno == errno.EACCES:
            return f"port {self.port} ({self.server}): permission denied (a port below 1024?)"
        if cause.errno == errno.EADDRNOTAVAIL:
            return f"{self.server}: {self.host} is not an address of this machine"
        return f"{self.server} on {self.host}:{self.port}: {cause.strerror or cause}"

    def __str__(self) -> str:
        return f"{self.reason}; set {self.setting} in the config"


async def _listen(
    start: Callable[[], Awaitable[object]],
    *,
    server: str,
    host: str,
    port: int,
    port_setting: str,
    host_setting: str,
) -> None:
    """Run a server's ``start``; a failure to listen becomes a :class:`BindError`."""
    try:
        await start()
    except BindError:
        raise
    except OSError as exc:
        if exc.errno is None:
            raise  # not a bind failure (a TLS file, say): its own message says it all
        raise BindError(
            exc,
            server=server,
            host=host,
            port=port,
            port_setting=port_setting,
            host_setting=host_setting,
        ) from exc


class EmbeddedSimulatorControl:
    """An embedded simulator as the REST API may drive it (``api.simulators``): the API's
    vocabulary translated to the simulator's, so the API never imports ``sim/``."""

    def __init__(self, server: SimulatorServer) -> None:
        self._server = server

    def set_fault(self, fault: SimulatorFault, active: bool) -> None:
        self._server.model.set_fault(Fault(fault.value), active)

    def active_faults(self) -> list[SimulatorFault]:
        return sorted(SimulatorFault(fault.value) for fault in self._server.model.faults)

    def status_byte(self) -> int:
        return self._server.model.status_byte()

    def link(self, action: SimulatorLinkAction) -> None:
        self._server.link(LinkAction(action.value))

    @property
    def stalled(self) -> bool:
        return self._server.stalled

    @property
    def session_open(self) -> bool:
        return self._server.session_open


class Gateway:
    """The whole service in one event loop."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.simulators: dict[str, SimulatorServer] = {}
        self.modbus_simulators: dict[str, ModbusSimulatorServer] = {}
        self.fleet: Fleet | None = None
        #: Pick jobs (``[[workstations]]``); None when no workstation is configured.
        self.jobs: JobService | None = None
        self._engine: JobEngine | None = None
        self.websocket: WebSocketApi | None = None
        self.http: HttpServer | None = None
        self.metrics: GatewayMetrics | None = None
        self.journal: Journal | None = None
        self.mqtt: MqttLink | None = None
        #: The MQTT link's state for health and metrics; under [ha] it outlives each link
        #: (one per activation) and reads "standby" between them. None: [mqtt] is off.
        self.mqtt_status: MqttStatus | None = None
        self.runner: CommandRunner | None = None
        self.opcua: OpcUaServer | OpcUaProcess | None = None
        #: Two gateways per cell (``[ha] enabled``): the lease; None for a lone gateway.
        self.ha: HaCoordinator | None = None
        #: After a takeover: plans the jobs' moves once the carousels are read.
        self._jobs_plan: asyncio.Task[None] | None = None
        #: Wall-clock time the fleet was last started by a takeover (its first readings).
        self._driving_since: float | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        # Before any server logs a request target (``?token=...``) or header; process-wide.
        install_log_redaction()
        context = tls_context(self.config.security)  # first: a bad key starts nothing
        for machine in self.config.machines:
            if machine.embedded_simulator:
                server = build_simulator(machine)
                where = f"the machine {machine.id!r}"
                await _listen(
                    server.start,
                    server=f"embedded simulator of {machine.id}",
                    host=machine.host,
                    port=machine.port,
                    port_setting=f"port of {where} (0 picks a free one)",
                    host_setting=f"host of {where}",
                )
                self.simulators[machine.id] = server
                log.info("embedded simulator for %s on %s:%d", machine.id, server.host, server.port)
                if machine.telemetry == "modbus":
                    modbus = build_modbus_simulator(machine, server.model)
                    await _listen(
                        modbus.start,
                        server=f"Modbus simulator of {machine.id}",
                        host=machine.host,
                        port=machine.modbus_port,
                        port_setting=f"modbus_port of {where} (0 picks a free one)",
                        host_setting=f"host of {where}",
                    )
                    self.modbus_simulators[machine.id] = modbus
                    log.info("  ... and Modbus TCP on %s:%d", modbus.host, modbus.port)
        ports = {machine_id: server.port for machine_id, server in self.simulators.items()}
        modbus_ports = {machine_id: sim.port for machine_id, sim in self.modbus_simulators.items()}
        if self.config.journal.enabled:
            ha_config = self.config.ha
            self.journal = Journal(
                self.config.journal.url or self.config.journal.path,
                retention_days=self.config.journal.retention_days,
                fence_cell=ha_config.cell if ha_config.enabled else None,
                fence_idle_limit_s=ha_config.ttl_s - ha_config.margin_s,
            )
            await self.journal.start()
            log.info("journal at %s", self.journal.where)
            if ha_config.enabled:
                assert self.config.journal.url is not None  # the config says so
                self.ha = HaCoordinator(ha_config, self.config.journal.url, self.journal)
        self.fleet = Fleet(
            self.config.machines,
            ports=ports,
            modbus_ports=modbus_ports,
            command_journal=self.journal.record_command if self.journal else None,
            move_gate=self.ha,
        )
        if self.journal is not None:
            self.fleet.bus.subscribe(self.journal.on_event)
        self.fleet.bus.subscribe(log_event)
        guard = Guard(
            self.config.limits, self.config.security, hosts=HostPolicy.for_config(self.config)
        )
        # One command path for every API: one rate check, one drain, one way to a result.
        self.runner = runner = CommandRunner(guard)
        if self.ha is not None:
            runner.refusal = self.ha.refusal  # every API: NOT_ACTIVE unless active
        if self.config.opcua.enabled:
            # Before polling begins: asyncua's init stalls the loop for a while.
            await self._start_opcua(runner)
        if self.config.workstations:
            await self._start_jobs(runner)
        self.metrics = metrics = GatewayMetrics(self.fleet, guard=guard)  # the one set
        if self.config.mqtt.enabled:
            mqtt_config = self.config.mqtt
            self.mqtt_status = MqttStatus(
                broker=f"{mqtt_config.host}:{mqtt_config.port}", format=mqtt_config.format
            )
            self.mqtt_status.since = time.time()
            metrics.follow_mqtt(self.mqtt_status)
        if self.config.mqtt.enabled and self.ha is None:
            # Off by default. Its start returns at once: a broker that is down holds up
            # nothing (the link keeps retrying in its own task).
            journal = self.journal
            self.mqtt = MqttLink(
                self.config.mqtt,
                self.fleet,
                runner,
                bd_seq_source=journal.next_bd_seq if journal is not None else None,
                counters=journal.counters if journal is not None else None,
                status=self.mqtt_status,
            )
            await self.mqtt.start()
        elif self.mqtt_status is not None:
            self.mqtt_status.state = MqttLinkState.STANDBY  # until this instance is active
        self.websocket = WebSocketApi(
            self.config,
            self.fleet,
            journal=self.journal,
            guard=guard,
            ssl_context=context,
            runner=runner,
            broadcast_delay_observer=metrics.observe_broadcast_delay,
            jobs=self.jobs,
        )
        metrics.follow(self.websocket)
        ws = self.config.websocket
        await _listen(
            self.websocket.start,
            server="WebSocket API",
            host=ws.host,
            port=ws.port,
            port_setting="[websocket] port",
            host_setting="[websocket] host",
        )
        app = create_app(
            RestApi(
                self.fleet,
                simulators={
                    machine_id: EmbeddedSimulatorControl(server)
                    for machine_id, server in self.simulators.items()
                },
                authenticator=self.websocket.authenticator,
                journal=self.journal,
                guard=guard,
                runner=runner,
                metrics=metrics,
                websocket_port=self.websocket.port,
                mqtt=self.mqtt_status,
                jobs=self.jobs,
                ha=self.ha,
            )
        )
        self.http = HttpServer(
            app, self.config.http.host, self.config.http.port, ssl_context=context
        )
        await _listen(
            self.http.start,
            server="HTTP server: REST API and dashboard",
            host=self.config.http.host,
            port=self.config.http.port,
            port_setting="[http] port",
            host_setting="[http] host",
        )
        # A page served by this gateway may use both APIs: its own ports count as same-origin.
        guard.origins.ports.update((self.websocket.port, self.http.port))
        # The PLC links open last: the synchronous set-up above (the REST application, the
        # job store, the servers) would otherwise hold the loop while the first requests
        # are on the wire, and a loaded host could stretch that past their timeout.
        if self.ha is None:
            self.fleet.start()
            log.info("fleet started: %s", ", ".join(self.fleet.ids))
        else:
            # A standby never opens port 3200 (a probe would take the active's session).
            log.info("standby of %s: the fleet starts when this instance holds the lease",
                     self.config.ha.cell)
        if self.ha is not None:
            ha = self.config.ha
            scheme = "https" if context is not None else "http"
            self.ha.advertise(
                ha.advertise_url or f"{scheme}://{self.config.http.host}:{self.http.port}",
                ha.advertise_ws_url
                or f"{'wss' if context else 'ws'}://{ws.host}:{self.websocket.port}",
            )
            await self.ha.start(
                Transitions(
                    self._activate,
                    self._fence_now,
                    self._stand_down,
                    self._mirror,
                    ready=self._first_readings,
                )
            )
            metrics.follow_ha(self.ha)

    async def _activate(self, epoch: int) -> None:
        """The lease is ours (``epoch``): settle what the previous active left, then drive."""
        assert self.journal is not None and self.fleet is not None and self.runner is not None
        orphans = await self.journal.mark_lost()
        for row in orphans:
            try:
                channel = OriginChannel(row["origin_channel"])
            except ValueError:
                channel = OriginChannel.INTERNAL
            lost = MoveFailed(
                row["machine_id"],
                time.time(),
                command_id=int(row["command_id"]),
                target=int(row["target"]),
                reasons=("failover_lost",),
                position=None,
                duration_s=0.0,
                origin=Origin(row["origin_client"], channel),
            )
            self.fleet.bus.publish(lost)  # the WebSocket, the journal and MQTT see it
        await self._jobs_take_over(epoch, orphans)
        self.fleet.expect_refusals(self.config.ha.takeover_connect_s)
        self._driving_since = time.time()
        self.fleet.start()
        log.warning("ha: active (epoch %d): fleet started: %s", epoch, ", ".join(self.fleet.ids))
        if self.config.mqtt.enabled and self.mqtt is None:
            # Both instances of a cell publish as ONE edge node: [mqtt] group_id and
            # edge_node_id must be the same in both configs (only ours is known here).
            mqtt = self.config.mqtt
            log.warning(
                "ha: MQTT edge node %s/%s as %s (epoch %d)",
                mqtt.group_id,
                mqtt.edge_node_id,
                self.config.ha.instance,
                epoch,
            )
            journal = self.journal
            self.mqtt = MqttLink(
                mqtt,
                self.fleet,
                self.runner,
                bd_seq_source=journal.next_bd_seq,
                counters=journal.counters,
                status=self.mqtt_status,
                owner=(self.config.ha.instance, epoch),
            )
            await self.mqtt.start()

    async def _first_readings(self) -> None:
        """After a takeover: until every machine has been read since its link opened (a
        mirrored reading does not count), or ``READY_LIMIT_S`` at most."""
        assert self.fleet is not None and self._driving_since is not None
        since = self._driving_since
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_LIMIT_S
        while True:
            unread = [
                m.id
                for m in self.fleet
                if m.snapshot.connection is not ConnectionState.CONNECTED
                or (m.snapshot.updated_at or 0.0) < since
            ]
            if not unread:
                return
            if loop.time() >= deadline:
                log.warning(
                    "ha: ready without a first reading of %s (no answer in %.0f s)",
                    ", ".join(unread),
                    READY_LIMIT_S,
                )
                return
            await asyncio.sleep(0.05)

    def _mirror(self, rows: list[dict[str, Any]]) -> None:
        """A standby shows each machine as the active last read it, and the jobs as the
        active last committed them (read-only, from the database, on each lease tick)."""
        if self.fleet is None:
            return
        for row in rows:
            if row["machine_id"] in self.fleet:
                self.fleet.get(row["machine_id"]).mirror(
                    row["position"], row["raw_status"], row["updated_at"]
                )
        if self._engine is not None:
            self._engine.follow_store()

    def _fence_now(self, why: str) -> None:
        """Fenced: every PLC socket aborted in this very callback (commands are refused by
        the runner already: the role is no longer active). MQTT first: the links' own
        disconnection must not go out as the cell's data either."""
        if self.mqtt is not None:
            self.mqtt.fence()
        if self.fleet is not None:
            self.fleet.abort_links(f"fenced: {why}")

    async def _stand_down(self) -> None:
        """After the fence: the jobs plan no more, the machines' tasks end, MQTT leaves
        (its NDEATH)."""
        await self._stop_job_planning()
        if self._engine is not None:
            await self._engine.stand_down()
            if isinstance(self._engine.store, PostgresJobStore):
                await self._engine.store.use_epoch(None)
        if self.fleet is not None:
            await self.fleet.stop()
        if self.mqtt is not None:
            link, self.mqtt = self.mqtt, None
            await link.stop()
            link.status.state, link.status.since = MqttLinkState.STANDBY, time.time()

    async def _start_jobs(self, runner: CommandRunner) -> None:
        """The job engine, after the fleet: its moves go through ``runner`` like every
        command. Its tables live beside the journal: in its SQLite file, or on PostgreSQL
        (``[journal] url``: where the cell's other gateway finds them after a takeover,
        fenced by the lease under ``[ha]``); with the journal off, in memory (jobs are then
        lost at a restart, the log says so). A standby opens the store and plans nothing
        until it takes the lease (:meth:`_activate`)."""
        assert self.fleet is not None
        journal = self.config.journal
        store: JobStore
        if journal.enabled and journal.url is not None:
            ha = self.config.ha
            store = PostgresJobStore(
                journal.url,
                fence_cell=ha.cell if self.ha is not None else None,
                fence_idle_limit_s=ha.ttl_s - ha.margin_s,
            )
        else:
            path = journal.path if journal.enabled else ":memory:"
            if path == ":memory:":
                log.warning(
                    "pick jobs are kept in memory only (the journal is %s): a restart loses them",
                    "disabled" if not journal.enabled else "in memory",
                )
            store = SqliteJobStore(path)
        machines = {machine.id: machine for machine in self.fleet}
        self._engine = JobEngine(self.config, machines, runner, store)
        if self.ha is not None:
            self._engine.refusal = self.ha.refusal  # a standby changes no job
            if isinstance(store, PostgresJobStore):  # its refused writes count in health
                job_store = store
                self.ha.fenced_sources = (lambda: job_store.fenced_writes,)
            await self._engine.open_standby()
        else:
            await self._engine.start()
        self.jobs = self._engine
        log.info("pick jobs: %s", ", ".join(w.id for w in self.config.workstations))

    async def _jobs_take_over(self, epoch: int, lost: list[dict[str, Any]]) -> None:
        """The jobs after a takeover: the store writes as ``epoch``; the engine loads the
        jobs (a job whose MOVE was lost pauses); moves are planned in a task once every
        carousel of the workstations has been read (the PLC sessions open meanwhile)."""
        engine = self._engine
        if engine is None:
            return
        if isinstance(engine.store, PostgresJobStore):
            await engine.store.use_epoch(epoch)
        lost_moves = {
            row["origin_client"].removeprefix("job:"): row["machine_id"]
            for row in lost
            if str(row["origin_client"]).startswith("job:")
        }
        await engine.take_over(lost_moves)
        task = asyncio.get_running_loop().create_task(self._plan_jobs(), name="jobs-plan")
        self._jobs_plan = task

    async def _plan_jobs(self) -> None:
        """Plan the jobs' moves once each carousel has its first reading of this epoch."""
        assert self.fleet is not None and self._engine is not None
        wanted = {m for w in self.config.workstations for m in w.machines if m in self.fleet}
        machines = [self.fleet.get(machine_id) for machine_id in sorted(wanted)]
        ready = asyncio.Event()

        def check(_event: object = None) -> None:
            if all(
                m.snapshot.connection is ConnectionState.CONNECTED
                and m.snapshot.raw_status is not None
                for m in machines
            ):
                ready.set()

        unsubscribe = self.fleet.bus.subscribe(check)
        try:
            check()
            await ready.wait()
        finally:
            unsubscribe()
        await self._engine.plan()

    async def _stop_job_planning(self) -> None:
        task, self._jobs_plan = self._jobs_plan, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _start_opcua(self, runner: CommandRunner) -> None:
        """The OPC UA server (asyncua is imported only when it is enabled)."""
        from carousel_gateway.api.opcua.backend import FleetBackend
        from carousel_gateway.api.opcua.server import OpcUaServer

        assert self.fleet is not None
        opcua = self.config.opcua
        backend = FleetBackend(self.fleet, runner, self.journal)
        if opcua.own_process:
            from carousel_gateway.api.opcua.process import OpcUaProcess

            self.opcua = OpcUaProcess(opcua, backend, log_level=self.config.log_level)
        else:
            self.opcua = OpcUaServer(opcua, backend)
        await _listen(
            self.opcua.start,
            server="OPC UA server",
            host=opcua.host,
            port=opcua.port,
            port_setting="[opcua] port",
            host_setting="[opcua] host",
        )

    @property
    def http_port(self) -> int:
        """The REST API's bound port (the real one when configured as 0)."""
        assert self.http is not None, "the gateway is not started"
        return self.http.port

    async def stop(self) -> None:
        if self.ha is not None:
            await self.ha.halt()  # takes and renews no more; the deadline stays armed
        # The MQTT node leaves first: its NDEATH is its last word, before the machines'
        # links close (a consumer would otherwise see them drop before the node goes).
        if self.mqtt is not None:
            await self.mqtt.stop()
        # The job engine stops next: it plans no more moves (one already handed to a
        # machine drains with the servers' commands, through the same runner).
        await self._stop_job_planning()
        if self._engine is not None:
            await self._engine.stop()
        # The API servers (HTTP, WebSocket, OPC UA) then close together, and before the
        # fleet, so no request reaches a stopped machine. Each waits for the commands it
        # handed to machines, so they are journalled before the journal stops.
        servers: list[HttpServer | WebSocketApi | OpcUaServer | OpcUaProcess] = [
            api for api in (self.http, self.websocket, self.opcua) if api is not None
        ]
        await asyncio.gather(*(api.stop() for api in servers))
        if self.metrics is not None:
            self.metrics.close()
        if self.fleet is not None:
            await self.fleet.stop()
        if self.ha is not None:
            await self.ha.stop()  # the links are closed: the standby may take over now
        for server in self.simulators.values():
            await server.stop()
        for modbus in self.modbus_simulators.values():
            await modbus.stop()
        if self.journal is not None:
            await self.journal.stop()  # writes what is still queued
        log.info("gateway stopped")

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, on_ready: Callable[[Gateway], None] | None = None) -> None:
        """Start, serve until SIGINT/SIGTERM, then shut down cleanly.

        ``on_ready`` is called once every server listens (``serve`` prints the addresses
        then, so an address it shows is one that answers). A start that fails half-way
        stops what did start before the error goes up, so nothing is left half running.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        if on_ready is not None:
            on_ready(self)
        try:
            await self._stop.wait()
        finally:
            log.info("shutting down")
            await self.stop()


def log_event(event: Event) -> None:
    """One log line per machine event (status polls that change nothing are not logged)."""
    match event:
        case ConnectionChanged(state=state, reason=reason):
            expected = state.value == "connected" or reason == "closed by the gateway"
            log.log(
                logging.INFO if expected else logging.WARNING,
                "%s link %s%s",
                event.machine_id,
                state.value,
                f" ({reason})" if reason else "",
            )
        case FaultRaised(keys=keys):
            log.warning("%s fault raised: %s", event.machine_id, ", ".join(keys))
        case FaultCleared(keys=keys):
            log.info("%s fault cleared: %s", event.machine_id, ", ".join(keys))
        case CommandAccepted():
            log.info(
                "%s command %d arg %s from %s/%s: %s",
                event.machine_id,
                event.command,
                event.argument,
                event.origin.channel.value,
                event.origin.client,
                "skipped (already there)" if event.skipped else "sent",
            )
        case CommandRefused():
            log.info(
                "%s command %s arg %s from %s/%s refused: %s %s",
                event.machine_id,
                event.command,
                event.argument,
                event.origin.channel.value,
                event.origin.client,
                event.code,
                event.message,
            )
        case MoveCompleted():
            log.info(
                "%s arrived at %d after %.1f s", event.machine_id, event.position, event.duration_s
            )
        case MoveFailed():
            log.warning(
                "%s move to %d failed (%s) at %s after %.1f s",
                event.machine_id,
                event.target,
                ", ".join(event.reasons),
                event.position,
                event.duration_s,
            )
        case _:
            log.debug("%r", event)
