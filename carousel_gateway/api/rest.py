"""The REST API v1 (FastAPI), served by uvicorn inside the gateway's own event loop.

WMS integrations use it for one-off operations. It shares everything with the WebSocket
API: the machines' snapshots (no endpoint waits on a PLC to report state), the command path
(``Machine.execute``, one command at a time per machine), the tokens and roles, and the one
table of error codes. Every JSON reply has the envelope ``{success, data, error, code,
timestamp}``, plus ``machine_id`` where one machine is involved.

Before FastAPI parses anything, a small ASGI gatekeeper checks the ``Host`` (400), the
browser origin (403, and answers CORS), the address's lockout (429), authenticates (401),
checks the role (403: viewers may only read), rate-limits writes (429) and bounds the body
(413), so each of those is decided in one place and in that order for every path. Replies
of 500 bytes or more are gzipped for clients that accept it; ``edge.py`` adds the security
headers and HEAD around the whole app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any, Generic, Literal, TypeVar

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyQuery, HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Gatekeeper", "HttpServer", "RateLimiter", "RestApi", "create_app"]

from carousel_gateway import __version__
from carousel_gateway.api import dashboard, edge
from carousel_gateway.api.auth import (
    Authenticator,
    Identity,
    install_log_redaction,
    token_from,
)
from carousel_gateway.api.guard import HTTP, Guard, RateLimiter
from carousel_gateway.api.http_status import http_status
from carousel_gateway.api.messages import (
    HistoryEntry,
    HistoryKind,
    IsoDateTime,
    MachineInfo,
    MachineState,
    epoch_seconds,
    history_entry,
    machine_state,
    main_reason,
    utc_timestamp,
)
from carousel_gateway.api.metrics import GatewayMetrics
from carousel_gateway.api.simulators import (
    SimulatorControl,
    SimulatorFault,
    SimulatorLinkAction,
)
from carousel_gateway.api.ws import WebSocketApi
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import Channel as OriginChannel
from carousel_gateway.fleet.events import (
    CommandAccepted,
    MoveCompleted,
    MoveFailed,
    Origin,
)
from carousel_gateway.fleet.fleet import Fleet
from carousel_gateway.fleet.lifecycle import FailReason
from carousel_gateway.fleet.machine import ExecutedCommand, Machine
from carousel_gateway.plc.connection import ConnectionState
from carousel_gateway.plc.protocol import Command
from carousel_gateway.store import KINDS, Journal

log = logging.getLogger(__name__)

#: Largest request body accepted (every valid body is a few dozen bytes).
MAX_BODY_BYTES = 64 * 1024
#: A larger body is refused without reading the rest of it (the connection is closed).
DRAIN_LIMIT_BYTES = 1024 * 1024
#: The API docs pages (Swagger UI) and where their files are served from (the package's own).
DOCS_PAGES = ("/docs", "/docs/oauth2-redirect")
DOCS_ASSETS = "/docs/assets"
#: Paths anyone may read, token or not: probes, scrapers and the API's own description.
OPEN_PATHS = frozenset({"/v1/health", "/v1/ready", "/metrics", "/openapi.json", *DOCS_PAGES})
OPEN_PREFIXES = (DOCS_ASSETS + "/",)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Seconds uvicorn gives open requests to finish at shutdown before cancelling them.
GRACEFUL_SHUTDOWN_S = 5
#: Seconds ``stop()`` then waits for commands already handed to machines.
DRAIN_COMMANDS_S = 10.0

_WWW_AUTHENTICATE = 'Bearer realm="carousel-gateway"'
#: CORS answers for allowed browser origins (see security.allowed_origins).
_CORS_PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}


# -- response models ------------------------------------------------------------------------

DataT = TypeVar("DataT")


class _Reply(BaseModel):
    """Reply models: every field is always sent, so the schema marks every one required."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


class Envelope(_Reply, Generic[DataT]):
    """Every JSON reply: ``success`` with ``data``, or ``error`` with a ``code``."""

    success: bool = True
    data: DataT
    error: str | None = None
    code: ErrorCode | None = None
    timestamp: str = Field(
        default_factory=utc_timestamp,
        description="UTC, ISO 8601 with milliseconds",
        examples=["2025-01-27T10:30:00.000Z"],
    )


class MachineEnvelope(Envelope[DataT], Generic[DataT]):
    machine_id: str


class MachineEntry(MachineInfo):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    status: str = Field(description="Connection state of the gateway's link to the PLC")


class MoveOutcome(_Reply):
    """How a move ended: arrived at its target, or failed (and why)."""

    state: Literal["arrived", "failed"]
    command_id: int
    target: int
    position: int | None = Field(description="Where the carousel stood at the end")
    reason: str | None = Field(None, description="Main reason of a failure")
    reasons: list[str] = Field(
        default_factory=list, description="Every reason: fault keys, timeout, connection_lost..."
    )
    duration_s: float
    timestamp: str


class CommandData(_Reply):
    command_sent: int
    argument: int | None
    result: str
    skipped: bool = Field(description="True when the carousel already stood there: not sent")
    command_id: int
    outcome: MoveOutcome | None = Field(
        None, description="With wait=arrival: how the move ended (null without it)"
    )


class ErrorData(_Reply):
    reasons: list[str] = Field(
        default_factory=list, description="Status keys or reasons behind BUSY/MACHINE_NOT_READY"
    )
    command: CommandData | None = Field(
        None, description="The command, when it was sent but its move did not arrive"
    )


class ErrorResponse(Envelope[ErrorData]):
    """Any error. ``code`` is null only for HTTP-level errors (unknown path, bad method)."""

    success: bool = False
    error: str
    machine_id: str | None = None


class ConnectionDiagnostics(_Reply):
    host: str
    port: int
    state: ConnectionState
    connected_since: str | None
    reconnects: int
    last_error: str | None
    latency_p50_s: float | None = Field(description="Over the recent requests to the PLC")
    latency_p99_s: float | None
    latency_samples: int
    bad_replies: int = Field(description="Replies ignored (position outside the machine)")


class Interlock(_Reply):
    key: str
    text: str


