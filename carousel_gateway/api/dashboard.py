"""The operator dashboard and the station view: static files from ``carousel_gateway/web``
and the dashboard's one setting.

The page speaks the WebSocket API itself; all it needs from the HTTP server is its files
and the WebSocket port to connect to. Nothing here is secret, so these paths are open (the
WebSocket and the simulator controls check the token).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from carousel_gateway.wire import utc_timestamp

__all__ = [
    "FAVICON_URL",
    "OPEN_PATHS",
    "OPEN_PREFIXES",
    "WEB_DIR",
    "dashboard_config",
    "favicon",
    "index",
    "install",
    "is_open",
    "router",
    "station",
]

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
OPEN_PREFIXES = ("/static/", "/station/")
OPEN_PATHS = frozenset({"/", "/index.html", "/favicon.ico", "/v1/dashboard/config"})
#: The icon of the dashboard and of the API docs (browsers ask for /favicon.ico without it).
FAVICON_URL = "/static/favicon.svg"

router = APIRouter(include_in_schema=False)


@router.get("/")
@router.get("/index.html")
async def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/station/{workstation_id}")
async def station(workstation_id: str) -> FileResponse:
    """The operator station view of one workstation (``station.js`` reads it over REST)."""
    return FileResponse(WEB_DIR / "station.html", headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    """The icon at its traditional path, for tools that ask there without reading the
    page's ``<link rel=icon>`` (an SVG, served as such)."""
    return FileResponse(WEB_DIR / "favicon.svg", media_type="image/svg+xml")


@router.get("/v1/dashboard/config")
async def dashboard_config(request: Request) -> JSONResponse:
    api = request.app.state.api
    return JSONResponse(
        {
            "success": True,
            "data": {
                "ws_port": api.websocket_port or 8765,
                "ws_path": "/",
                "auth_enabled": api.authenticator.enabled,
                # The page fills its event feed from GET /v1/events only when there is one.
                "journal_enabled": api.journal is not None,
                # The page shows the MQTT link's state (from GET /v1/health) only with one.
                "mqtt_enabled": api.mqtt is not None,
                # Two gateways per cell: the page follows a takeover (GET /v1/health's ha).
                "ha_enabled": api.ha is not None,
            },
            "error": None,
            "code": None,
            "timestamp": utc_timestamp(),
        }
    )


def install(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets at ``/static``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
