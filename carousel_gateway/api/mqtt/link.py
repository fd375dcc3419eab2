"""The MQTT north interface on a broker: the sans-I/O node put on aiomqtt (MQTT 5).

One task keeps the link: it takes the next ``bdSeq`` (persisted in the journal), opens a
new client whose Will is the NDEATH of that ``bdSeq`` (clean start), subscribes, lets the
session publish its births, then serves three loops until the connection drops: messages
in, messages out (one writer, so ``seq`` order is publish order) and the session's timers.
A lost broker is retried with backoff; nothing here ever waits on a machine or blocks the
fleet: the bus handler only computes and enqueues. Moves asked for over MQTT go through
the one command path (``CommandRunner.run``), never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import aiomqtt

from carousel_gateway import __version__
from carousel_gateway.api.commands import CommandRunner
from carousel_gateway.api.conversions import main_reason
from carousel_gateway.api.mqtt.device import CommandResult, DeviceModel
from carousel_gateway.api.mqtt.json_node import JsonNode
from carousel_gateway.api.mqtt.session import (
    Action,
    EdgeNodeSession,
    MoveRequest,
    NodeState,
    Notice,
    Publish,
    Reconnect,
)
from carousel_gateway.api.mqtt.status import MqttLinkState, MqttStatus
from carousel_gateway.config import MqttConfig
from carousel_gateway.errors import GatewayError
from carousel_gateway.fleet.events import Event, MoveCompleted, Origin, OriginChannel
from carousel_gateway.fleet.fleet import Fleet
from carousel_gateway.fleet.machine import Machine, MoveOutcomeUnknown
from carousel_gateway.plc.protocol import Command

__all__ = ["BdSeqSource", "MqttLink", "tls_context"]

log = logging.getLogger(__name__)

#: Seconds a graceful stop waits for the NDEATH and the DISCONNECT to go out.
STOP_TIMEOUT_S = 5.0
#: QoS 1 messages awaiting their PUBACK at once (JSON form, results).
MAX_UNACKED = 100


class BdSeqSource(Protocol):
    """Where the next ``bdSeq`` comes from (the journal: ``Journal.next_bd_seq``)."""

    def __call__(self, node: str) -> Awaitable[int]: ...


class _End:
    """Ends the writer: the connection is to be closed (gracefully)."""


def tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """The client TLS context for the broker (None without TLS)."""
    if not config.uses_tls:
        return None
    context = ssl.create_default_context(cafile=config.ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.cert is not None and config.key is not None:
        context.load_cert_chain(config.cert, config.key)
    return context


class MqttLink:
    """The gateway's MQTT edge node: one connection at a time, reconnecting with backoff."""

    def __init__(
        self,
        config: MqttConfig,
        fleet: Fleet,
        runner: CommandRunner,
        *,
        bd_seq_source: BdSeqSource | None = None,
        counters: Callable[[], Awaitable[dict[str, dict[str, int | float]]]] | None = None,
        clock: Callable[[], float] = time.time,
        status: MqttStatus | None = None,
        owner: tuple[str, int] | None = None,
    ) -> None:
        """``status``: one the caller keeps across links (under [ha] a link per activation,
        health and metrics read the same object); ``owner``: the [ha] ``(instance, epoch)``
        the NBIRTH names."""
        self.config = config
        self.fleet = fleet
        self.runner = runner
        self.clock = clock
        unique = uuid.uuid4().hex[:8]
        #: Names this process among instances sharing the node's identity (active/standby).
        self.instance = f"{socket.gethostname()}/{os.getpid()}/{unique}"
        self.client_id = f"{config.group_id}.{config.edge_node_id}.{unique}"
        if status is None:
            status = MqttStatus(broker=f"{config.host}:{config.port}", format=config.format)
        self.status = status
        self.status.state = MqttLinkState.CONNECTING
        self.status.since = clock()
        self._bd_seq_source = bd_seq_source
        self._local_bd_seq = -1
        self._counters = counters
        self._tls = tls_context(config)  # first: a bad certificate starts nothing
        self._password = self._read_password()
        self.session = EdgeNodeSession(
            group_id=config.group_id,
            edge_node_id=config.edge_node_id,
            machine_ids=fleet.ids,
            version=__version__,
            instance=self.instance,
            commands_enabled=config.commands_enabled,
            primary_host_id=config.primary_host_id,
            device_death_s=config.device_death_s,
            rebirth_min_interval_s=config.rebirth_min_interval_s,
            owner=owner,
        )
        self.json = JsonNode(
            group_id=config.group_id,
            edge_node_id=config.edge_node_id,
            machine_ids=fleet.ids,
            commands_enabled=config.commands_enabled,
        )
        self.devices: dict[str, DeviceModel] = {}
        self._queue: asyncio.Queue[Publish | _End] = asyncio.Queue()
        self._connected = False
        self._stopping = False
        self._fenced = False  # [ha]: the lease is lost, only the goodbye may leave
        self._timer = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._moves: set[asyncio.Task[None]] = set()
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def sparkplug(self) -> bool:
        return self.config.format == "sparkplug"

    def _read_password(self) -> str | None:
        name = self.config.password_env
        if name is None:
            return None
        password = os.environ.get(name)
        if password is None:
            log.error("MQTT: the environment variable %s (password_env) is not set", name)
        return password

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the fleet and start connecting (returns at once: a broker that is down
        never holds up the gateway)."""
        counters: dict[str, dict[str, int | float]] = {}
        if self._counters is not None:
            try:
                counters = await self._counters()
            except Exception as exc:  # the journal's trouble is its own; counters start at 0
                log.warning("MQTT: maintenance counters unavailable (%s); they start at 0", exc)
        now = self.clock()
        for machine in self.fleet:
            model = DeviceModel(
                machine.snapshot,
                telemetry_source=machine.telemetry_source,
                counters=counters.get(machine.id),
                started_at=now,
            )
            self.devices[machine.id] = model
            self.session.update(machine.id, model.values(), alive=model.alive, now=now)
        self._unsubscribe = self.fleet.bus.subscribe(self._on_event)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mqtt-link")
        log.info(
            "MQTT %s edge node %s/%s on %s",
            self.config.format,
            self.config.group_id,
            self.config.edge_node_id,
            self.status.broker,
        )

    def fence(self) -> None:
        """The lease is lost ([ha]): publish nothing more but the goodbye :meth:`stop`
        sends. Synchronous, from the fence callback: a reading the instance applies after
        it (a frozen active that wakes up has replies waiting) must not reach the host as
        the cell's data once the new active is born, nor anything already queued."""
        self._fenced = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        kept = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, _End):
                kept.append(item)
        for item in kept:
            self._queue.put_nowait(item)

    async def stop(self) -> None:
        """Graceful: the NDEATH (JSON: offline status) first, then DISCONNECT."""
        self._stopping = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for move in tuple(self._moves):
            move.cancel()
        task = self._task
        if task is not None:
            if self._connected:
                self._enqueue(self._goodbye())
                self._queue.put_nowait(_End())
                done, _pending = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
                if not done:
                    task.cancel()
            else:
                task.cancel()  # not connected: nothing to say, no broker to wait for
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._set_state(MqttLinkState.DISCONNECTED)

    def _goodbye(self) -> list[Action]:
        now = self.clock()
        return self.session.disconnecting(now) if self.sparkplug else self.json.disconnecting()

    # -- the connection loop --------------------------------------------------------------

    async def _next_bd_seq(self) -> int:
        node = f"{self.config.group_id}/{self.config.edge_node_id}"
        if self._bd_seq_source is not None:
            try:
                return await self._bd_seq_source(node)
            except Exception as exc:
                log.warning("MQTT: bdSeq not persisted (%s); counting in memory", exc)
        self._local_bd_seq = (self._local_bd_seq + 1) % 256
        return self._local_bd_seq

    async def _run(self) -> None:
        backoff = self.config.backoff_initial_s
        while not self._stopping:
            bd_seq = await self._next_bd_seq()
            try:
                await self._connection(bd_seq)
                backoff = self.config.backoff_initial_s
            except aiomqtt.MqttError as exc:
                self.status.last_error = str(exc)
                self._state_changed.set()
                log.warning(
                    "MQTT broker %s: %s; retrying in %.1f s", self.status.broker, exc, backoff
                )
            finally:
                self._connected = False
                self.session.connection_lost()
                self.json.connection_lost()
                self._drain_queue()
            if self._stopping:
                break
            self._set_state(MqttLinkState.CONNECTING)
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))  # nosec B311 (jitter)
            backoff = min(backoff * 2, self.config.backoff_max_s)

    def _client(self, bd_seq: int) -> aiomqtt.Client:
        """A new client per connection: its Will is this connection's NDEATH."""
        now_ms = round(self.clock() * 1000)
        will = self.session.will(bd_seq, now_ms) if self.sparkplug else self.json.will()
        config = self.config
        return aiomqtt.Client(
            config.host,
            config.port,
            username=config.username,
            password=self._password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(will.topic, will.payload, will.qos, will.retain),
            clean_start=True,
            keepalive=config.keepalive_s,
            timeout=config.connect_timeout_s,
            tls_context=self._tls,
            logger=log,
        )

    async def _connection(self, bd_seq: int) -> None:
        async with self._client(bd_seq) as client:
            subscriptions = (
                self.session.subscriptions() if self.sparkplug else self.json.subscriptions()
            )
            for topic, qos in subscriptions:
                await client.subscribe(topic, qos)
            self.status.bd_seq = bd_seq if self.sparkplug else None
            self.status.connects += 1
            self.status.last_error = None
            self._connected = True
            log.info("MQTT connected to %s (bdSeq %d)", self.status.broker, bd_seq)
            now = self.clock()
            if self.sparkplug:
                self._enqueue(self.session.connected(bd_seq, now))
            else:
                self._enqueue(self.json.connected({m.id: m.snapshot for m in self.fleet}, now))
            self._show_state()
            await _first_to_end(self._write(client), self._read(client), self._timers())

    async def _write(self, client: aiomqtt.Client) -> None:
        """The one writer: messages leave in the order the session made them. A QoS 1
        message is handed to the client at once (that fixes its order) and its PUBACK
        awaited alongside, up to ``MAX_UNACKED`` at a time, so a broker's round trip does
        not pace everything behind it."""
        unacked: set[asyncio.Task[None]] = set()
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, _End):
                    if unacked:
                        await asyncio.wait(unacked, timeout=STOP_TIMEOUT_S)
                    return
                publish = client.publish(item.topic, item.payload, item.qos, item.retain)
                if item.qos == 0:
                    await publish
                else:
                    task = asyncio.ensure_future(publish)
                    await asyncio.sleep(0)  # the task hands the message over now, in order
                    unacked.add(task)
                    task.add_done_callback(unacked.discard)
                    task.add_done_callback(_seen)
                    if len(unacked) >= MAX_UNACKED:
                        done, _pending = await asyncio.wait(
                            unacked, return_when=asyncio.FIRST_COMPLETED
                        )
                        for finished in done:
                            finished.result()  # an MqttError ends the connection
                self.status.published[item.kind] = self.status.published.get(item.kind, 0) + 1
        finally:
            for task in unacked:
                task.cancel()

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            data = payload if isinstance(payload, bytes) else str(payload or "").encode()
            now = self.clock()
            topic = message.topic.value
            actions = (
                self.session.received(topic, data, now)
                if self.sparkplug
                else self.json.received(topic, data)
            )
            self._enqueue(actions)
        raise aiomqtt.MqttError("the broker closed the connection")

    async def _timers(self) -> None:
        while True:
            deadline = self.session.next_deadline()
            self._timer.clear()
            if deadline is None:
                await self._timer.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._timer.wait(), max(0.0, deadline - self.clock()))
            self._enqueue(self.session.tick(self.clock()))

    def _drain_queue(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    # -- state ----------------------------------------------------------------------------

    def _set_state(self, state: MqttLinkState) -> None:
        if self.status.state is not state:
            self.status.state = state
            self.status.since = self.clock()
            self._state_changed.set()

    async def wait_until(self, condition: Callable[[MqttStatus], bool]) -> None:
        """Return once ``condition(status)`` holds, checked at each change of state or
        error (for callers that must not poll)."""
        while not condition(self.status):
            self._state_changed.clear()
            await self._state_changed.wait()

    def _show_state(self) -> None:
        if not self._connected:
            return
        online = self.session.state is NodeState.ONLINE if self.sparkplug else self.json.online
        self._set_state(MqttLinkState.ONLINE if online else MqttLinkState.WAITING_FOR_HOST)

    # -- events and actions ---------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        """EventBus handler: compute and enqueue, never await."""
        device = self.devices.get(event.machine_id)
        if device is None:
            return
        changed = device.apply(event)
        if self.sparkplug:
            if not changed:
                return
            actions = self.session.update(
                device.machine_id, device.values(), alive=device.alive, now=self.clock()
            )
        else:
            actions = self.json.event(event, self.fleet.get(event.machine_id).snapshot)
        self._enqueue(actions)

    def _enqueue(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Publish):
                if self._connected and (not self._fenced or self._stopping):
                    self._queue.put_nowait(action)
            elif isinstance(action, MoveRequest):
                self._start_move(action)
            elif isinstance(action, Reconnect):
                log.warning("MQTT: %s; leaving the broker until it is back", action.reason)
                self._queue.put_nowait(_End())
            elif isinstance(action, Notice):
                if action.ignored:
                    self.status.ignored += 1
                    log.warning("MQTT: %s", action.text)
                else:
                    log.info("MQTT: %s", action.text)
        self._show_state()
        self._timer.set()  # the session's next deadline may have moved (DDEATH, rebirth)

    # -- commands -------------------------------------------------------------------------

    def _start_move(self, request: MoveRequest) -> None:
        task = asyncio.get_running_loop().create_task(
            self._move(request), name=f"mqtt-move-{request.machine_id}"
        )
        self._moves.add(task)
        task.add_done_callback(self._moves.discard)

    def _result(self, request: MoveRequest, result: CommandResult, reason: str = "") -> None:
        self.status.commands[result.value] = self.status.commands.get(result.value, 0) + 1
        device = self.devices[request.machine_id]
        now = self.clock()
        device.command_result(
            request_id=request.request_id,
            result=result,
            reason=reason,
            target=request.target,
            at=now,
        )
        if self.sparkplug:
            self._enqueue(
                self.session.update(
                    request.machine_id, device.values(), alive=device.alive, now=now
                )
            )
        else:
            self._enqueue(self.json.result(request, result.value, reason, now))

    async def _move(self, request: MoveRequest) -> None:
        """One move asked for over MQTT: the one command path, its fate in the result
        metrics (Sparkplug has no acknowledgement). Never retried."""
        try:
            machine: Machine = self.fleet.get(request.machine_id)
            origin = Origin(
                client=f"mqtt:{self.config.group_id}/{self.config.edge_node_id}",
                channel=OriginChannel.MQTT,
                request_id=request.request_id,
            )
            try:
                executed = await self.runner.run(
                    machine, Command.MOVE, request.target, origin, where="mqtt"
                )
            except MoveOutcomeUnknown as exc:
                self._result(request, CommandResult.UNKNOWN, f"{exc.code.value}: {exc.message}")
                if exc.outcome is None:
                    return
                outcome_future = exc.outcome
            except GatewayError as exc:
                self._result(request, CommandResult.REFUSED, _reason(exc))
                return
            else:
                if executed.outcome is None:  # already there: nothing was sent
                    self._result(request, CommandResult.ARRIVED, "already at the target")
                    return
                self._result(request, CommandResult.ACCEPTED)
                outcome_future = executed.outcome
            try:
                outcome = await self.runner.outcome(machine, outcome_future)
            except GatewayError as exc:
                self._result(request, CommandResult.UNKNOWN, _reason(exc))
                return
            if isinstance(outcome, MoveCompleted):
                self._result(request, CommandResult.ARRIVED)
            else:
                self._result(request, CommandResult.FAILED, main_reason(outcome.reasons))
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not end the link
            log.exception("MQTT move %r failed unexpectedly", request)


def _seen(task: asyncio.Future[None]) -> None:
    """A PUBACK wait that failed: the connection is going (the reader says so); seen here."""
    if not task.cancelled():
        task.exception()


async def _first_to_end(*loops: Coroutine[Any, Any, None]) -> None:
    """Run the connection's loops until one ends (the writer at a graceful close, the reader
    when the broker goes); cancel the others; its exception (an MqttError) goes up as is."""
    tasks = [asyncio.ensure_future(loop) for loop in loops]
    try:
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def _reason(exc: GatewayError) -> str:
    """``CODE: message`` (the reasons' keys are in the message's words)."""
    reasons = f" ({', '.join(exc.reasons)})" if exc.reasons else ""
    return f"{exc.code.value}{reasons}: {exc.message}"