class Refusal(_Reply):
    """Why a move would be refused right now."""

    code: ErrorCode
    message: str
    reasons: list[str]


class TelemetryDiagnostics(_Reply):
    """Where status and position come from (Modbus machines can fall back to port 3200)."""

    configured: Literal["port3200", "modbus"]
    source: str = Field(description="The source in use now: modbus or port3200")
    fallbacks: int
    modbus_state: str | None
    modbus_last_error: str | None
    registers: dict[str, int] | None = Field(description="Raw registers of the last Modbus read")
    position_desync: dict[str, int] | None = Field(
        description="Idle with the latched target (D2) not at the position (D0): a warning"
    )


class MachineDiagnostics(_Reply):
    connection: ConnectionDiagnostics
    state: MachineState
    faults: list[str] = Field(description="Active fault keys, in bit order")
    interlocks: list[Interlock] = Field(description="Every status bit that blocks a move now")
    move_refusal: Refusal | None = Field(description="Null when a move would be accepted now")
    busy: bool
    active_target: int | None
    last_move: MoveOutcome | None
    telemetry: TelemetryDiagnostics
    counters: dict[str, float] | None = Field(
        description="Maintenance counters from the journal (null when it is disabled)"
    )


class HistoryData(_Reply):
    entries: list[HistoryEntry]
    next_cursor: int | None = Field(description="Pass as `cursor` for the next, older page")


class JournalHealth(_Reply):
    state: Literal["ok", "degraded", "disabled"]
    dropped: int = Field(description="Records the journal could not write so far")
    pending: int
    last_error: str | None


class HealthData(_Reply):
    status: Literal["healthy", "degraded", "critical"] = Field(
        description="healthy: every PLC connected; critical: none; degraded: some"
    )
    version: str
    machines: dict[str, ConnectionState]
    journal: JournalHealth


class ReadyData(_Reply):
    ready: bool


class FaultData(_Reply):
    fault: SimulatorFault
    active: bool
    faults: list[SimulatorFault] = Field(description="Every fault now active on the simulator")
    status_byte: int = Field(description="The simulator's status byte now")


class LinkData(_Reply):
    action: SimulatorLinkAction
    stalled: bool
    session_open: bool


class MachinesResponse(Envelope[list[MachineEntry]]):
    pass


class MachineStatusResponse(MachineEnvelope[MachineState]):
    pass


class CommandResponse(MachineEnvelope[CommandData]):
    pass


class DiagnosticsResponse(MachineEnvelope[MachineDiagnostics]):
    pass


class HealthResponse(Envelope[HealthData]):
    pass


class HistoryResponse(Envelope[HistoryData]):
    machine_id: str | None = None


class ReadyResponse(Envelope[ReadyData]):
    pass


class FaultResponse(MachineEnvelope[FaultData]):
    pass


class LinkResponse(MachineEnvelope[LinkData]):
    pass


# -- request models -------------------------------------------------------------------------

WaitMode = Literal["arrival"]
_WAIT_TEXT = (
    '"arrival": hold the reply until the move arrives or fails (bounded by the machine\'s '
    "move_timeout_s) and return its outcome"
)


class CommandRequest(BaseModel):
    """A command as in the WebSocket ``send_command``. Values are judged by the machine.
    Like every request body, a key it does not know is refused (400, naming the key)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"command": 1, "argument": 25}]}
    )

    command: StrictInt = Field(
        ge=0, le=255, description="0 STATUS, 1 MOVE (others only where the machine allows)"
    )
    argument: StrictInt | None = Field(
        None, ge=0, le=256, description="For MOVE: the target position (1..positions)"
    )
    wait: WaitMode | None = Field(None, description=_WAIT_TEXT)


class ShortcutCommandRequest(CommandRequest):
    """``POST /v1/command``: the machine is named in the body, and may be left out only when
    the gateway has exactly one machine."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"machine_id": "machine_1", "command": 1, "argument": 25}]},
    )

    machine_id: str | None = Field(
        None, max_length=128, description="The machine; required unless the gateway has exactly one"
    )


class MoveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"position": 7}]})

    position: StrictInt = Field(
        ge=0, le=256, description="Target position, in the machine's numbering (1..positions)"
    )
    wait: WaitMode | None = Field(None, description=_WAIT_TEXT)


class FaultRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"fault": "emergency_stop", "active": True}]},
    )

    fault: SimulatorFault
    active: StrictBool


class LinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"action": "drop"}]})

    action: SimulatorLinkAction


# -- errors ----------------------------------------------------------------------------------


