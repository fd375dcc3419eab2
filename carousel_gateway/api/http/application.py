"""The REST API v1 as a FastAPI application: the routers, the error handlers, gzip and the
gatekeeper, over one fleet.

WMS integrations use it for one-off operations. It shares everything with the WebSocket
API: the machines' snapshots (no endpoint waits on a PLC to report state), the command path
(one :class:`~carousel_gateway.api.commands.CommandRunner`), the tokens and roles, and the
one table of error codes. Every JSON reply has the envelope ``{success, data, error, code,
timestamp}``, plus ``machine_id`` where one machine is involved. ``edge.py`` adds the
security headers and HEAD around the whole app.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.middleware.gzip import GZipMiddleware

from carousel_gateway import __version__
from carousel_gateway.api import dashboard
from carousel_gateway.api.http import (
    command_routes,
    job_routes,
    journal_routes,
    machine_routes,
    operation_routes,
    simulator_routes,
    workstation_routes,
)
from carousel_gateway.api.http.errors import install_error_handlers
from carousel_gateway.api.http.gatekeeper import DOCS_ASSETS, DOCS_PAGES, Gatekeeper
from carousel_gateway.api.http.state import RestApi

__all__ = [
    "ROUTERS",
    "TAGS",
    "create_app",
]

#: Every router of the API, in the order the OpenAPI document lists their paths.
ROUTERS = (
    machine_routes.router,
    command_routes.router,
    journal_routes.router,
    job_routes.router,
    workstation_routes.router,
    simulator_routes.router,
    operation_routes.router,  # open: no token
)

#: Operation groups in the OpenAPI document and on /docs.
TAGS = [
    {"name": "Machines", "description": "The configured machines and their live state"},
    {"name": "Commands", "description": "Commands and moves (operator role)"},
    {"name": "Journal", "description": "What happened: commands with their outcome, events"},
    {
        "name": "Pick jobs",
        "description": "Goods-to-person picking: jobs, operator confirmations, workstations "
        "(docs/picking.md)",
    },
    {"name": "Simulators", "description": "Fault and link controls of embedded simulators"},
    {"name": "Operations", "description": "Liveness, readiness and metrics (no token needed)"},
]


def create_app(api: RestApi) -> FastAPI:
    """The REST API as a FastAPI app over ``api``: what its endpoints share (see
    :class:`RestApi`; the composition root gives it the guard, the command runner and the
    metrics it shares with the WebSocket API)."""
    # Swagger UI's files come from the package (fastapi-offline): plant networks have no
    # internet, so the usual CDN would leave /docs blank.
    app = FastAPIOffline(
        title="carousel-gateway REST API",
        version=__version__,
        description=(
            "One-off operations on vertical storage carousels: status, commands, moves "
            "(optionally waiting for arrival), pick jobs and workstations, diagnostics, health "
            "and simulator controls. "
            "Every JSON reply has the envelope {success, data, error, code, timestamp}."
        ),
        contact={"name": "carousel-gateway maintainers"},
        license_info={"name": "Proprietary", "identifier": "LicenseRef-Proprietary"},
        servers=[{"url": "/", "description": "This gateway (the server serving this document)"}],
        openapi_tags=TAGS,
        docs_url=DOCS_PAGES[0],
        redoc_url=None,
        openapi_url="/openapi.json",
        static_url=DOCS_ASSETS,
        favicon_url=dashboard.FAVICON_URL,
        # No online validator badge (it would load an image from the internet).
        swagger_ui_parameters={"validatorUrl": None},
    )
    assert app.swagger_ui_oauth2_redirect_url == DOCS_PAGES[1]
    app.state.api = api
    for router in ROUTERS:
        app.include_router(router)
    dashboard.install(app)
    install_error_handlers(app)
    # Inside the gatekeeper (its refusals are small); /openapi.json, /metrics and Swagger
    # UI's files shrink to a fraction. No endpoint streams, so nothing waits on the buffer.
    app.add_middleware(GZipMiddleware, minimum_size=500)
    app.add_middleware(Gatekeeper, api=api)
    return app
