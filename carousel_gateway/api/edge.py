"""What the gateway's HTTP replies carry on both ports: security headers, ``Server``, HEAD.

The headers come from the ``secure`` package (its builders and its ASGI middleware), in
three policies:

* the gateway's own pages and API: the dashboard loads only its own files, with no inline
  script or style, and talks to the WebSocket port (``connect-src ws: wss:``: the port is
  another origin, and ``?ws=`` may point the page elsewhere);
* the API docs pages: Swagger UI (served from the package, ``fastapi-offline``) starts from
  one inline script, allowed by its hash, and styles elements inline;
* the WebSocket port's own HTTP replies (refused handshakes, plain HTTP): no page at all.

Every page forbids framing and sends no ``Referer``; ``Server`` names the product, never
versions. HEAD is answered wherever GET is (RFC 9110 §9.3.2); FastAPI's routes answer it
405 (fastapi/fastapi#1773), so HEAD goes in as GET and the reply comes out without a body.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from secure import (
    ContentSecurityPolicy,
    ReferrerPolicy,
    Secure,
    Server,
    XContentTypeOptions,
    XFrameOptions,
)
from secure.middleware import SecureASGIMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "SERVER",
    "HeadAsGet",
    "SecurityHeaders",
    "docs_headers",
    "gateway_headers",
    "get_page",
    "inline_script_hashes",
    "websocket_headers",
    "wrap",
]

#: The ``Server`` header of both ports: the product, no versions.
SERVER = "carousel-gateway"

_SELF = "'self'"
_NONE = "'none'"


def _headers(csp: ContentSecurityPolicy) -> Secure:
    return Secure(
        csp=csp,
        xcto=XContentTypeOptions().nosniff(),
        xfo=XFrameOptions().deny(),
        referrer=ReferrerPolicy().no_referrer(),
        server=Server().set(SERVER),
    )


def gateway_headers() -> Secure:
    """The dashboard's and the API's headers."""
    csp = (
        ContentSecurityPolicy()
        .default_src(_SELF)
        .script_src(_SELF)
        .style_src(_SELF)
        .img_src(_SELF, "data:")
        .connect_src(_SELF, "ws:", "wss:")
        .object_src(_NONE)
        .base_uri(_NONE)
        .form_action(_SELF)
        .frame_ancestors(_NONE)
    )
    return _headers(csp)


def docs_headers(script_hashes: Iterable[str]) -> Secure:
    """The API docs pages' headers: their inline scripts by hash, inline styles allowed."""
    csp = (
        ContentSecurityPolicy()
        .default_src(_SELF)
        .script_src(_SELF, *script_hashes)
        .style_src(_SELF, "'unsafe-inline'")
        .img_src(_SELF, "data:")
        .connect_src(_SELF)
        .object_src(_NONE)
        .base_uri(_NONE)
        .form_action(_SELF)
        .frame_ancestors(_NONE)
    )
    return _headers(csp)


def websocket_headers() -> Mapping[str, str]:
    """Headers for the WebSocket port's non-upgrade replies (``Server`` is set by websockets)."""
    csp = ContentSecurityPolicy().default_src(_NONE).frame_ancestors(_NONE)
    return {k: v for k, v in _headers(csp).headers.items() if k.lower() != "server"}


_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL | re.IGNORECASE)


def inline_script_hashes(html: str) -> list[str]:
    """CSP ``'sha256-…'`` sources for the inline scripts of a page."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(m.encode()).digest()).decode() + "'"
        for m in _INLINE_SCRIPT.findall(html)
    ]


async def get_page(app: ASGIApp, path: str) -> str:
    """GET a page from the app in process (the docs pages, to hash their inline scripts)."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": None,
        "server": None,
    }
    body = bytearray()
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    if status != 200:
        raise RuntimeError(f"GET {path} in process answered {status}")
    return body.decode()


class HeadAsGet:
    """Answers HEAD as GET without the body (same status and headers, Content-Length too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headless(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                await send(message)
            elif kind == "http.response.pathsend" or (
                kind == "http.response.body" and not message.get("more_body")
            ):
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET"}, receive, headless)


class SecurityHeaders:
    """``secure``'s middleware with the docs pages' policy on their paths, the gateway's
    elsewhere (one fixed set per middleware, so one middleware per policy).

    ``connect_origins``: web origins the gateway's own pages may also fetch from (the
    other instances of a two-gateway cell, whose health the page reads after its own
    gateway died), added to ``connect-src`` when there are any."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        docs_paths: Iterable[str],
        docs: Secure,
        connect_origins: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.docs_paths = frozenset(docs_paths)
        self.connect_origins = connect_origins
        # multi_ok=(): each policy replaces any CSP below it rather than adding a second one.
        self.gateway = SecureASGIMiddleware(app, secure=gateway_headers(), multi_ok=())
        self.docs = SecureASGIMiddleware(app, secure=docs, multi_ok=())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        docs = scope["type"] == "http" and scope["path"] in self.docs_paths
        if not docs and scope["type"] == "http" and self.connect_origins is not None:
            extra = sorted(self.connect_origins())
            if extra:
                send = _connect_also(send, extra)
        # `secure` annotates ``send`` as taking ``object``; Starlette's takes a message
        # mapping. The call is right at run time; the cast only reconciles the two stubs.
        await (self.docs if docs else self.gateway)(scope, receive, cast("Any", send))


_CSP = b"content-security-policy"


def _connect_also(send: Send, origins: list[str]) -> Send:
    """A ``send`` whose CSP lets the page fetch from ``origins`` too."""
    sources = " ".join(o for o in origins if re.fullmatch(r"https?://[\w.\-\[\]:]+", o))
    also = b" " + sources.encode()

    async def widened(message: Message) -> None:
        if message["type"] == "http.response.start" and sources:
            headers = []
            for name, value in message.get("headers", []):
                if name.lower() == _CSP:
                    value = re.sub(rb"(connect-src [^;]*)", lambda m: m.group(1) + also, value)
                headers.append((name, value))
            message = {**message, "headers": headers}
        await send(message)

    return widened


async def wrap(
    app: ASGIApp,
    *,
    docs_paths: Iterable[str],
    connect_origins: Callable[[], Iterable[str]] | None = None,
) -> ASGIApp:
    """The app as served: security headers and ``Server`` on every reply, HEAD as GET.

    Outside the app's own error handling, so its last-resort 500 replies carry them too.
    """
    docs_paths = tuple(docs_paths)
    hashes: list[str] = []
    for path in docs_paths:
        hashes += inline_script_hashes(await get_page(app, path))
    return SecurityHeaders(
        HeadAsGet(app),
        docs_paths=docs_paths,
        docs=docs_headers(hashes),
        connect_origins=connect_origins,
    )