def error_response(
    error: GatewayError,
    *,
    status: int | None = None,
    data: ErrorData | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The one place a :class:`GatewayError` becomes an HTTP reply."""
    if data is None:
        data = ErrorData(reasons=list(error.reasons))
    body = ErrorResponse(
        data=data, error=error.message, code=error.code, machine_id=error.machine_id
    )
    all_headers = dict(headers) if headers else {}
    if error.retry_after_s is not None:
        all_headers.setdefault("Retry-After", str(max(1, math.ceil(error.retry_after_s))))
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=status or http_status(error.code),
        headers=all_headers or None,
    )


#: Body fields whose values the machine judges, so a bad one is INVALID_COMMAND (as in the
#: WebSocket API); anything else wrong with a request is INVALID_MESSAGE_FORMAT.
_COMMAND_FIELDS = frozenset({"command", "argument", "position"})


def _invalid_request(exc: RequestValidationError, machine_id: str | None) -> GatewayError:
    errors = list(exc.errors())

    def on_command_field(error: Mapping[str, Any]) -> bool:
        loc = tuple(error.get("loc", ()))
        return len(loc) >= 2 and loc[0] == "body" and loc[1] in _COMMAND_FIELDS

    code = (
        ErrorCode.INVALID_COMMAND
        if errors and all(on_command_field(e) for e in errors)
        else ErrorCode.INVALID_MESSAGE_FORMAT
    )
    parts = []
    for error in errors[:3]:
        loc = [str(p) for p in error.get("loc", ())]
        where = ".".join(loc[1:]) if len(loc) > 1 and loc[0] == "body" else ".".join(loc)
        text = "unknown key" if error.get("type") == "extra_forbidden" else error.get("msg")
        parts.append(f"{where or 'body'}: {text or 'invalid'}")
    return GatewayError(code, "invalid request: " + "; ".join(parts), machine_id=machine_id)


def _machine_id_of(request: Request) -> str | None:
    value = request.path_params.get("machine_id")
    return value if isinstance(value, str) and len(value) <= 128 else None


async def _on_gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(_invalid_request(exc, _machine_id_of(request)))


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown path, method not allowed, unparsable body)."""
    assert isinstance(exc, StarletteHTTPException)
    code = ErrorCode.INVALID_MESSAGE_FORMAT if exc.status_code in (400, 413) else None
    try:
        text = HTTPStatus(exc.status_code).phrase
    except ValueError:
        text = "HTTP error"
    detail = exc.detail if isinstance(exc.detail, str) else text
    body = ErrorResponse(data=ErrorData(), error=detail, code=code)
    return JSONResponse(
        body.model_dump(mode="json"), status_code=exc.status_code, headers=exc.headers
    )


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # Starlette re-raises after this reply, so uvicorn logs the traceback.
    internal = GatewayError(
        ErrorCode.INTERNAL_ERROR,
        "internal error; see gateway log",
        machine_id=_machine_id_of(request),
    )
    return error_response(internal)


# -- the API's state -------------------------------------------------------------------------


class RestApi:
    """What the endpoints share: the fleet, the simulators, auth, metrics, readiness."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        simulators: Mapping[str, SimulatorControl],
        authenticator: Authenticator,
        websocket: WebSocketApi | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        rate_limiter: RateLimiter | None = None,
        journal: Journal | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.fleet = fleet
        self.journal = journal
        self.simulators = simulators
        self.authenticator = authenticator
        self.websocket = websocket
        self.max_body_bytes = max_body_bytes
        #: Origins, lockouts, per-machine command rates (shared with the WebSocket API).
        if guard is None:
            guard = websocket.guard if websocket is not None else Guard()
        self.guard = guard
        limits = guard.limits
        self.limiter = rate_limiter or RateLimiter(
            limits.http_writes_per_second, limits.http_write_burst
        )
        #: Commands handed to machines (they run to the end; stop() waits for them).
        self.commands: set[asyncio.Future[ExecutedCommand]] = set()
        self.metrics = GatewayMetrics(fleet, websocket, guard=guard)
        #: True while the servers are up (set by :class:`HttpServer`).
        self.ready = False
        self._closing = asyncio.Event()

    def close(self) -> None:
        """Stop answering as ready and release requests waiting for a move's outcome."""
        self.ready = False
        self._closing.set()
        self.metrics.close()

    def simulator(self, machine_id: str) -> tuple[Machine, SimulatorControl]:
        machine = self.fleet.get(machine_id)
        server = self.simulators.get(machine.id)
        if machine.config.kind != "simulator" or server is None:
            raise GatewayError(
                ErrorCode.MACHINE_NOT_FOUND,
                f"{machine.id} is not a simulator embedded in this gateway",
                machine_id=machine.id,
            )
        return machine, server

    async def run_command(
        self,
        machine: Machine,
        command: int,
        argument: int | None,
        identity: Identity,
        *,
        wait: bool,
    ) -> CommandResponse | JSONResponse:
        origin = Origin(client=identity.client, channel=OriginChannel.REST)
        # Before the machine sees it: a flood must not reach the PLC nor the journal.
        self.guard.check_machine_command(HTTP, machine.id)
        # Shielded: once handed to the machine, a command runs to the end (sent at most
        # once, journalled) even if the client goes away or the server stops.
        execution = asyncio.ensure_future(machine.execute(command, argument, origin))
        self.commands.add(execution)
        execution.add_done_callback(self.commands.discard)
        execution.add_done_callback(_retrieve)
        executed = await asyncio.shield(execution)
        data = _command_data(executed.accepted)
        if not wait or command != Command.MOVE:
            return CommandResponse(machine_id=machine.id, data=data)
        try:
            outcome = await self._outcome(machine, executed)
        except GatewayError as exc:
            return error_response(exc, data=ErrorData(reasons=list(exc.reasons), command=data))
        data = data.model_copy(update={"outcome": _move_outcome(outcome, executed.accepted)})
        if isinstance(outcome, MoveFailed):
            code = _failure_code(outcome.reasons)
            failure = GatewayError(
                code,
                f"move of {machine.id} to position {outcome.target} failed: "
                f"{main_reason(outcome.reasons)}",
                machine_id=machine.id,
                reasons=outcome.reasons,
            )
            return error_response(
                failure, data=ErrorData(reasons=list(outcome.reasons), command=data)
            )
        return CommandResponse(machine_id=machine.id, data=data)

    async def _outcome(
        self, machine: Machine, executed: ExecutedCommand
    ) -> MoveCompleted | MoveFailed | None:
        """The move's outcome (None: skipped, already there), waited for within a bound."""
        future = executed.outcome
        if future is None:
            return None
        config = machine.config
        # The machine ends a move itself after move_timeout_s (judged at its next reading);
        # the margin lets that verdict, with its reason, arrive before this bound.
        bound = config.move_timeout_s + config.request_timeout_s + config.poll_active_s
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait(
                {future, closing}, timeout=bound, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            closing.cancel()
        if future.done() and not future.cancelled():
            return future.result()
        if self._closing.is_set() or future.cancelled():
            raise GatewayError(
                ErrorCode.CONNECTION_ERROR,
                "the gateway is shutting down; the move's outcome is unknown",
                machine_id=machine.id,
            )
        raise GatewayError(
            ErrorCode.PLC_TIMEOUT,
            f"no outcome for the move within {bound:g} s",
            machine_id=machine.id,
            reasons=(FailReason.TIMEOUT.value,),
        )


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark an orphaned command's outcome as seen (its request may be gone)."""
    if not future.cancelled():
        future.exception()


def _failure_code(reasons: Sequence[str]) -> ErrorCode:
    """The table's code for a move that was sent but did not arrive."""
    if FailReason.CONNECTION_LOST.value in reasons:
        return ErrorCode.CONNECTION_ERROR
    if FailReason.TIMEOUT.value in reasons:
        return ErrorCode.PLC_TIMEOUT
    return ErrorCode.MACHINE_NOT_READY  # a fault or interlock, or stopped off target


def _command_data(accepted: CommandAccepted) -> CommandData:
    return CommandData(
        command_sent=accepted.command,
        argument=accepted.argument,
        result=accepted.result,
        skipped=accepted.skipped,
        command_id=accepted.command_id,
    )


def _move_outcome(
    event: MoveCompleted | MoveFailed | None, accepted: CommandAccepted
) -> MoveOutcome:
    """A move's outcome; ``None`` is a skipped move (the carousel already stood there)."""
    if event is None:
        target = accepted.argument if accepted.argument is not None else 0
        return MoveOutcome(
            state="arrived",
            command_id=accepted.command_id,
            target=target,
            position=target,
            duration_s=0.0,
            timestamp=utc_timestamp(accepted.at),
        )
    return _outcome_of(event)


def _outcome_of(event: MoveCompleted | MoveFailed) -> MoveOutcome:
    if isinstance(event, MoveCompleted):
        return MoveOutcome(
            state="arrived",
            command_id=event.command_id,
            target=event.position,
            position=event.position,
            duration_s=round(event.duration_s, 3),
            timestamp=utc_timestamp(event.at),
        )
    return MoveOutcome(
        state="failed",
        command_id=event.command_id,
        target=event.target,
        position=event.position,
        reason=main_reason(event.reasons),
        reasons=list(event.reasons),
        duration_s=round(event.duration_s, 3),
        timestamp=utc_timestamp(event.at),
    )


def _percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return round(sorted_values[rank - 1], 6)


def _telemetry(machine: Machine) -> TelemetryDiagnostics:
    modbus = machine.modbus
    reading = None if modbus is None else modbus.last_reading
    desync = machine.position_desync
    return TelemetryDiagnostics(
        configured=machine.config.telemetry,
        source=machine.telemetry_source.value,
        fallbacks=machine.telemetry_fallbacks,
        modbus_state=None if modbus is None else modbus.state.value,
        modbus_last_error=None if modbus is None else modbus.last_error,
        registers=None if reading is None else {f"D{k}": v for k, v in reading.registers},
        position_desync=(
            None if desync is None else {"position": desync.position, "target": desync.target}
        ),
    )


def _diagnostics(machine: Machine, counters: dict[str, float] | None) -> MachineDiagnostics:
    connection = machine.connection
    snapshot = machine.snapshot
    latencies = sorted(connection.latencies_s)
    status = snapshot.status
    refusal: Refusal | None = None
    try:
        machine.check_free()  # a command in flight, a move, or one whose outcome is unknown
        machine.check_interlocks(snapshot)
    except GatewayError as exc:
        refusal = Refusal(code=exc.code, message=exc.message, reasons=list(exc.reasons))
    last = machine.last_outcome
    return MachineDiagnostics(
        connection=ConnectionDiagnostics(
            host=connection.settings.host,
            port=connection.settings.port,
            state=connection.state,
            connected_since=(
                None
                if connection.connected_since is None
                else utc_timestamp(connection.connected_since)
            ),
            reconnects=connection.reconnects,
            last_error=connection.last_error,
            latency_p50_s=_percentile(latencies, 0.50),
            latency_p99_s=_percentile(latencies, 0.99),
            latency_samples=len(latencies),
            bad_replies=machine.bad_replies + connection.bad_replies,
        ),
        state=machine_state(snapshot),
        faults=[] if status is None else [key.value for key in status.faults()],
        interlocks=(
            []
            if status is None
            else [Interlock(key=b.key.value, text=b.text) for b in status.blockers()]
        ),
        move_refusal=refusal,
        busy=machine.busy,
        active_target=machine.active_target,
        last_move=None if last is None else _outcome_of(last),
        telemetry=_telemetry(machine),
        counters=counters,
    )


# -- the gatekeeper: auth, roles, rate limit, body size ----------------------------------------


class Gatekeeper:
    """Pure ASGI middleware deciding 403/429/401/403/429/413 before any parsing."""

    def __init__(self, app: ASGIApp, api: RestApi) -> None:
        self.app = app
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = self.api
        headers = Headers(scope=scope)
        method: str = scope["method"]
        path: str = scope["path"]
        client = scope.get("client")
        peer = str(client[0]) if client else "unknown"
        try:
            api.guard.check_host(HTTP, headers.get("host"))
        except GatewayError as exc:
            log.warning("HTTP request from %s refused: Host %r not allowed", peer, headers["host"])
            await error_response(exc)(scope, receive, send)
            return
        origin = headers.get("origin")
        if not api.guard.origins.allows(origin, headers.get("host")):
            log.warning("HTTP request from %s refused: origin %r not allowed", peer, origin)
            refused = error_response(
                api.guard.refuse(
                    HTTP, ErrorCode.ORIGIN_NOT_ALLOWED, "this page's origin may not use the gateway"
                )
            )
            await refused(scope, receive, send)
            return
        if origin is not None:
            send = _with_cors(send, origin)
            if method == "OPTIONS" and "access-control-request-method" in headers:
                await Response(status_code=204, headers=_CORS_PREFLIGHT)(scope, receive, send)
                return
        query = scope.get("query_string", b"").decode("latin-1")
        target = f"{path}?{query}" if query else path
        token = token_from(headers.get("authorization"), target)
        identity = api.authenticator.identify(token, peer)
        if not _is_open(path):
            refused = self._refusal(identity, method, peer, token_given=bool(token))
            if refused is not None:
                await refused(scope, receive, send)
                return
        scope.setdefault("state", {})["identity"] = identity
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > api.max_body_bytes:
            await self._refuse_body(scope, receive, send, more=True, declared=int(declared))
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            body.extend(message.get("body", b""))
            if len(body) > api.max_body_bytes:
                more = message.get("more_body", False)
                await self._refuse_body(scope, receive, send, more=more)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    def _refusal(
        self, identity: Identity | None, method: str, peer: str, *, token_given: bool
    ) -> JSONResponse | None:
        guard = self.api.guard
        if self.api.authenticator.enabled:
            try:
                guard.check_lockout(HTTP, peer)
            except GatewayError as exc:
                return error_response(exc)
        if identity is None:
            log.warning("HTTP request from %s refused: missing or invalid token", peer)
            return error_response(
                guard.auth_failed(HTTP, peer, token_given=token_given),
                headers={"WWW-Authenticate": _WWW_AUTHENTICATE},
            )
        if self.api.authenticator.enabled:
            guard.lockout.succeeded(peer)
        if method in READ_METHODS:
            return None
        if not identity.can_command:
            return error_response(
                GatewayError(
                    ErrorCode.FORBIDDEN, f"role {identity.role!r} may only read (GET requests)"
                )
            )
        retry_after = self.api.limiter.acquire(identity.client)
        if retry_after > 0:
            return error_response(
                guard.refuse(HTTP, ErrorCode.RATE_LIMITED, "too many requests; slow down"),
                headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
            )
        return None

    async def _refuse_body(
        self, scope: Scope, receive: Receive, send: Send, *, more: bool, declared: int | None = None
    ) -> None:
        """Answer 413 once the rest of the body is read and dropped.

        Replying while the client is still sending would make closing the connection reset
        it before the client reads the reply. A body past ``DRAIN_LIMIT_BYTES`` is not worth
        reading: the reply then closes the connection.
        """
        drained = 0
        if declared is None or declared <= DRAIN_LIMIT_BYTES:
            while more and drained <= DRAIN_LIMIT_BYTES:
                message = await receive()
                if message["type"] != "http.request":
                    return
                drained += len(message.get("body", b""))
                more = message.get("more_body", False)
        error = self.api.guard.refuse(
            HTTP, ErrorCode.PAYLOAD_TOO_LARGE, f"request body over {self.api.max_body_bytes} bytes"
        )
        headers = {"Connection": "close"} if more else None
        await error_response(error, headers=headers)(scope, receive, send)


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES) or dashboard.is_open(path)


def _with_cors(send: Send, origin: str) -> Send:
    """A ``send`` that lets the (allowed) origin read the response."""

    async def cors_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers += [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-expose-headers", b"Retry-After"),
                (b"vary", b"Origin"),
            ]
            message = {**message, "headers": headers}
        await send(message)

    return cors_send


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the already-read body once, then the real channel."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# -- endpoints -------------------------------------------------------------------------------


async def _api(request: Request) -> RestApi:
    api = request.app.state.api
    assert isinstance(api, RestApi)
    return api


async def _identity(request: Request) -> Identity:
    identity = getattr(request.state, "identity", None)
    if isinstance(identity, Identity):
        return identity
    client = request.client
    return Identity(client=client.host if client else "unknown", role="viewer")


ApiDep = Annotated[RestApi, Depends(_api)]
IdentityDep = Annotated[Identity, Depends(_identity)]
MachineId = Annotated[str, Path(description="A machine id, as listed by GET /v1/machines")]
WaitQuery = Annotated[WaitMode | None, Query(description=_WAIT_TEXT)]


async def _machine(api: ApiDep, machine_id: MachineId) -> Machine:
    return api.fleet.get(machine_id)


MachineDep = Annotated[Machine, Depends(_machine)]

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token, when the gateway has tokens configured "
    "(viewer: GET only; operator: GET and POST)",
)
_query_token = APIKeyQuery(
    name="token", auto_error=False, description="The same token as a query parameter"
)


