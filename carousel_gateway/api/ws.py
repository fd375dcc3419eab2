"""The WebSocket server: sessions, authentication, subscriptions, dispatch and broadcast.

Built on the ``websockets`` asyncio server. Every reply is answered from the machines'
snapshots; only ``send_command`` waits on a PLC, in its own task, so a session keeps being
served while its command runs. Outgoing frames are written without awaiting (one encoding
per event, shared by every matching session); a session that stops reading is cut off once
its unsent output passes a bound, so it never slows anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from carousel_gateway import __version__
from carousel_gateway.api.auth import Authenticator, Identity, token_from
from carousel_gateway.api.messages import (
    CAPABILITIES,
    CommandData,
    CommandResult,
    Counters,
    FleetStatus,
    GetCounters,
    GetHistory,
    GetStatus,
    History,
    MachineEvent,
    MachineEventKind,
    MachineInfo,
    MachineStatus,
    MoveCompletedMessage,
    MoveFailedMessage,
    Ping,
    Pong,
    SendCommand,
    ServerInfo,
    StatusBroadcast,
    Subscribe,
    SubscriptionConfirmed,
    Unsubscribe,
    UnsubscriptionConfirmed,
    Welcome,
    error_message,
    history_entry,
    machine_state,
    main_reason,
    parse_client_message,
    request_id_of,
    utc_timestamp,
)
from carousel_gateway.api.subscriptions import CHANNELS_OF, Channel, SubscriptionIndex
from carousel_gateway.config import GatewayConfig
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import (
    Channel as OriginChannel,
)
from carousel_gateway.fleet.events import (
    CommandAccepted,
    ConnectionChanged,
    Event,
    FaultCleared,
    FaultRaised,
    MoveCompleted,
    MoveFailed,
    Origin,
    PositionDesync,
    PositionDesyncCleared,
    StatusChanged,
    TelemetrySourceChanged,
)
from carousel_gateway.fleet.fleet import Fleet
from carousel_gateway.fleet.machine import Machine
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.store import Journal

log = logging.getLogger(__name__)

#: Commands one session may have waiting on PLCs at once (each machine takes one anyway).
MAX_COMMANDS_IN_FLIGHT = 16


@dataclass(eq=False, slots=True)
class Session:
    """One client connection."""

    id: int
    connection: ServerConnection
    identity: Identity
    commands_in_flight: int = 0
    alive: bool = True
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def peer(self) -> str:
        return self.identity.client


class WebSocketApi:
    """The WebSocket API over one fleet."""

    def __init__(
        self,
        config: GatewayConfig,
        fleet: Fleet,
        *,
        authenticator: Authenticator | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.config = config
        self.fleet = fleet
        self.journal = journal
        self.authenticator = authenticator or Authenticator(config.auth)
        self.sessions: dict[int, Session] = {}
        self.subscriptions: SubscriptionIndex[Session] = SubscriptionIndex()
        self.sent_by_type: Counter[str] = Counter()
        self.slow_clients_dropped = 0
        #: Called with the seconds from a state change to its broadcast written (metrics).
        self.broadcast_delay_observer: Callable[[float], None] | None = None
        self._session_ids = itertools.count(1)
        self._identities: dict[ServerConnection, Identity] = {}
        self._server: Server | None = None
        self._unsubscribe = fleet.bus.subscribe(self._on_event)
        self._machine_infos = [self._machine_info(m) for m in fleet]

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        ws = self.config.websocket
        self._server = await serve(
            self._handle,
            ws.host,
            ws.port,
            process_request=self._authenticate,
            compression="deflate" if ws.compression else None,
            ping_interval=ws.ping_interval_s,
            ping_timeout=ws.ping_timeout_s,
            max_size=ws.max_message_bytes,
            logger=logging.getLogger("carousel_gateway.ws.protocol"),
        )
        log.info("WebSocket API on ws://%s:%d", ws.host, self.port)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close every session with 1001 (going away) and stop listening."""
        self._unsubscribe()
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None

    # -- handshake ------------------------------------------------------------------------

    def _authenticate(self, connection: ServerConnection, request: Request) -> Response | None:
        peer = _peer(connection)
        token = token_from(request.headers.get("Authorization"), request.path)
        identity = self.authenticator.identify(token, peer)
        if identity is None:
            log.warning("WebSocket handshake from %s refused: missing or invalid token", peer)
            response = connection.respond(http.HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
            response.headers["WWW-Authenticate"] = 'Bearer realm="carousel-gateway"'
            return response
        self._identities[connection] = identity
        return None

    # -- session --------------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        identity = self._identities.pop(connection, None) or Identity(_peer(connection), "viewer")
        session = Session(next(self._session_ids), connection, identity)
        self.sessions[session.id] = session
        log.info("session %d opened by %s (%s)", session.id, session.peer, identity.role)
        try:
            self._send(session, self._welcome(session))
            async for raw in connection:
                self._dispatch(session, raw)
        except ConnectionClosed:
            pass
        finally:
            session.alive = False
            self.subscriptions.drop(session)
            self.sessions.pop(session.id, None)
            for task in list(session.tasks):
                task.cancel()
            log.info(
                "session %d closed (%s)", session.id, connection.close_code or "connection lost"
            )

    def _welcome(self, session: Session) -> Welcome:
        return Welcome(
            timestamp=utc_timestamp(),
            server_info=ServerInfo(version=__version__, capabilities=list(CAPABILITIES)),
            machines=self._machine_infos,
            auth=(
                {"client": session.identity.client, "role": session.identity.role}
                if self.authenticator.enabled
                else None
            ),
        )

    @staticmethod
    def _machine_info(machine: Machine) -> MachineInfo:
        config = machine.config
        return MachineInfo(
            id=config.id,
            name=config.name,
            ip=config.host,
            port=machine.connection.settings.port,
            type=config.type_label,
            positions=config.positions,
            position_base=config.position_base,
            description=config.description,
        )

    def _dispatch(self, session: Session, raw: str | bytes) -> None:
        """Handle one client frame. Bad input gets an ``error``; the session goes on."""
        request_id: str | None = None
        try:
            message = parse_client_message(raw)
            request_id = message.request_id
            match message:
                case GetStatus():
                    self._get_status(session, message)
                case SendCommand():
                    self._send_command(session, message)
                case Subscribe():
                    self._subscribe(session, message)
                case Unsubscribe():
                    self._unsubscribe_session(session, message)
                case Ping():
                    self._send(session, Pong(timestamp=utc_timestamp(), request_id=request_id))
                case GetHistory() | GetCounters():
                    self._spawn(session, self._read_journal(session, message))
        except GatewayError as exc:
            if request_id is None:
                request_id = request_id_of(raw)
            self._send(session, error_message(exc, request_id))
        except Exception:
            log.exception("session %d: unexpected error handling a message", session.id)
            internal = GatewayError(ErrorCode.INTERNAL_ERROR, "internal error; see gateway log")
            self._send(session, error_message(internal, request_id))

    def _get_status(self, session: Session, message: GetStatus) -> None:
        if message.machine_id is None:
            reply: MachineStatus | FleetStatus = FleetStatus(
                machines={m.id: machine_state(m.snapshot) for m in self.fleet},
                timestamp=utc_timestamp(),
                request_id=message.request_id,
            )
        else:
            machine = self.fleet.get(message.machine_id)
            state = machine_state(machine.snapshot)
            reply = MachineStatus(
                machine_id=machine.id,
                **state.model_dump(),
                timestamp=utc_timestamp(),
                request_id=message.request_id,
            )
        self._send(session, reply)

    def _send_command(self, session: Session, message: SendCommand) -> None:
        machine = self.fleet.get(message.machine_id)
        if not session.identity.can_command:
            raise GatewayError(
                ErrorCode.FORBIDDEN,
                f"role {session.identity.role!r} may not send commands",
                machine_id=machine.id,
            )
        if session.commands_in_flight >= MAX_COMMANDS_IN_FLIGHT:
            raise GatewayError(
                ErrorCode.BUSY,
                "too many commands in flight on this session",
                machine_id=machine.id,
            )
        command, argument = message.command_and_argument()
        origin = Origin(
            client=session.identity.client,
            channel=OriginChannel.WS,
            request_id=message.request_id,
            session_id=session.id,
        )
        self._spawn(session, self._run_command(session, machine, command, argument, origin))

    def _spawn(self, session: Session, work) -> None:
        """Run work that awaits (a PLC, the journal) without holding up the session."""
        task = asyncio.get_running_loop().create_task(work)
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)

    async def _read_journal(self, session: Session, message: GetHistory | GetCounters) -> None:
        try:
            if self.journal is None:
                raise GatewayError(ErrorCode.JOURNAL_UNAVAILABLE, "the journal is disabled")
            if message.machine_id is not None:
                self.fleet.get(message.machine_id)  # MACHINE_NOT_FOUND for unknown ids
            reply: History | Counters
            if isinstance(message, GetHistory):
                page = await self.journal.history(
                    message.machine_id,
                    since=_epoch(message.since),
                    until=_epoch(message.until),
                    kinds=message.kinds,
                    limit=message.limit,
                    cursor=message.cursor,
                )
                reply = History(
                    machine_id=message.machine_id,
                    entries=[history_entry(row) for row in page.rows],
                    next_cursor=page.next_cursor,
                    timestamp=utc_timestamp(),
                    request_id=message.request_id,
                )
            else:
                reply = Counters(
                    machine_id=message.machine_id,
                    counters=await self.journal.counters(message.machine_id),
                    timestamp=utc_timestamp(),
                    request_id=message.request_id,
                )
            self._send(session, reply)
        except GatewayError as exc:
            self._send(session, error_message(exc, message.request_id))
        except Exception:
            log.exception("session %d: reading the journal failed", session.id)
            failed = GatewayError(ErrorCode.INTERNAL_ERROR, "reading the journal failed")
            self._send(session, error_message(failed, message.request_id))

    async def _run_command(
        self, session: Session, machine: Machine, command: object, argument: object, origin: Origin
    ) -> None:
        session.commands_in_flight += 1
        try:
            await machine.execute(command, argument, origin)  # type: ignore[arg-type]
            # The command_result itself goes out from the CommandAccepted event, in order
            # with the move_completed/move_failed that follows it.
        except GatewayError as exc:
            self._send(session, error_message(exc, origin.request_id))
        except Exception:
            log.exception("%s: unexpected error executing a command", machine.id)
            internal = GatewayError(
                ErrorCode.INTERNAL_ERROR, "internal error; see gateway log", machine_id=machine.id
            )
            self._send(session, error_message(internal, origin.request_id))
        finally:
            session.commands_in_flight -= 1

    def _machine_ids(self, machine_ids: list[str] | None) -> list[str]:
        if machine_ids is None:
            return self.fleet.ids
        unknown = [m for m in machine_ids if m not in self.fleet]
        if unknown:
            raise GatewayError(
                ErrorCode.MACHINE_NOT_FOUND,
                f"Machine not found: {', '.join(unknown[:10])}",
                machine_id=unknown[0],
            )
        return list(dict.fromkeys(machine_ids))

    def _subscribe(self, session: Session, message: Subscribe) -> None:
        ids = self._machine_ids(message.machine_ids)
        self.subscriptions.add(session, message.subscription_type, ids)
        self._send(
            session,
            SubscriptionConfirmed(
                subscription_type=message.subscription_type,
                machine_ids=ids,
                timestamp=utc_timestamp(),
                request_id=message.request_id,
            ),
        )
        if Channel.STATUS in CHANNELS_OF[message.subscription_type]:
            subscribed = self.subscriptions.machines(session, Channel.STATUS)
            current = StatusBroadcast(
                timestamp=utc_timestamp(),
                status={m.id: machine_state(m.snapshot) for m in self.fleet if m.id in subscribed},
            )
            self._send(session, current)

    def _unsubscribe_session(self, session: Session, message: Unsubscribe) -> None:
        ids = self._machine_ids(message.machine_ids)
        self.subscriptions.remove(session, message.subscription_type, ids)
        self._send(
            session,
            UnsubscriptionConfirmed(
                subscription_type=message.subscription_type,
                machine_ids=ids,
                timestamp=utc_timestamp(),
                request_id=message.request_id,
            ),
        )

    # -- fleet events → clients -----------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        match event:
            case StatusChanged(snapshot=snapshot):
                sessions = self.subscriptions.sessions(Channel.STATUS, event.machine_id)
                if sessions:
                    message = StatusBroadcast(
                        timestamp=utc_timestamp(snapshot.changed_at),
                        status={event.machine_id: machine_state(snapshot)},
                    )
                    self._broadcast(sessions, "status_broadcast", message.encode())
                    observe = self.broadcast_delay_observer
                    if observe is not None and snapshot.changed_monotonic is not None:
                        observe(time.monotonic() - snapshot.changed_monotonic)
            case CommandAccepted():
                self._to_requester_and_subscribers(event, event.origin, _command_result)
            case MoveCompleted() | MoveFailed():
                self._to_requester_and_subscribers(event, event.origin, _move_outcome)
            case ConnectionChanged(state=state, reason=reason):
                kind = {
                    ConnectionState.CONNECTED: MachineEventKind.CONNECTED,
                    ConnectionState.DISCONNECTED: MachineEventKind.DISCONNECTED,
                    ConnectionState.ERROR: MachineEventKind.ERROR,
                }[state]
                self._machine_event(event, kind, reason=reason)
            case FaultRaised(keys=keys):
                self._machine_event(event, MachineEventKind.FAULT_RAISED, keys=list(keys))
            case FaultCleared(keys=keys):
                self._machine_event(event, MachineEventKind.FAULT_CLEARED, keys=list(keys))
            case TelemetrySourceChanged(source=source, reason=reason):
                self._machine_event(
                    event, MachineEventKind.TELEMETRY_SOURCE, source=source.value, reason=reason
                )
            case PositionDesync(position=position, target=target):
                self._machine_event(
                    event, MachineEventKind.POSITION_DESYNC, position=position, target=target
                )
            case PositionDesyncCleared(position=position):
                self._machine_event(
                    event, MachineEventKind.POSITION_DESYNC_CLEARED, position=position
                )

    def _to_requester_and_subscribers(self, event: Event, origin: Origin, build) -> None:
        requester = None
        if origin.channel is OriginChannel.WS and origin.session_id is not None:
            requester = self.sessions.get(origin.session_id)
        if requester is not None:
            message = build(event, origin.request_id)
            self._send(requester, message)
        subscribers = self.subscriptions.sessions(Channel.COMMANDS, event.machine_id)
        others = [s for s in subscribers if s is not requester]
        if others:
            message = build(event, None)
            self._broadcast(others, message.type, message.encode())

    def _machine_event(
        self,
        event: Event,
        kind: MachineEventKind,
        *,
        keys: list[str] | None = None,
        reason: str | None = None,
        source: str | None = None,
        position: int | None = None,
        target: int | None = None,
    ) -> None:
        sessions = self.subscriptions.sessions(Channel.EVENTS, event.machine_id)
        if sessions:
            message = MachineEvent(
                machine_id=event.machine_id,
                event=kind,
                keys=keys,
                reason=reason,
                source=source,
                position=position,
                target=target,
                timestamp=utc_timestamp(event.at),
            )
            self._broadcast(sessions, "machine_event", message.encode())

    # -- writing --------------------------------------------------------------------------

    def _send(self, session: Session, message) -> None:
        self._broadcast((session,), message.type, message.encode())

    def _broadcast(self, sessions: Iterable[Session], kind: str, data: str) -> None:
        """Write one encoded frame to sessions without awaiting; cut off those not reading."""
        targets = [s for s in sessions if s.alive]
        if not targets:
            return
        broadcast([s.connection for s in targets], data)
        self.sent_by_type[kind] += len(targets)
        limit = self.config.websocket.max_send_buffer_bytes
        for session in targets:
            transport = session.connection.transport
            if transport is not None and transport.get_write_buffer_size() > limit:
                self._drop_slow(session)

    def _drop_slow(self, session: Session) -> None:
        session.alive = False
        self.subscriptions.drop(session)
        self.slow_clients_dropped += 1
        log.warning(
            "session %d (%s) dropped: over %d bytes unsent (client not reading)",
            session.id,
            session.peer,
            self.config.websocket.max_send_buffer_bytes,
        )
        if session.connection.state is State.OPEN:
            with contextlib.suppress(Exception):
                session.connection.transport.abort()


