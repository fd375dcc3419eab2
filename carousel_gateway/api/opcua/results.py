"""Our error codes as OPC UA StatusCodes, and the message that goes with them (pure).

Only standard StatusCodes: an HMI alarms on those. The message carries our own code and
reasons, so the operator learns *why* (``MACHINE_NOT_READY: ... (reasons: PARADA_EMERGENCIA)``).
"""

from __future__ import annotations

from asyncua import ua

from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.fleet.events import MoveFailed

__all__ = ["STATUS_BY_CODE", "describe_error", "describe_failure", "status_for"]

_S = ua.StatusCodes

#: Each code of the table to the standard StatusCode a client sees.
STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.MACHINE_NOT_READY: _S.BadInvalidState,  # an interlock
    ErrorCode.BUSY: _S.BadInvalidState,
    ErrorCode.MACHINE_RESERVED: _S.BadInvalidState,  # a workstation's pick job holds it
    ErrorCode.NOT_ACTIVE: _S.BadInvalidState,  # the standby: the message names the active
    ErrorCode.CONNECTION_ERROR: _S.BadCommunicationError,
    ErrorCode.PLC_TIMEOUT: _S.BadTimeout,
    ErrorCode.MOVE_OUTCOME_UNKNOWN: _S.BadTimeout,
    ErrorCode.INVALID_COMMAND: _S.BadOutOfRange,  # MoveTo's only argument: the target
    ErrorCode.FORBIDDEN: _S.BadUserAccessDenied,
    ErrorCode.UNAUTHORIZED: _S.BadUserAccessDenied,
    ErrorCode.MACHINE_RATE_LIMITED: _S.BadTooManyOperations,
    ErrorCode.RATE_LIMITED: _S.BadTooManyOperations,
    ErrorCode.MACHINE_NOT_FOUND: _S.BadNodeIdUnknown,
    ErrorCode.JOURNAL_UNAVAILABLE: _S.BadInternalError,
    ErrorCode.INTERNAL_ERROR: _S.BadInternalError,
}


def status_for(code: ErrorCode | str) -> int:
    """The StatusCode for one of our codes (BadUnexpectedError for one that has none)."""
    try:
        return int(STATUS_BY_CODE[ErrorCode(code)])
    except (ValueError, KeyError):
        return int(_S.BadUnexpectedError)


def describe_error(error: GatewayError) -> str:
    """``CODE: message (reasons: a, b)``: what MoveTo's Message output says."""
    text = f"{error.code.value}: {error.message}"
    return f"{text} (reasons: {', '.join(error.reasons)})" if error.reasons else text


def describe_failure(code: ErrorCode, event: MoveFailed) -> str:
    """A failed move as ``LastResultMessage`` says it."""
    reasons = ", ".join(event.reasons) or "unknown"
    where = "" if event.position is None else f", stopped at {event.position}"
    return f"{code.value}: the move to {event.target} failed{where} (reasons: {reasons})"
