"""The REST API v1 (FastAPI), served by uvicorn inside the gateway's own event loop.

Rooms: ``models`` (request and response models), ``errors`` (errors → replies, and their
OpenAPI description), ``gatekeeper`` (host, origin, auth, role, rate and body checks before
any parsing), ``state`` (what endpoints share), ``deps`` (endpoint parameters), one
``*_routes`` module per group of endpoints, ``conversions`` and ``diagnostics`` (fleet →
models), ``application`` (the FastAPI app), ``server`` and ``uvicorn_embedding`` (serving it).
"""

from carousel_gateway.api.http.application import create_app
from carousel_gateway.api.http.gatekeeper import Gatekeeper
from carousel_gateway.api.http.server import HttpServer
from carousel_gateway.api.http.state import RestApi

__all__ = ["Gatekeeper", "HttpServer", "RestApi", "create_app"]
