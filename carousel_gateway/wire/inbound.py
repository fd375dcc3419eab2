"""Client → server messages, and the one parser that turns a frame into one of them.

Parsing never fails with anything but ``GatewayError(INVALID_MESSAGE_FORMAT)`` and a text
that names the bad key, so clients learn what to fix.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.wire.common import HistoryKind, SubscriptionType, json_adapter
from carousel_gateway.wire.jobs import (
    CancelJob,
    ConfirmPick,
    GetJobs,
    PauseJob,
    ResumeJob,
    SubmitJob,
)

__all__ = [
    "CLIENT_MESSAGES",
    "CLIENT_MESSAGE_TYPES",
    "AnyClientMessage",
    "ClientMessage",
    "CommandBody",
    "GetCounters",
    "GetHistory",
    "GetStatus",
    "IsoDateTime",
    "Ping",
    "SendCommand",
    "Subscribe",
    "Unsubscribe",
    "parse_client_message",
    "request_id_of",
]


class _In(BaseModel):
    """Client messages. A key a message does not know is refused (INVALID_MESSAGE_FORMAT
    naming it), so that a misspelt or invented field is never silently ignored; every key
    the spec's own messages carry is known, ``timestamp`` included."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: Annotated[str, Field(max_length=128)] | None = None
    timestamp: Any = None  # informative only; clients send many formats


class GetStatus(_In):
    type: Literal["get_status"]
    machine_id: str | None = None


class CommandBody(BaseModel):
    """The spec's nested ``command: {command, argument}``. Values are checked by the machine
    so that a bad command byte or argument is ``INVALID_COMMAND``, not a format error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: Any = None
    argument: Any = None


_COMMAND_BODY_KEYS = frozenset(CommandBody.model_fields)
_NESTED_EXTRA = "nested_extra_forbidden"


class SendCommand(_In):
    """``command`` is the spec's nested object, or (flat form) the command byte itself with
    ``argument`` beside it. Their values are left to the machine to judge; the nested
    object's keys are not: only ``command`` and ``argument``."""

    type: Literal["send_command"]
    machine_id: str
    command: Any = None
    argument: Any = None

    @field_validator("command")
    @classmethod
    def _known_command_keys(cls, value: Any) -> Any:
        """The nested form's keys are checked with the message (its values are not)."""
        if isinstance(value, dict):
            unknown = [key for key in value if key not in _COMMAND_BODY_KEYS]
            if unknown:
                raise PydanticCustomError(
                    _NESTED_EXTRA, "unknown key {key}", {"key": _shown_key(str(unknown[0]))}
                )
        return value

    def command_and_argument(self) -> tuple[Any, Any]:
        if isinstance(self.command, dict):
            body = CommandBody.model_validate(self.command)
            return body.command, body.argument
        return self.command, self.argument


WorkstationIds = Annotated[
    list[Annotated[str, Field(max_length=128)]],
    Field(max_length=1_000, description="job_events only: these workstations (default: all)"),
]


class Subscribe(_In):
    type: Literal["subscribe"]
    subscription_type: SubscriptionType
    machine_ids: Annotated[list[str], Field(max_length=10_000)] | None = None
    workstation_ids: WorkstationIds | None = None


class Unsubscribe(_In):
    type: Literal["unsubscribe"]
    subscription_type: SubscriptionType
    machine_ids: Annotated[list[str], Field(max_length=10_000)] | None = None
    workstation_ids: WorkstationIds | None = None