def _command_result(event: CommandAccepted, request_id: str | None) -> CommandResult:
    return CommandResult(
        machine_id=event.machine_id,
        data=CommandData(
            command_sent=event.command,
            argument=event.argument,
            result=event.result,
            skipped=event.skipped,
            command_id=event.command_id,
        ),
        timestamp=utc_timestamp(event.at),
        request_id=request_id,
    )


def _move_outcome(
    event: MoveCompleted | MoveFailed, request_id: str | None
) -> MoveCompletedMessage | MoveFailedMessage:
    if isinstance(event, MoveCompleted):
        return MoveCompletedMessage(
            machine_id=event.machine_id,
            command_id=event.command_id,
            position=event.position,
            duration_s=round(event.duration_s, 3),
            timestamp=utc_timestamp(event.at),
            request_id=request_id,
        )
    return MoveFailedMessage(
        machine_id=event.machine_id,
        command_id=event.command_id,
        reason=main_reason(event.reasons),
        reasons=list(event.reasons),
        target=event.target,
        position=event.position,
        duration_s=round(event.duration_s, 3),
        timestamp=utc_timestamp(event.at),
        request_id=request_id,
    )


def _epoch(moment: datetime | None) -> float | None:
    """Seconds since the epoch; a time without a zone is taken as UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
