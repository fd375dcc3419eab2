"""Errors over HTTP: the one place a :class:`GatewayError` becomes a reply, FastAPI's and
Starlette's own errors mapped onto the same envelope and error table, and the OpenAPI
description of the error replies each endpoint can give."""

from __future__ import annotations

import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from carousel_gateway.api.http.models import ErrorData, ErrorResponse
from carousel_gateway.api.http_status import http_status
from carousel_gateway.errors import ErrorCode, GatewayError

__all__ = [
    "COMMAND_ERRORS",
    "HISTORY_ERRORS",
    "JOB_READ_ERRORS",
    "JOB_WRITE_ERRORS",
    "MACHINE_READ_ERRORS",
    "READ_ERRORS",
    "SIMULATOR_ERRORS",
    "documented_errors",
    "error_response",
    "install_error_handlers",
]


def error_response(
    error: GatewayError,
    *,
    status: int | None = None,
    data: ErrorData | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The one place a :class:`GatewayError` becomes an HTTP reply."""
    if data is None:
        data = ErrorData(
            reasons=list(error.reasons),
            active_instance=error.active_instance,
            active_url=error.active_url,
        )
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


#: What a request body must be sent as (FastAPI reads any other type as raw bytes).
JSON_CONTENT_TYPE = "application/json"


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == JSON_CONTENT_TYPE or (
        media.startswith("application/") and media.endswith("+json")
    )


def _wrong_content_type(request: Request, body: object) -> GatewayError | None:
    """A POST body not declared JSON: say so, not "Input should be a valid dictionary"
    (curl -d sends application/x-www-form-urlencoded unless told otherwise). FastAPI hands
    such a body on as raw bytes; a missing body stays "body: Field required"."""
    content_type = request.headers.get("content-type")
    if request.method != "POST" or _is_json(content_type) or not body:
        return None
    if not isinstance(body, bytes | bytearray):
        return None
    got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
    return GatewayError(
        ErrorCode.INVALID_MESSAGE_FORMAT,
        f"the request body must be JSON sent with Content-Type: {JSON_CONTENT_TYPE} (got {got})",
        machine_id=_machine_id_of(request),
    )


def _json_position(body: object, pos: object) -> str:
    """``line L, column C`` of a character offset in the body (as json's own errors count)."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not isinstance(pos, int) or isinstance(pos, bool):
        return "body"
    pos = max(0, min(pos, len(body)))
    line = body.count("\n", 0, pos) + 1
    column = pos - body.rfind("\n", 0, pos)
    return f"line {line}, column {column}"


def _invalid_json(exc: RequestValidationError, machine_id: str | None) -> GatewayError | None:
    """FastAPI's ``json_invalid`` (loc ``("body", offset)``, ctx ``error``) as where and what."""
    for error in exc.errors():
        if error.get("type") != "json_invalid":
            continue
        loc = tuple(error.get("loc", ()))
        where = _json_position(exc.body, loc[1] if len(loc) > 1 else None)
        what = (error.get("ctx") or {}).get("error") or "not valid JSON"
        return GatewayError(
            ErrorCode.INVALID_MESSAGE_FORMAT,
            f"invalid JSON body: {where}: {what}",
            machine_id=machine_id,
        )
    return None


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
    machine_id = _machine_id_of(request)
    error = (
        _wrong_content_type(request, exc.body)
        or _invalid_json(exc, machine_id)
        or _invalid_request(exc, machine_id)
    )
    return error_response(error)


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


#: Refusals any path can give, before the endpoint is reached (the gatekeeper's).
_EDGE_ERRORS = {
    400: "HOST_NOT_ALLOWED: the request's Host is not a name the gateway answers to",
    403: "ORIGIN_NOT_ALLOWED: a browser page from an origin that is not allowed",
}


def documented_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error replies an endpoint can give (all one envelope): its
    own ``statuses`` and the refusals of any path."""
    texts = {
        400: "Bad body or parameters: INVALID_MESSAGE_FORMAT, or INVALID_COMMAND",
        401: "UNAUTHORIZED: missing or invalid token (when tokens are configured)",
        403: "FORBIDDEN: the token's role may not do this",
        404: "MACHINE_NOT_FOUND (pick jobs: JOB_NOT_FOUND or WORKSTATION_NOT_FOUND)",
        409: "BUSY or MACHINE_NOT_READY, with data.reasons; MACHINE_RESERVED by a pick job "
        "(pick jobs: JOB_CONFLICT); NOT_ACTIVE on a standby gateway, with "
        "data.active_instance and data.active_url",
        413: "PAYLOAD_TOO_LARGE: the body is over the limit",
        422: "INVALID_JOB: the job's lines are wrong (each bad line is named, and why)",
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


READ_ERRORS = (401,)

MACHINE_READ_ERRORS = (401, 404)

HISTORY_ERRORS = (400, 401, 404, 503)

COMMAND_ERRORS = (400, 401, 403, 404, 409, 413, 429, 503, 504)

SIMULATOR_ERRORS = (400, 401, 403, 404, 409, 413, 429)

JOB_READ_ERRORS = (400, 401, 404)

JOB_WRITE_ERRORS = (400, 401, 403, 404, 409, 413, 422, 429)


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, as the one envelope with a code of the table."""
    app.add_exception_handler(GatewayError, _on_gateway_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)
