"""The WebSocket handshake: who may open a session, and the refusals and headers of the
plain HTTP answers on the WebSocket port.

The checks are the gateway's one admission (``Guard.admit`` and ``Guard.authenticate``, as
REST's gatekeeper uses them), then the session slots that only this API has.
"""

from __future__ import annotations

import logging
import math

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from carousel_gateway.api import ws_internals
from carousel_gateway.api.auth import Authenticator, Identity, token_from
from carousel_gateway.api.edge import websocket_headers
from carousel_gateway.api.guard import WS_HANDSHAKE, Guard
from carousel_gateway.api.http_status import http_status
from carousel_gateway.errors import ErrorCode, GatewayError
from carousel_gateway.wire import error_message

__all__ = ["Handshake", "address_of", "peer_of", "with_security_headers"]

log = logging.getLogger("carousel_gateway.api.ws")


class Handshake:
    """Admits or refuses WebSocket handshakes (``process_request``) and says who an
    admitted one authenticated as."""

    def __init__(self, guard: Guard, authenticator: Authenticator) -> None:
        self.guard = guard
        self.authenticator = authenticator

    def admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """Admit a handshake or refuse it: host (400), origin (403), lockout (429), token
        (401), then session limits (503). An admitted handshake holds a session slot until
        its connection closes, whether or not it becomes a session."""
        guard = self.guard
        peer = peer_of(connection)
        address = address_of(connection)
        try:
            headers = request.headers
            guard.admit(WS_HANDSHAKE, host=headers.get("Host"), origin=headers.get("Origin"))
            token = token_from(headers.get("Authorization"), request.path)
            guard.authenticate(WS_HANDSHAKE, self.authenticator, token, address=address, peer=peer)
            code = guard.sessions.refusal(address)
            if code is not None:
                raise guard.refuse(WS_HANDSHAKE, code, "too many WebSocket sessions; try later")
        except GatewayError as exc:
            log.warning("WebSocket handshake from %s refused: %s", peer, exc.code.value)
            return _refusal(connection, exc)
        guard.sessions.take(address)
        ws_internals.on_connection_lost(connection, lambda: guard.sessions.release(address))
        return None

    def identity(self, connection: ServerConnection) -> Identity:
        """Who the admitted handshake authenticated as (the token is checked again)."""
        request = connection.request
        if request is not None:
            token = token_from(request.headers.get("Authorization"), request.path)
            identity = self.authenticator.identify(token, peer_of(connection))
            if identity is not None:
                return identity
        return Identity(peer_of(connection), "viewer")


def _refusal(connection: ServerConnection, error: GatewayError) -> Response:
    """A refused handshake: the HTTP status of its code and an ``error`` message as body."""
    response = connection.respond(http_status(error.code), error_message(error).encode())
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    if error.code is ErrorCode.UNAUTHORIZED:
        response.headers["WWW-Authenticate"] = 'Bearer realm="carousel-gateway"'
    if error.retry_after_s is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    return response


_SECURITY_HEADERS = websocket_headers()


def with_security_headers(
    connection: ServerConnection, request: Request, response: Response
) -> None:
    """Refusals and plain HTTP answers on this port get the same protective headers as the
    HTTP port's (a successful upgrade carries no document, so it needs none)."""
    if response.status_code != 101:
        for name, value in _SECURITY_HEADERS.items():
            response.headers[name] = value


def address_of(connection: ServerConnection) -> str:
    """The client's address without its port (what per-address limits count)."""
    address = connection.remote_address
    if isinstance(address, tuple) and address:
        return str(address[0])
    return str(address)


def peer_of(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
