"""The WebSocket server: sessions, authentication, subscriptions, dispatch and broadcast.

Built on the ``websockets`` asyncio server. Every reply is answered from the machines'
snapshots; only ``send_command`` waits on a PLC, in its own task, so a session keeps being
served while its command runs. Outgoing frames are written without awaiting (one encoding
and one WebSocket frame per event, shared by every matching session; large broadcasts in
slices, each session's order kept: ``outbox.py``); a session that stops reading is cut off
once its unsent output passes a bound, so it never slows anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from carousel_gateway import __version__
from carousel_gateway.api import ws_internals
from carousel_gateway.api.auth import Authenticator, Identity
from carousel_gateway.api.commands import CommandRunner
from carousel_gateway.api.conversions import (
    command_result,
    history_entry,
    machine_event,
    machine_state,
    move_message,
)
from carousel_gateway.api.edge import SERVER
from carousel_gateway.api.guard import WS_MESSAGE, Guard, HostPolicy, TokenBucket
from carousel_gateway.api.outbox import Outbox
from carousel_gateway.api.subscriptions import FEEDS_OF, Feed, SubscriptionIndex
from carousel_gateway.api.ws_handshake import Handshake, with_security_headers
from carousel_gateway.config import GatewayConfig
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import (
    CommandAccepted,
    Event,
    MoveCompleted,
    MoveFailed,
    Origin,
    OriginChannel,
    StatusChanged,
)
from carousel_gateway.fleet.fleet import Fleet, machine_not_found
from carousel_gateway.fleet.machine import Machine, MoveOutcomeUnknown
from carousel_gateway.picking.service import JobService
from carousel_gateway.store import Journal
from carousel_gateway.wire import (
    CAPABILITIES,
    JOB_CAPABILITY,
    CancelJob,
    CommandResult,
    ConfirmPick,
    Counters,
    FleetStatus,
    GetCounters,
    GetHistory,
    GetJobs,
    GetStatus,
    History,
    JobAccepted,
    JobEventMessage,
    Jobs,
    JobSubmission,
    JobUpdate,
    JobView,
    MachineInfo,
    MachineStatus,
    MoveCompletedMessage,
    MoveFailedMessage,
    PauseJob,
    PickConfirmed,
    Ping,
    Pong,
    ResumeJob,
    SendCommand,
    ServerInfo,
    StatusBroadcast,
    SubmitJob,
    Subscribe,
    SubscriptionConfirmed,
    SubscriptionType,
    Unsubscribe,
    UnsubscriptionConfirmed,
    Welcome,
    epoch_seconds,
    error_message,
    parse_client_message,
    request_id_of,
    utc_timestamp,
)

__all__ = [
    "MAX_COMMANDS_IN_FLIGHT",
    "PROTOCOL_LOGGER",
    "Session",
    "WebSocketApi",
    "protocol_logger",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: The websockets library's own logger (its DEBUG lines trace handshakes and frames).
PROTOCOL_LOGGER = "carousel_gateway.ws.protocol"

#: websockets' INFO lines for a session, which "session N opened by ..." and "session N
#: closed (...)" already log with the session's id, peer and role: each session once.
_SESSION_LINES = frozenset({"connection open", "connection closed"})


def _not_a_session_line(record: logging.LogRecord) -> bool:
    return not (record.levelno == logging.INFO and record.msg in _SESSION_LINES)


def protocol_logger() -> logging.Logger:
    """The logger handed to websockets, without its duplicate per-session lines."""
    logger = logging.getLogger(PROTOCOL_LOGGER)
    if _not_a_session_line not in logger.filters:
        logger.addFilter(_not_a_session_line)
    return logger


#: Commands one session may have waiting on PLCs at once (each machine takes one anyway).
MAX_COMMANDS_IN_FLIGHT = 16


class _Message(Protocol):
    """What goes out to one session: any wire message (its ``type`` names it in metrics)."""

    @property
    def type(self) -> str: ...

    def encode(self) -> str: ...


@dataclass(eq=False, slots=True)
class Session:
    """One client connection."""

    id: int
    connection: ServerConnection
    identity: Identity
    commands_in_flight: int = 0
    alive: bool = True
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: Its message rate limit, and how many messages in a row it refused.
    bucket: TokenBucket | None = None
    refused_in_a_row: int = 0
    flooding: bool = False  # closing for a flood: what it still sends is read and dropped

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
        guard: Guard | None = None,
        ssl_context: ssl.SSLContext | None = None,
        runner: CommandRunner | None = None,
        broadcast_delay_observer: Callable[[float], None] | None = None,
        jobs: JobService | None = None,
    ) -> None:
        self.config = config
        #: Pick jobs (None: the gateway has no workstations; job messages are refused).
        self.jobs = jobs
        #: Sessions subscribed to job_events: their workstations (None: every one).
        self.job_watchers: dict[Session, set[str] | None] = {}
        #: Job writes handed to the service: they finish even if their session closes.
        self._job_writes: set[asyncio.Task[Any]] = set()
        self.fleet = fleet
        self.journal = journal
        self.authenticator = authenticator or Authenticator(config.auth)
        #: Host names, origins, session slots, rates and lockouts (shared with the HTTP server).
        self.guard = guard or Guard(
            config.limits, config.security, hosts=HostPolicy.for_config(config)
        )
        self.handshake = Handshake(self.guard, self.authenticator)
        self.ssl_context = ssl_context
        #: The gateway's one command path (shared with REST when given).
        self.runner = runner if runner is not None else CommandRunner(self.guard)
        #: Sessions waiting for their own commands' results, by ``id()`` of the command's
        #: Origin (the one the fleet's events carry): they get theirs directly, not a copy.
        self._requesters: dict[int, Session] = {}
        self.sessions: dict[int, Session] = {}
        self.subscriptions: SubscriptionIndex[Session] = SubscriptionIndex()
        self.sent_by_type: Counter[str] = Counter()
        self.slow_clients_dropped = 0
        #: Called with the seconds from a state change to its broadcast written (metrics).
        self.broadcast_delay_observer = broadcast_delay_observer
        #: Every frame goes out through it: framed once, sliced, in order per session.
        self.outbox: Outbox[Session] = Outbox(
            slice_size=config.websocket.broadcast_slice_sessions,
            max_buffer_bytes=config.websocket.max_send_buffer_bytes,
            on_slow=self._drop_slow,
            on_sent=self._count_sent,
        )
        self._session_ids = itertools.count(1)
        self._server: Server | None = None
        self._unsubscribe = fleet.bus.subscribe(self._on_event)
        self._unlisten_jobs = jobs.listen(self._on_job_event) if jobs is not None else None
        self._machine_infos = [self._machine_info(m) for m in fleet]

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        ws = self.config.websocket
        self._server = await serve(
            self._handle,
            ws.host,
            ws.port,
            process_request=self.handshake.admit,
            process_response=with_security_headers,
            server_header=SERVER,  # not the Python and websockets versions
            compression="deflate" if ws.compression else None,
            ping_interval=ws.ping_interval_s,
            ping_timeout=ws.ping_timeout_s,
            max_size=ws.max_message_bytes,
            open_timeout=self.config.limits.handshake_timeout_s,
            close_timeout=ws.close_timeout_s,
            ssl=self.ssl_context,
            logger=protocol_logger(),
        )
        scheme = "wss" if self.ssl_context is not None else "ws"
        log.info("WebSocket API on %s://%s:%d", scheme, ws.host, self.port)

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        """Close every session with 1001 (going away) and stop listening."""
        self._unsubscribe()
        if self._unlisten_jobs is not None:
            self._unlisten_jobs()
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None
        # Commands already handed to machines finish (and are journalled) before the fleet
        # and the journal stop; nothing new can start now. So do job writes.
        if self._job_writes:
            await asyncio.gather(*self._job_writes, return_exceptions=True)
        await self.runner.drain()

    # -- handshake ------------------------------------------------------------------------

    # -- session --------------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        identity = self.handshake.identity(connection)
        session = Session(
            next(self._session_ids), connection, identity, bucket=self.guard.session_bucket()
        )
        self.sessions[session.id] = session
        log.info("session %d opened by %s (%s)", session.id, session.peer, identity.role)
        try:
            self._send(session, self._welcome(session))
            async for raw in connection:
                if session.flooding:
                    continue  # keep reading, so the client's close frame is seen
                if self._admit(session, raw):
                    self._dispatch(session, raw)
                elif session.refused_in_a_row > self.config.limits.max_refused_messages:
                    log.warning("session %d (%s) closed: message flood", session.id, session.peer)
                    session.flooding = True
                    self._spawn(session, connection.close(1008, "message rate limit exceeded"))
        except ConnectionClosed:
            pass
        finally:
            session.alive = False
            self.subscriptions.drop(session)
            self.job_watchers.pop(session, None)
            self.sessions.pop(session.id, None)
            for task in list(session.tasks):
                task.cancel()  # journal reads; commands run on (see _run_command)
            log.info(
                "session %d closed (%s)", session.id, connection.close_code or "connection lost"
            )

    def _admit(self, session: Session, raw: str | bytes) -> bool:
        """The session's message rate limit: False (and RATE_LIMITED sent) when over it."""
        assert session.bucket is not None
        wait = session.bucket.acquire()
        if wait <= 0:
            session.refused_in_a_row = 0
            return True
        session.refused_in_a_row += 1
        error = self.guard.refuse(
            WS_MESSAGE,
            ErrorCode.RATE_LIMITED,
            f"over {self.config.limits.messages_per_second:g} messages per second; slow down",
            retry_after_s=wait,
        )
        self._send(session, error_message(error, request_id_of(raw)))
        return False

    def _welcome(self, session: Session) -> Welcome:
        return Welcome(
            timestamp=utc_timestamp(),
            server_info=ServerInfo(
                version=__version__,
                capabilities=[*CAPABILITIES, *([JOB_CAPABILITY] if self.jobs else [])],
            ),
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
                case GetJobs():
                    self._get_jobs(session, message)
                case SubmitJob() | ConfirmPick() | PauseJob() | ResumeJob() | CancelJob():
                    jobs = self._job_service()
                    self._may_control_jobs(session)
                    self._spawn(session, self._job_request(session, jobs, message))
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
                f"too many commands in flight on this session (at most {MAX_COMMANDS_IN_FLIGHT})",
                machine_id=machine.id,
            )
        command, argument = message.command_and_argument()
        origin = Origin(
            client=session.identity.client,
            channel=OriginChannel.WS,
            request_id=message.request_id,
        )
        # Counted here, not in the task: a burst of frames is dispatched before any task runs.
        session.commands_in_flight += 1
        self._spawn(session, self._run_command(session, machine, command, argument, origin))

    def _spawn(self, session: Session, work: Coroutine[Any, Any, None]) -> None:
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
                    since=epoch_seconds(message.since),
                    until=epoch_seconds(message.until),
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
        self,
        session: Session,
        machine: Machine,
        command: int,  # as the client sent them: the machine judges the values
        argument: int | None,
        origin: Origin,
    ) -> None:
        """One command through the runner; the requester gets its command_result (or error)
        and then its move's outcome, each with its request_id, straight from the runner."""
        key = id(origin)
        self._requesters[key] = session
        try:
            try:
                executed = await self.runner.run(
                    machine, command, argument, origin, where=WS_MESSAGE
                )
            except MoveOutcomeUnknown as exc:
                self._send(session, error_message(exc, origin.request_id))
                outcome = exc.outcome  # a later reading still settles it: the requester hears
            else:
                self._send(session, command_result(executed.accepted, origin.request_id))
                outcome = executed.outcome
            finally:
                session.commands_in_flight -= 1
            if outcome is not None:
                event = await self.runner.outcome(machine, outcome)
                self._send(session, move_message(event, origin.request_id))
        except GatewayError as exc:
            self._send(session, error_message(exc, origin.request_id))
        except Exception:
            log.exception("%s: unexpected error executing a command", machine.id)
            internal = GatewayError(
                ErrorCode.INTERNAL_ERROR, "internal error; see gateway log", machine_id=machine.id
            )
            self._send(session, error_message(internal, origin.request_id))
        finally:
            self._requesters.pop(key, None)

    # -- pick jobs ------------------------------------------------------------------------

    def _job_service(self) -> JobService:
        if self.jobs is None:
            raise GatewayError(
                ErrorCode.WORKSTATION_NOT_FOUND,
                "pick jobs are off: this gateway has no [[workstations]] configured",
            )
        return self.jobs

    @staticmethod
    def _may_control_jobs(session: Session) -> None:
        """Submitting, confirming and job control need the operator role (as commands)."""
        if not session.identity.can_command:
            raise GatewayError(
                ErrorCode.FORBIDDEN,
                f"role {session.identity.role!r} may not submit, confirm or control pick jobs",
            )

    def _get_jobs(self, session: Session, message: GetJobs) -> None:
        jobs = self._job_service()
        if message.workstation_id is not None:
            jobs.workstation(message.workstation_id)  # WORKSTATION_NOT_FOUND for unknown ids
        if message.job_id is not None:
            found = [jobs.job(message.job_id)]  # JOB_NOT_FOUND for an unknown id
        else:
            found = jobs.jobs(message.workstation_id, message.state)[: message.limit]
        reply = Jobs(jobs=found, timestamp=utc_timestamp(), request_id=message.request_id)
        self._send(session, reply)

    async def _job_request(
        self,
        session: Session,
        jobs: JobService,
        message: SubmitJob | ConfirmPick | PauseJob | ResumeJob | CancelJob,
    ) -> None:
        """One job write; the requester gets its reply (or error) with its request_id."""
        by = session.identity.client
        request_id = message.request_id
        try:
            reply: JobAccepted | PickConfirmed | JobUpdate
            match message:
                case SubmitJob():
                    submission = JobSubmission.model_validate(
                        message.model_dump(exclude={"type", "request_id", "timestamp"})
                    )
                    job, created = await self._journalled(jobs.submit(submission, by))
                    reply = JobAccepted(
                        job=job, created=created, timestamp=utc_timestamp(), request_id=request_id
                    )
                case ConfirmPick():
                    job = await self._journalled(
                        jobs.confirm(
                            message.job_id,
                            message.line_id,
                            message.quantity_picked,
                            message.reason,
                            by,
                            confirmation_id=message.confirmation_id,
                        )
                    )
                    reply = PickConfirmed(
                        job=job,
                        line_id=message.line_id,
                        timestamp=utc_timestamp(),
                        request_id=request_id,
                    )
                case PauseJob() | ResumeJob() | CancelJob():
                    reply = JobUpdate(
                        job=await self._journalled(self._control(jobs, message, by)),
                        timestamp=utc_timestamp(),
                        request_id=request_id,
                    )
            self._send(session, reply)
        except GatewayError as exc:
            self._send(session, error_message(exc, request_id))
        except Exception:
            log.exception("session %d: unexpected error in a job request", session.id)
            internal = GatewayError(ErrorCode.INTERNAL_ERROR, "internal error; see gateway log")
            self._send(session, error_message(internal, request_id))

    @staticmethod
    async def _control(
        jobs: JobService, message: PauseJob | ResumeJob | CancelJob, by: str
    ) -> JobView:
        if isinstance(message, PauseJob):
            return await jobs.pause(message.job_id, by, message.reason)
        if isinstance(message, ResumeJob):
            return await jobs.resume(message.job_id, by)
        return await jobs.cancel(message.job_id, by, message.reason)

    async def _journalled(self, work: Coroutine[Any, Any, _T]) -> _T:
        """A job write runs to its end even if its session closes meanwhile: once handed
        to the service it is journalled and acted on, like a command."""
        task = asyncio.get_running_loop().create_task(work)
        self._job_writes.add(task)
        task.add_done_callback(_forget_write(self._job_writes))
        return await asyncio.shield(task)

    def _subscribe_jobs(self, session: Session, message: Subscribe | Unsubscribe) -> list[str]:
        """Add (or remove) a session's job_events workstations; the ones it names."""
        jobs = self._job_service()
        if message.machine_ids is not None:
            raise GatewayError(
                ErrorCode.INVALID_MESSAGE_FORMAT,
                "job_events is filtered by workstation_ids, not machine_ids",
            )
        every = [station.id for station in jobs.workstations()]
        if message.workstation_ids is None:
            named = every
        else:
            named = list(dict.fromkeys(message.workstation_ids))
            for workstation_id in named:
                jobs.workstation(workstation_id)  # WORKSTATION_NOT_FOUND for unknown ids
        current = self.job_watchers.get(session, set())
        if isinstance(message, Subscribe):
            if message.workstation_ids is None:
                self.job_watchers[session] = None
            elif current is not None:
                self.job_watchers[session] = current | set(named)
        else:
            left = (set(every) if current is None else current) - set(named)
            if left:
                self.job_watchers[session] = left
            else:
                self.job_watchers.pop(session, None)
        return named

    def _on_job_event(self, event: JobEventMessage) -> None:
        """A job event to the sessions watching its workstation: encoded once."""
        sessions = tuple(
            session
            for session, stations in self.job_watchers.items()
            if session.alive and (stations is None or event.workstation_id in stations)
        )
        if sessions:
            self._broadcast(sessions, event.type, event.encode())

    def _machine_ids(self, machine_ids: list[str] | None) -> list[str]:
        if machine_ids is None:
            return self.fleet.ids
        unknown = [m for m in machine_ids if m not in self.fleet]
        if unknown:
            raise machine_not_found(unknown, self.fleet.ids)
        return list(dict.fromkeys(machine_ids))

    @staticmethod
    def _no_workstations_outside_jobs(message: Subscribe | Unsubscribe) -> None:
        if message.workstation_ids is not None:
            raise GatewayError(
                ErrorCode.INVALID_MESSAGE_FORMAT,
                f"workstation_ids applies to job_events only, not {message.subscription_type}",
            )

    def _subscribe(self, session: Session, message: Subscribe) -> None:
        if message.subscription_type is SubscriptionType.JOB_EVENTS:
            stations = self._subscribe_jobs(session, message)
            confirmed = SubscriptionConfirmed(
                subscription_type=message.subscription_type,
                machine_ids=[],
                workstation_ids=stations,
                timestamp=utc_timestamp(),
                request_id=message.request_id,
            )
            self._send(session, confirmed)
            return
        self._no_workstations_outside_jobs(message)
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
        if Feed.STATUS in FEEDS_OF[message.subscription_type]:
            subscribed = self.subscriptions.machines(session, Feed.STATUS)
            current = StatusBroadcast(
                timestamp=utc_timestamp(),
                status={m.id: machine_state(m.snapshot) for m in self.fleet if m.id in subscribed},
            )
            self._send(session, current)

    def _unsubscribe_session(self, session: Session, message: Unsubscribe) -> None:
        if message.subscription_type is SubscriptionType.JOB_EVENTS:
            stations = self._subscribe_jobs(session, message)
            confirmed = UnsubscriptionConfirmed(
                subscription_type=message.subscription_type,
                machine_ids=[],
                workstation_ids=stations,
                timestamp=utc_timestamp(),
                request_id=message.request_id,
            )
            self._send(session, confirmed)
            return
        self._no_workstations_outside_jobs(message)
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
                sessions = self.subscriptions.sessions(Feed.STATUS, event.machine_id)
                if sessions:
                    message = StatusBroadcast(
                        timestamp=utc_timestamp(snapshot.changed_at),
                        status={event.machine_id: machine_state(snapshot)},
                    )
                    done = None
                    observe = self.broadcast_delay_observer
                    changed = snapshot.changed_monotonic
                    if observe is not None and changed is not None:
                        done = lambda: observe(time.monotonic() - changed)  # noqa: E731
                    self._broadcast(sessions, "status_broadcast", message.encode(), done)
            case CommandAccepted() | MoveCompleted() | MoveFailed():
                self._to_other_subscribers(event)
            case _:
                sessions = self.subscriptions.sessions(Feed.EVENTS, event.machine_id)
                if sessions:  # built only when someone listens
                    happened = machine_event(event)
                    if happened is not None:
                        self._broadcast(sessions, "machine_event", happened.encode())

    def _to_other_subscribers(self, event: CommandAccepted | MoveCompleted | MoveFailed) -> None:
        """A command's result or outcome to the sessions subscribed to commands, except its
        requester (it gets its own, with its request_id, from ``_run_command``)."""
        subscribers = self.subscriptions.sessions(Feed.COMMANDS, event.machine_id)
        requester = self._requesters.get(id(event.origin))
        others = subscribers
        if requester is not None and requester in subscribers:
            others = tuple(s for s in subscribers if s is not requester)
        if others:
            message: CommandResult | MoveCompletedMessage | MoveFailedMessage = (
                command_result(event, None)
                if isinstance(event, CommandAccepted)
                else move_message(event, None)
            )
            self._broadcast(others, message.type, message.encode())

    # -- writing --------------------------------------------------------------------------

    def _send(self, session: Session, message: _Message) -> None:
        self._broadcast((session,), message.type, message.encode())

    def _broadcast(
        self,
        sessions: Sequence[Session],
        kind: str,
        data: str,
        done: Callable[[], None] | None = None,
    ) -> None:
        """Write one encoded message to sessions without awaiting (``outbox.py``: framed
        once, large broadcasts in slices, per-session order kept); cut off those not
        reading. ``sessions`` must not change afterwards."""
        self.outbox.send(sessions, kind, data.encode(), done)

    def _count_sent(self, kind: str, count: int) -> None:
        self.sent_by_type[kind] += count

    def _drop_slow(self, session: Session) -> None:
        session.alive = False
        self.subscriptions.drop(session)
        self.job_watchers.pop(session, None)
        self.slow_clients_dropped += 1
        log.warning(
            "session %d (%s) dropped: over %d bytes unsent (client not reading)",
            session.id,
            session.peer,
            self.config.websocket.max_send_buffer_bytes,
        )
        if session.connection.state is State.OPEN:
            with contextlib.suppress(Exception):
                ws_internals.abort(session.connection)


def _forget_write(writes: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    """Drop a finished job write; its error, if any, reached its requester (or nobody
    was left to hear it), so it is marked retrieved rather than logged as lost."""

    def done(task: asyncio.Task[Any]) -> None:
        writes.discard(task)
        if not task.cancelled():
            task.exception()

    return done