#: Refusals any path can give, before the endpoint is reached (the gatekeeper's).
_EDGE_ERRORS = {
    400: "HOST_NOT_ALLOWED: the request's Host is not a name the gateway answers to",
    403: "ORIGIN_NOT_ALLOWED: a browser page from an origin that is not allowed",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error replies an endpoint can give (all one envelope): its
    own ``statuses`` and the refusals of any path."""
    texts = {
        400: "Bad body or parameters: INVALID_MESSAGE_FORMAT, or INVALID_COMMAND",
        401: "UNAUTHORIZED: missing or invalid token (when tokens are configured)",
        403: "FORBIDDEN: the token's role may not do this",
        404: "MACHINE_NOT_FOUND",
        409: "BUSY or MACHINE_NOT_READY, with data.reasons",
        413: "PAYLOAD_TOO_LARGE: the body is over the limit",
        429: "RATE_LIMITED, MACHINE_RATE_LIMITED or AUTH_LOCKED_OUT (see Retry-After)",
        503: "CONNECTION_ERROR: the PLC is not connected (JOURNAL_UNAVAILABLE for history)",
        504: "PLC_TIMEOUT: the PLC did not answer (the command was not retried)",
    }
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, *_EDGE_ERRORS}):
        parts = [texts[status]] if status in statuses else []
        if status in _EDGE_ERRORS:
            parts.append(_EDGE_ERRORS[status])
        responses[status] = {"model": ErrorResponse, "description": "; ".join(parts)}
    responses["default"] = {"model": ErrorResponse, "description": "Any other error"}
    return responses


_READ_ERRORS = (401,)
_MACHINE_READ_ERRORS = (401, 404)
_HISTORY_ERRORS = (400, 401, 404, 503)
_COMMAND_ERRORS = (400, 401, 403, 404, 409, 413, 429, 503, 504)
_SIMULATOR_ERRORS = (400, 401, 403, 404, 413, 429)
#: For the open endpoints: no token needed (the API's own security schemes do not apply).
_OPEN = {"security": []}

#: Operation groups in the OpenAPI document and on /docs.
TAGS = [
    {"name": "Machines", "description": "The configured machines and their live state"},
    {"name": "Commands", "description": "Commands and moves (operator role)"},
    {"name": "Journal", "description": "What happened: commands with their outcome, events"},
    {"name": "Simulators", "description": "Fault and link controls of embedded simulators"},
    {"name": "Operations", "description": "Liveness, readiness and metrics (no token needed)"},
]

router = APIRouter(dependencies=[Security(_bearer), Security(_query_token)])
open_router = APIRouter()


@router.get(
    "/v1/machines",
    response_model=MachinesResponse,
    responses=_errors(*_READ_ERRORS),
    summary="Every configured machine",
    tags=["Machines"],
)
async def list_machines(api: ApiDep) -> MachinesResponse:
    """Every machine with its id, PLC address, kind, link state and position range: what a
    WMS needs to map its locations to machine ids and bucket numbers."""
    entries = [
        MachineEntry(
            id=m.id,
            name=m.config.name,
            ip=m.config.host,
            port=m.connection.settings.port,
            type="Simulator" if m.config.kind == "simulator" else "Real PLC",
            status=m.snapshot.connection.value,
            description=m.config.description,
            positions=m.config.positions,
            position_base=m.config.position_base,
        )
        for m in api.fleet
    ]
    return MachinesResponse(data=entries)


@router.get(
    "/v1/machines/{machine_id}/status",
    response_model=MachineStatusResponse,
    responses=_errors(*_MACHINE_READ_ERRORS),
    summary="A machine's live state (from its latest reading; never waits on the PLC)",
    tags=["Machines"],
)
async def machine_status(machine: MachineDep) -> MachineStatusResponse:
    """The 8 labelled status bits, the position and the link state from the machine's latest
    reading, so a read never waits on the PLC; `status`, `position` and `raw_status` are
    null until a first reading."""
    return MachineStatusResponse(machine_id=machine.id, data=machine_state(machine.snapshot))


@router.post(
    "/v1/machines/{machine_id}/command",
    response_model=CommandResponse,
    responses=_errors(*_COMMAND_ERRORS),
    summary="Send a command (1 = MOVE to `argument`), optionally waiting for arrival",
    tags=["Commands"],
)
async def machine_command(
    api: ApiDep,
    identity: IdentityDep,
    machine: MachineDep,
    body: CommandRequest,
    wait: WaitQuery = None,
) -> CommandResponse | JSONResponse:
    """The command as in the WebSocket `send_command`: interlocks are judged on a fresh
    reading, a move to where the carousel stands is skipped, and nothing is ever retried.
    With `wait=arrival` the reply holds until the move arrives or fails."""
    return await api.run_command(
        machine, body.command, body.argument, identity, wait=_waits(body.wait, wait)
    )


@router.post(
    "/v1/machines/{machine_id}/move",
    response_model=CommandResponse,
    responses=_errors(*_COMMAND_ERRORS),
    summary="Move to a position (the same as command 1)",
    tags=["Commands"],
)
async def machine_move(
    api: ApiDep,
    identity: IdentityDep,
    machine: MachineDep,
    body: MoveRequest,
    wait: WaitQuery = None,
) -> CommandResponse | JSONResponse:
    """A MOVE by position, for clients that do not speak command numbers; the same checks
    and outcome as command 1."""
    return await api.run_command(
        machine, Command.MOVE, body.position, identity, wait=_waits(body.wait, wait)
    )


@router.get(
    "/v1/machines/{machine_id}/diagnostics",
    response_model=DiagnosticsResponse,
    responses=_errors(*_MACHINE_READ_ERRORS),
    summary="Link details, decoded status with every fault and interlock, the last move",
    tags=["Machines"],
)
async def machine_diagnostics(api: ApiDep, machine: MachineDep) -> DiagnosticsResponse:
    """Everything a technician asks first: the link (latency, reconnects, last error), every
    active fault and interlock, why a move would be refused now, the last move, where
    telemetry comes from, and the maintenance counters."""
    counters = None
    if api.journal is not None:
        counters = (await api.journal.counters(machine.id)).get(machine.id, {})
    return DiagnosticsResponse(machine_id=machine.id, data=_diagnostics(machine, counters))


_HISTORY_KINDS = ", ".join(KINDS)
SinceQuery = Annotated[IsoDateTime | None, Query(description="Only entries at or after (ISO 8601)")]
UntilQuery = Annotated[
    IsoDateTime | None, Query(description="Only entries at or before (ISO 8601)")
]
KindsQuery = Annotated[
    list[HistoryKind] | None,
    Query(description=f"Only these kinds (repeat the parameter): {_HISTORY_KINDS}"),
]
LimitQuery = Annotated[int, Query(ge=1, le=1000, description="Entries per page (newest first)")]
CursorQuery = Annotated[
    int | None, Query(ge=1, le=2**62, description="next_cursor of the previous page")
]


async def _history(
    api: RestApi,
    machine_id: str | None,
    since: datetime | None,
    until: datetime | None,
    kinds: list[str] | None,
    limit: int,
    cursor: int | None,
) -> HistoryResponse:
    if api.journal is None:
        raise GatewayError(ErrorCode.JOURNAL_UNAVAILABLE, "the journal is disabled")
    page = await api.journal.history(
        machine_id,
        since=epoch_seconds(since),
        until=epoch_seconds(until),
        kinds=kinds,
        limit=limit,
        cursor=cursor,
    )
    return HistoryResponse(
        machine_id=machine_id,
        data=HistoryData(
            entries=[history_entry(row) for row in page.rows], next_cursor=page.next_cursor
        ),
    )


@router.get(
    "/v1/machines/{machine_id}/history",
    response_model=HistoryResponse,
    responses=_errors(*_HISTORY_ERRORS),
    summary="A machine's journal: commands (who, what, outcome) and events, newest first",
    tags=["Journal"],
)
async def machine_history(
    api: ApiDep,
    machine: MachineDep,
    since: SinceQuery = None,
    until: UntilQuery = None,
    kinds: KindsQuery = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> HistoryResponse:
    """Pages of the machine's journal, newest first, filtered by time and kind; pass
    `next_cursor` back as `cursor` for the next, older page."""
    return await _history(api, machine.id, since, until, kinds, limit, cursor)


@router.get(
    "/v1/events",
    response_model=HistoryResponse,
    responses=_errors(*(s for s in _HISTORY_ERRORS if s != 404)),
    summary="Every machine's journal, newest first (same filters as a machine's history)",
    tags=["Journal"],
)
async def all_events(
    api: ApiDep,
    since: SinceQuery = None,
    until: UntilQuery = None,
    kinds: KindsQuery = None,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> HistoryResponse:
    """The journal of the whole fleet in one feed, for audits and shift reports."""
    return await _history(api, None, since, until, kinds, limit, cursor)


def _named_or_only(fleet: Fleet, machine_id: str | None) -> Machine:
    """The machine a shortcut acts on: the one named, else the gateway's only machine.
    Never "the first of several": a client that names none must not move the wrong one."""
    if machine_id is not None:
        return fleet.get(machine_id)
    if len(fleet) == 1:
        return fleet.first
    shown = ", ".join(fleet.ids[:10]) + (", ..." if len(fleet) > 10 else "")
    raise GatewayError(
        ErrorCode.INVALID_MESSAGE_FORMAT,
        f"machine_id is required: this gateway has {len(fleet)} machines ({shown})",
    )


ShortcutMachineQuery = Annotated[
    str | None,
    Query(max_length=128, description="The machine; required unless the gateway has exactly one"),
]


@router.get(
    "/v1/status",
    response_model=MachineStatusResponse,
    responses=_errors(400, *_MACHINE_READ_ERRORS),
    summary="Shortcut: a machine's status (`machine_id` may be left out with one machine)",
    tags=["Machines"],
)
async def first_status(
    api: ApiDep, machine_id: ShortcutMachineQuery = None
) -> MachineStatusResponse:
    """A machine's status by query parameter; on a gateway with one carousel the id may be
    left out. With several, ``machine_id`` is required (never "the first machine")."""
    machine = _named_or_only(api.fleet, machine_id)
    return MachineStatusResponse(machine_id=machine.id, data=machine_state(machine.snapshot))


@router.post(
    "/v1/command",
    response_model=CommandResponse,
    responses=_errors(*_COMMAND_ERRORS),
    summary="Shortcut: a command to the machine in the body (left out with one machine)",
    tags=["Commands"],
)
async def first_command(
    api: ApiDep, identity: IdentityDep, body: ShortcutCommandRequest, wait: WaitQuery = None
) -> CommandResponse | JSONResponse:
    """A command to the machine the body names; on a gateway with one carousel the id may
    be left out. With several, ``machine_id`` is required (never "the first machine")."""
    machine = _named_or_only(api.fleet, body.machine_id)
    return await api.run_command(
        machine, body.command, body.argument, identity, wait=_waits(body.wait, wait)
    )


@router.post(
    "/v1/simulators/{machine_id}/faults",
    response_model=FaultResponse,
    responses=_errors(*_SIMULATOR_ERRORS),
    summary="Raise or clear a fault on an embedded simulator (as a real one would)",
    tags=["Simulators"],
)
async def simulator_fault(
    api: ApiDep, machine_id: MachineId, body: FaultRequest, identity: IdentityDep
) -> FaultResponse:
    """To rehearse a WMS's error handling without hardware: the fault is set on the simulated
    PLC, and the gateway sees it at its next poll as it would see a real one."""
    machine, server = api.simulator(machine_id)
    server.set_fault(body.fault, body.active)
    log.warning(
        "%s simulator fault %s %s by %s",
        machine.id,
        body.fault.value,
        "raised" if body.active else "cleared",
        identity.client,
    )
    data = FaultData(
        fault=body.fault,
        active=body.active,
        faults=server.active_faults(),
        status_byte=server.status_byte(),
    )
    return FaultResponse(machine_id=machine.id, data=data)


@router.post(
    "/v1/simulators/{machine_id}/link",
    response_model=LinkResponse,
    responses=_errors(*_SIMULATOR_ERRORS),
    summary="Drop the simulator's PLC link, stall it (no replies), or resume it",
    tags=["Simulators"],
)
async def simulator_link(
    api: ApiDep, machine_id: MachineId, body: LinkRequest, identity: IdentityDep
) -> LinkResponse:
    """To rehearse lost and silent PLC links: `drop` closes the connection (the gateway
    reconnects), `stall` stops answering (requests time out), `resume` answers again."""
    machine, server = api.simulator(machine_id)
    server.link(body.action)
    log.warning("%s simulator link %s by %s", machine.id, body.action.value, identity.client)
    data = LinkData(action=body.action, stalled=server.stalled, session_open=server.session_open)
    return LinkResponse(machine_id=machine.id, data=data)


@open_router.get(
    "/v1/health",
    response_model=HealthResponse,
    responses=_errors(),
    summary="Liveness (always 200 while the process serves) and every PLC link's state",
    tags=["Operations"],
    openapi_extra=_OPEN,
)
async def health(api: ApiDep) -> HealthResponse:
    """For liveness probes and monitoring: 200 while the process serves, with `healthy`,
    `degraded` or `critical` by how many PLC links are up, and the journal's state."""
    states = {m.id: m.snapshot.connection for m in api.fleet}
    connected = sum(state is ConnectionState.CONNECTED for state in states.values())
    status: Literal["healthy", "degraded", "critical"] = (
        "healthy" if connected == len(states) else "critical" if connected == 0 else "degraded"
    )
    journal = api.journal
    journal_health = JournalHealth(
        state="disabled" if journal is None else "ok" if journal.healthy else "degraded",
        dropped=0 if journal is None else journal.dropped,
        pending=0 if journal is None else journal.pending,
        last_error=None if journal is None else journal.last_error,
    )
    return HealthResponse(
        data=HealthData(status=status, version=__version__, machines=states, journal=journal_health)
    )


@open_router.get(
    "/v1/ready",
    response_model=ReadyResponse,
    responses={
        **_errors(),
        503: {"model": ErrorResponse, "description": "Starting or shutting down"},
    },
    summary="Readiness: 200 only while the WebSocket and HTTP servers are up",
    tags=["Operations"],
    openapi_extra=_OPEN,
)
async def ready(api: ApiDep) -> ReadyResponse | JSONResponse:
    """For load balancers: a PLC link down does not make the gateway unready, since it can
    still serve the last known states."""
    if not api.ready:
        return error_response(GatewayError(ErrorCode.CONNECTION_ERROR, "the gateway is not ready"))
    return ReadyResponse(data=ReadyData(ready=True))


@open_router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={**_errors(), 200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics (text exposition format)",
    tags=["Operations"],
    openapi_extra=_OPEN,
)
async def metrics(api: ApiDep) -> Response:
    """For Prometheus: machines, PLC requests, commands, moves, sessions and refusals (the
    list is in docs/rest-api.md)."""
    return Response(content=api.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _waits(in_body: WaitMode | None, in_query: WaitMode | None) -> bool:
    return in_body == "arrival" or in_query == "arrival"


# -- the app and its server ----------------------------------------------------------------


def create_app(
    fleet: Fleet,
    *,
    simulators: Mapping[str, SimulatorControl],
    authenticator: Authenticator,
    websocket: WebSocketApi | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    rate_limiter: RateLimiter | None = None,
    journal: Journal | None = None,
    guard: Guard | None = None,
) -> FastAPI:
    """The REST API over a fleet. ``websocket`` (a WebSocketApi) adds its metrics and,
    unless ``guard`` is given, shares its limits."""
    api = RestApi(
        fleet,
        simulators=simulators,
        authenticator=authenticator,
        websocket=websocket,
        max_body_bytes=max_body_bytes,
        rate_limiter=rate_limiter,
        journal=journal,
        guard=guard,
    )
    # Swagger UI's files come from the package (fastapi-offline): plant networks have no
    # internet, so the usual CDN would leave /docs blank.
    app = FastAPIOffline(
        title="carousel-gateway REST API",
        version=__version__,
        description=(
            "One-off operations on vertical storage carousels: status, commands, moves "
            "(optionally waiting for arrival), diagnostics, health and simulator controls. "
            "Every JSON reply has the envelope {success, data, error, code, timestamp}."
        ),
        contact={"name": "carousel-gateway maintainers"},
        license_info={"name": "Proprietary", "identifier": "LicenseRef-Proprietary"},
        servers=[{"url": "/", "description": "This gateway (the server serving this document)"}],
        openapi_tags=TAGS,
        docs_url=DOCS_PAGES[0],
        redoc_url=None,
        openapi_url="/openapi.json",
        static_url=DOCS_ASSETS,
        favicon_url=dashboard.FAVICON_URL,
        # No online validator badge (it would load an image from the internet).
        swagger_ui_parameters={"validatorUrl": None},
    )
    assert app.swagger_ui_oauth2_redirect_url == DOCS_PAGES[1]
    app.state.api = api
    app.include_router(router)
    app.include_router(open_router)
    dashboard.install(app)
    app.add_exception_handler(GatewayError, _on_gateway_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
    # Inside the gatekeeper (its refusals are small); /openapi.json, /metrics and Swagger
    # UI's files shrink to a fraction. No endpoint streams, so nothing waits on the buffer.
    app.add_middleware(GZipMiddleware, minimum_size=500)
    app.add_middleware(Gatekeeper, api=api)
    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn in a loop it does not own: no signal handlers, and it says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()
        self.exit_requested = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the gateway handles SIGINT and SIGTERM itself

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()

    async def main_loop(self) -> None:
        # uvicorn checks should_exit every 0.1 s; here stop() wakes it at once. on_tick(0)
        # still refreshes the Date header, now once a second.
        while not await self.on_tick(0):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.exit_requested.wait()

    def request_exit(self) -> None:
        self.should_exit = True
        self.exit_requested.set()


class HttpServer:
    """Serves a FastAPI app built by :func:`create_app` with ``uvicorn.Server.serve()``."""

    def __init__(
        self, app: FastAPI, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.app = app
        self.api: RestApi = app.state.api
        self.host = host
        self.ssl_context = ssl_context
        self._requested_port = port
        self._port: int | None = None
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when configured as 0)."""
        assert self._port is not None, "the HTTP server is not started"
        return self._port

    async def start(self) -> None:
        install_log_redaction()  # uvicorn.access logs request targets (?token=...)
        # Binding here makes a busy port an OSError for the caller (uvicorn would exit).
        served = await edge.wrap(self.app, docs_paths=DOCS_PAGES)
        sock = _listening_socket(self.host, self._requested_port)
        config = uvicorn.Config(
            served,
            lifespan="off",
            log_config=None,  # the gateway configures logging; uvicorn.access logs at INFO
            ws="none",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            server_header=False,  # edge.py says `Server: carousel-gateway`, no versions
        )
        config.load()
        # The gateway's own TLS context (the one the WebSocket server uses too), not one
        # built by uvicorn from file names with its own cipher choice.
        config.ssl = self.ssl_context
        server = _EmbeddedServer(config)
        task = asyncio.get_running_loop().create_task(
            server.serve(sockets=[sock]), name="http-server"
        )
        listening = asyncio.ensure_future(server.listening.wait())
        await asyncio.wait({task, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not listening.done():
            listening.cancel()
            sock.close()
            task.result()  # raises what stopped it
            raise RuntimeError("the HTTP server stopped while starting")
        self._server, self._task = server, task
        self._port = sock.getsockname()[1]
        self.api.guard.origins.ports.add(self._port)
        self.api.ready = True
        scheme = "https" if self.ssl_context is not None else "http"
        log.info("REST API on %s://%s:%d", scheme, self.host, self._port)

    async def stop(self) -> None:
        """Refuse readiness, release waiting requests, let uvicorn finish open ones."""
        self.api.close()
        server, task = self._server, self._task
        self._server = self._task = None
        if server is not None and task is not None:
            server.request_exit()
            await task
        # Commands already handed to machines finish (and are journalled) before the fleet
        # and the journal stop.
        if self.api.commands:
            await asyncio.wait(set(self.api.commands), timeout=DRAIN_COMMANDS_S)


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket for uvicorn.

    Its protocol must be IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted
    sockets of that protocol, and without it every reply waits ~40 ms (Nagle + delayed ACK).
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None,
        port,
        type=socket.SOCK_STREAM,
        proto=socket.IPPROTO_TCP,
        flags=socket.AI_PASSIVE,
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
