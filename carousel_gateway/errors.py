"""The one table of error codes, shared by the fleet and every API.

The fleet raises :class:`GatewayError` values; ``api/`` maps each code to a WebSocket
``error`` message and to an HTTP status, each in exactly one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

__all__ = [
    "ErrorCode",
    "GatewayError",
]


class ErrorCode(StrEnum):
    # The spec's codes.
    MACHINE_NOT_FOUND = "MACHINE_NOT_FOUND"
    INVALID_COMMAND = "INVALID_COMMAND"
    CONNECTION_ERROR = "CONNECTION_ERROR"
    BUSY = "BUSY"
    INVALID_MESSAGE_FORMAT = "INVALID_MESSAGE_FORMAT"
    # Ours, for what the spec leaves open.
    MACHINE_NOT_READY = "MACHINE_NOT_READY"  # a safety interlock forbids the move
    PLC_TIMEOUT = "PLC_TIMEOUT"  # sent, but no reply in time: outcome unknown, not retried
    # A MOVE was written but its reply never came or could not be trusted: the carousel may
    # be moving. Never retry it; the machine refuses MOVEs until a reading settles it.
    MOVE_OUTCOME_UNKNOWN = "MOVE_OUTCOME_UNKNOWN"
    FORBIDDEN = "FORBIDDEN"  # the token's role may not do this
    UNAUTHORIZED = "UNAUTHORIZED"
    RATE_LIMITED = "RATE_LIMITED"  # this session (or REST client) sends too fast
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    # Limits and browser origins (docs/security.md): each refusal has its own code.
    MACHINE_RATE_LIMITED = "MACHINE_RATE_LIMITED"  # commands to one machine, all clients
    SESSION_LIMIT = "SESSION_LIMIT"  # the gateway has its maximum of open sessions
    ADDRESS_SESSION_LIMIT = "ADDRESS_SESSION_LIMIT"  # this client address has its maximum
    AUTH_LOCKED_OUT = "AUTH_LOCKED_OUT"  # too many wrong tokens from this address: wait
    ORIGIN_NOT_ALLOWED = "ORIGIN_NOT_ALLOWED"  # a browser page from an origin not allowed
    HOST_NOT_ALLOWED = "HOST_NOT_ALLOWED"  # addressed by a name not allowed (DNS rebinding)
    JOURNAL_UNAVAILABLE = "JOURNAL_UNAVAILABLE"  # history asked, but the journal is off
    # Pick jobs (docs/picking.md).
    INVALID_JOB = "INVALID_JOB"  # a job's lines are wrong: each bad line is named, and why
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    JOB_CONFLICT = "JOB_CONFLICT"  # this job_id exists with different content
    MACHINE_RESERVED = "MACHINE_RESERVED"  # a workstation's active job holds this machine
    WORKSTATION_NOT_FOUND = "WORKSTATION_NOT_FOUND"
    # Two gateways per cell: this one is the standby (or fenced); the error names the
    # active instance and its URL, where the command should go.
    NOT_ACTIVE = "NOT_ACTIVE"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class GatewayError(Exception):
    """An error a client is told about: a code from the table plus readable text."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        machine_id: str | None = None,
        reasons: Sequence[str] = (),
        retry_after_s: float | None = None,
        active_instance: str | None = None,
        active_url: str | None = None,
        active_ws_url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.machine_id = machine_id
        self.reasons = tuple(reasons)
        #: For refusals that pass with time (limits, lockouts): when trying again may work.
        self.retry_after_s = retry_after_s
        #: For NOT_ACTIVE: the instance that holds the lease and its REST and WebSocket
        #: URLs (each API names the one its client speaks).
        self.active_instance = active_instance
        self.active_url = active_url
        self.active_ws_url = active_ws_url

    def __repr__(self) -> str:
        return f"GatewayError({self.code.value}, {self.message!r})"