class Ping(_In):
    type: Literal["ping"]


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _iso_only(value: Any) -> Any:
    """Times are ISO 8601 strings; a bare number (epoch seconds?) is ambiguous: refused."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("expected an ISO 8601 date-time string, not a number")
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("expected an ISO 8601 date-time string, not a number")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]


class GetHistory(_In):
    """Journal entries, newest first; ``next_cursor`` of a reply continues to older ones."""

    type: Literal["get_history"]
    machine_id: str | None = None
    since: IsoDateTime | None = None
    until: IsoDateTime | None = None
    kinds: Annotated[list[HistoryKind], Field(max_length=50)] | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    cursor: Annotated[int, Field(ge=1, le=2**62)] | None = None


class GetCounters(_In):
    type: Literal["get_counters"]
    machine_id: str | None = None


#: Every message a client may send (the spec's and the pick jobs' ones).
AnyClientMessage = (
    GetStatus
    | SendCommand
    | Subscribe
    | Unsubscribe
    | Ping
    | GetHistory
    | GetCounters
    | SubmitJob
    | GetJobs
    | ConfirmPick
    | PauseJob
    | ResumeJob
    | CancelJob
)
ClientMessage = Annotated[AnyClientMessage, Field(discriminator="type")]
CLIENT_MESSAGE_TYPES = (
    "get_status",
    "send_command",
    "subscribe",
    "unsubscribe",
    "ping",
    "get_history",
    "get_counters",
    "submit_job",
    "get_jobs",
    "confirm_pick",
    "pause_job",
    "resume_job",
    "cancel_job",
)
_client_adapter: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
CLIENT_MESSAGES: tuple[type[BaseModel], ...] = (
    GetStatus,
    SendCommand,
    Subscribe,
    Unsubscribe,
    Ping,
    GetHistory,
    GetCounters,
    SubmitJob,
    GetJobs,
    ConfirmPick,
    PauseJob,
    ResumeJob,
    CancelJob,
)


def parse_client_message(raw: str | bytes) -> AnyClientMessage:
    """Parse one frame; raises ``GatewayError(INVALID_MESSAGE_FORMAT)`` with a clear text."""
    try:
        data = json_adapter.validate_json(raw)
    except ValidationError as exc:
        raise GatewayError(ErrorCode.INVALID_MESSAGE_FORMAT, _json_problem(exc)) from None
    if not isinstance(data, dict):
        raise GatewayError(ErrorCode.INVALID_MESSAGE_FORMAT, "message must be a JSON object")
    kind = data.get("type")
    if kind not in CLIENT_MESSAGE_TYPES:
        known = ", ".join(CLIENT_MESSAGE_TYPES)
        shown = kind if isinstance(kind, str) and len(kind) <= 64 else "(missing or invalid)"
        raise GatewayError(
            ErrorCode.INVALID_MESSAGE_FORMAT, f"unknown message type {shown!r}; known: {known}"
        )
    try:
        return _client_adapter.validate_python(data)
    except ValidationError as exc:
        raise GatewayError(ErrorCode.INVALID_MESSAGE_FORMAT, _describe(exc)) from None


_JSON_AT = re.compile(r"^(?P<what>.*) at line (?P<line>\d+) column (?P<column>\d+)$")


def _json_problem(exc: ValidationError) -> str:
    """Where and what, as REST says it: "line 1, column 15: expected value"."""
    errors = exc.errors()
    text = str((errors[0].get("ctx") or {}).get("error", "")) if errors else ""
    found = _JSON_AT.match(text)
    if found is None:
        return "message is not valid JSON" + (f": {text}" if text else "")
    return (
        f"message is not valid JSON: line {found['line']}, column {found['column']}: "
        f"{found['what']}"
    )


def request_id_of(raw: str | bytes) -> str | None:
    """Best effort: the request_id of a frame that failed validation, to echo it back."""
    try:
        data = json_adapter.validate_json(raw)
    except ValidationError:
        return None
    if isinstance(data, dict):
        value = data.get("request_id")
        if isinstance(value, str) and len(value) <= 128:
            return value
    return None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        location = ".".join(_shown_key(str(p)) for p in error["loc"][1:]) or "message"
        if error["type"] == "extra_forbidden":
            text = "unknown key"
        elif error["type"] == _NESTED_EXTRA:
            location += f".{error.get('ctx', {}).get('key')}"
            text = "unknown key"
        else:
            text = error["msg"]
        parts.append(f"{location}: {text}")
    return "invalid message: " + "; ".join(parts)


def _shown_key(key: str) -> str:
    """A client's key as shown in an error: no longer than 64 characters."""
    return key if len(key) <= 64 else key[:63] + "…"
