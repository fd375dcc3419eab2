"""The gatekeeper: a pure ASGI middleware that decides, before FastAPI parses anything and in
this order for every path, the ``Host`` (400), the browser origin (403, and answers CORS),
the address's lockout (429), the token (401), the role (403: viewers may only read), the
write rate (429) and the body size (413)."""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from carousel_gateway.api import dashboard
from carousel_gateway.api.auth import Identity, token_from
from carousel_gateway.api.guard import HTTP
from carousel_gateway.api.http.errors import error_response
from carousel_gateway.api.http.state import RestApi, instance_origins
from carousel_gateway.errors import ErrorCode, GatewayError

__all__ = [
    "DOCS_ASSETS",
    "DOCS_PAGES",
    "DRAIN_LIMIT_BYTES",
    "OPEN_PATHS",
    "OPEN_PREFIXES",
    "PEER_READ_PATH",
    "READ_METHODS",
    "Gatekeeper",
]

log = logging.getLogger(__name__)

#: A larger body is refused without reading the rest of it (the connection is closed).
DRAIN_LIMIT_BYTES = 1024 * 1024

#: The API docs pages (Swagger UI) and where their files are served from (the package's own).
DOCS_PAGES = ("/docs", "/docs/oauth2-redirect")

DOCS_ASSETS = "/docs/assets"

#: Paths anyone may read, token or not: probes, scrapers and the API's own description.
OPEN_PATHS = frozenset({"/v1/health", "/v1/ready", "/metrics", "/openapi.json", *DOCS_PAGES})

OPEN_PREFIXES = (DOCS_ASSETS + "/",)

#: Two gateways per cell: a page served by one instance reads another's health (to find
#: the active one after its own gateway died); that path alone, read-only, and only from
#: the cell's own instances' origins.
PEER_READ_PATH = "/v1/health"

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_WWW_AUTHENTICATE = 'Bearer realm="carousel-gateway"'

#: CORS answers for allowed browser origins (see security.allowed_origins).
_CORS_PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}
_PEER_PREFLIGHT = {"Access-Control-Allow-Methods": "GET", "Access-Control-Max-Age": "600"}


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
        origin = headers.get("origin")
        peer_read = (
            origin is not None
            and path == PEER_READ_PATH
            and method in READ_METHODS
            and origin in instance_origins(api.ha)
        )
        try:
            if peer_read:
                api.guard.check_host(HTTP, headers.get("host"))
            else:
                api.guard.admit(HTTP, host=headers.get("host"), origin=origin)
        except GatewayError as exc:
            refused_by = (
                f"Host {headers.get('host')!r}"
                if exc.code is ErrorCode.HOST_NOT_ALLOWED
                else f"origin {origin!r}"
            )
            log.warning("HTTP request from %s refused: %s not allowed", peer, refused_by)
            await error_response(exc)(scope, receive, send)
            return
        if origin is not None:
            send = _with_cors(send, origin)
            if method == "OPTIONS" and "access-control-request-method" in headers:
                preflight = _PEER_PREFLIGHT if peer_read else _CORS_PREFLIGHT
                await Response(status_code=204, headers=preflight)(scope, receive, send)
                return
        query = scope.get("query_string", b"").decode("latin-1")
        target = f"{path}?{query}" if query else path
        token = token_from(headers.get("authorization"), target)
        if _is_open(path):
            identity = api.authenticator.identify(token, peer)
        else:
            try:
                identity = api.guard.authenticate(
                    HTTP, api.authenticator, token, address=peer, peer=peer
                )
                self._check_write(identity, method)
            except GatewayError as exc:
                await self._refusal(exc, peer)(scope, receive, send)
                return
        scope.setdefault("state", {})["identity"] = identity
        limit = api.body_limit(path)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse_body(
                scope, receive, send, more=True, declared=int(declared), limit=limit
            )
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            body.extend(message.get("body", b""))
            if len(body) > limit:
                more = message.get("more_body", False)
                await self._refuse_body(scope, receive, send, more=more, limit=limit)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)

    def _check_write(self, identity: Identity, method: str) -> None:
        """Writes need the operator role (FORBIDDEN) and are rate-limited (RATE_LIMITED)."""
        if method in READ_METHODS:
            return
        if not identity.can_command:
            raise GatewayError(
                ErrorCode.FORBIDDEN, f"role {identity.role!r} may only read (GET requests)"
            )
        retry_after = self.api.limiter.acquire(identity.client)
        if retry_after > 0:
            raise self.api.guard.refuse(
                HTTP,
                ErrorCode.RATE_LIMITED,
                "too many requests; slow down",
                retry_after_s=retry_after,
            )

    @staticmethod
    def _refusal(error: GatewayError, peer: str) -> JSONResponse:
        if error.code is not ErrorCode.UNAUTHORIZED:
            return error_response(error)
        log.warning("HTTP request from %s refused: missing or invalid token", peer)
        return error_response(error, headers={"WWW-Authenticate": _WWW_AUTHENTICATE})

    async def _refuse_body(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        more: bool,
        limit: int,
        declared: int | None = None,
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
            HTTP, ErrorCode.PAYLOAD_TOO_LARGE, f"request body over {limit} bytes"
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
