"""What clients speak to: the one command path, admission, the WebSocket API, REST, metrics
and the AsyncAPI document.

The names below load their module on first use, so importing one module of the package
does not load the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carousel_gateway.lazy_names import lazy_getattr

__all__ = [
    "CommandRunner",
    "GatewayMetrics",
    "Guard",
    "HttpServer",
    "WebSocketApi",
    "build_asyncapi",
    "create_app",
]

_HOMES = {
    "CommandRunner": "commands",
    "Guard": "guard",
    "WebSocketApi": "ws",
    "HttpServer": "http",
    "create_app": "http",
    "GatewayMetrics": "metrics",
    "build_asyncapi": "asyncapi",
}


__getattr__ = lazy_getattr(__name__, _HOMES)

if TYPE_CHECKING:
    from carousel_gateway.api.asyncapi import build_asyncapi as build_asyncapi
    from carousel_gateway.api.commands import CommandRunner as CommandRunner
    from carousel_gateway.api.guard import Guard as Guard
    from carousel_gateway.api.http import HttpServer as HttpServer
    from carousel_gateway.api.http import create_app as create_app
    from carousel_gateway.api.metrics import GatewayMetrics as GatewayMetrics
    from carousel_gateway.api.ws import WebSocketApi as WebSocketApi
