"""The one place an :class:`ErrorCode` becomes an HTTP status code.

The WebSocket API reports the same codes in ``error`` messages; REST clients also get them
in the envelope's ``code``, so the HTTP status is only a coarse hint for generic tooling.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from types import MappingProxyType
from typing import Final

from carousel_gateway.errors import ErrorCode

__all__ = [
    "STATUS_BY_CODE",
    "http_status",
]

STATUS_BY_CODE: Final[Mapping[ErrorCode, int]] = MappingProxyType(
    {
        ErrorCode.INVALID_MESSAGE_FORMAT: HTTPStatus.BAD_REQUEST,
        ErrorCode.INVALID_COMMAND: HTTPStatus.BAD_REQUEST,
        ErrorCode.UNAUTHORIZED: HTTPStatus.UNAUTHORIZED,
        ErrorCode.FORBIDDEN: HTTPStatus.FORBIDDEN,
        ErrorCode.MACHINE_NOT_FOUND: HTTPStatus.NOT_FOUND,
        ErrorCode.BUSY: HTTPStatus.CONFLICT,
        ErrorCode.MACHINE_NOT_READY: HTTPStatus.CONFLICT,
        ErrorCode.RATE_LIMITED: HTTPStatus.TOO_MANY_REQUESTS,
        ErrorCode.PAYLOAD_TOO_LARGE: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        ErrorCode.MACHINE_RATE_LIMITED: HTTPStatus.TOO_MANY_REQUESTS,
        ErrorCode.AUTH_LOCKED_OUT: HTTPStatus.TOO_MANY_REQUESTS,
        ErrorCode.ORIGIN_NOT_ALLOWED: HTTPStatus.FORBIDDEN,
        # The request named a host the gateway does not answer to (as an unknown Host is
        # answered by most servers): a request error, not a permission one.
        ErrorCode.HOST_NOT_ALLOWED: HTTPStatus.BAD_REQUEST,
        # A WebSocket handshake over a session limit (the server is full, not broken).
        ErrorCode.SESSION_LIMIT: HTTPStatus.SERVICE_UNAVAILABLE,
        ErrorCode.ADDRESS_SESSION_LIMIT: HTTPStatus.SERVICE_UNAVAILABLE,
        ErrorCode.JOURNAL_UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
        ErrorCode.INVALID_JOB: HTTPStatus.UNPROCESSABLE_ENTITY,
        ErrorCode.JOB_NOT_FOUND: HTTPStatus.NOT_FOUND,
        ErrorCode.JOB_CONFLICT: HTTPStatus.CONFLICT,
        ErrorCode.MACHINE_RESERVED: HTTPStatus.CONFLICT,
        ErrorCode.NOT_ACTIVE: HTTPStatus.CONFLICT,
        ErrorCode.WORKSTATION_NOT_FOUND: HTTPStatus.NOT_FOUND,
        ErrorCode.INTERNAL_ERROR: HTTPStatus.INTERNAL_SERVER_ERROR,
        # The PLC, not the gateway, is unavailable or slow: the gateway's own "upstream" codes.
        ErrorCode.CONNECTION_ERROR: HTTPStatus.SERVICE_UNAVAILABLE,
        ErrorCode.PLC_TIMEOUT: HTTPStatus.GATEWAY_TIMEOUT,
        ErrorCode.MOVE_OUTCOME_UNKNOWN: HTTPStatus.GATEWAY_TIMEOUT,
    }
)


def http_status(code: ErrorCode) -> int:
    """The HTTP status for an error code (500 for a code this table does not know yet)."""
    return int(STATUS_BY_CODE.get(code, HTTPStatus.INTERNAL_SERVER_ERROR))
