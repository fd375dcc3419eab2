"""Two gateways per cell: a page served by one instance may read another's /v1/health (to
find the active one after its own gateway died), and nothing more. The instances are the
ones the cell registered; any other origin, path or method is refused as before, and the
pages' CSP lets them fetch from exactly those origins."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from carousel_gateway.api import edge
from carousel_gateway.api.auth import Authenticator
from carousel_gateway.api.http import RestApi, create_app
from carousel_gateway.api.http.gatekeeper import DOCS_PAGES
from carousel_gateway.api.http.state import instance_origins
from carousel_gateway.config import AuthConfig, parse_config
from carousel_gateway.fleet.fleet import Fleet
from carousel_gateway.ha.coordinator import CellInstance, Takeover

A = "http://127.0.0.2:8080"
B = "http://127.0.0.3:8080"
HOST = "127.0.0.3:8080"  # the requests are addressed to B (loopback: an allowed Host)


@dataclass
class StandbyB:
    """B as health reads it: the standby of a cell whose active is A."""

    role: str = "standby"
    epoch: int | None = None
    cell: str = "cell_1"
    instance: str = "gw-b"
    active_instance: str | None = "gw-a"
    active_url: str | None = A
    takeovers: int = 0
    fenced_writes: int = 0
    takeover: Takeover | None = field(
        default_factory=lambda: Takeover("gw-a", 3, 1_700_000_000.0, "gw-b", 1_700_000_004.5, 6.1)
    )
    instances: tuple[CellInstance, ...] = (
        CellInstance("gw-a", A + "/", "ws://127.0.0.2:8765"),
        CellInstance("gw-b", B, "ws://127.0.0.3:8765"),
    )

    def deadline_in(self) -> float | None:
        return None


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    config = parse_config({"machines": [{"id": "m1", "name": "Carrusel", "host": "127.0.0.1"}]})
    ha = StandbyB()
    api = RestApi(
        Fleet(config.machines), simulators={}, authenticator=Authenticator(AuthConfig()), ha=ha
    )
    app = create_app(api)
    served = await edge.wrap(
        app, docs_paths=DOCS_PAGES, connect_origins=lambda: instance_origins(ha)
    )
    transport = httpx.ASGITransport(app=served)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}") as client:
        yield client


async def test_health_names_the_instances_and_the_takeover(http: httpx.AsyncClient) -> None:
    ha: dict[str, Any] = (await http.get("/v1/health")).json()["data"]["ha"]
    assert ha["instances"] == [
        {"instance": "gw-a", "http_url": A + "/", "ws_url": "ws://127.0.0.2:8765"},
        {"instance": "gw-b", "http_url": B, "ws_url": "ws://127.0.0.3:8765"},
    ]
    assert ha["takeover"] == {
        "instance": "gw-a",
        "epoch": 3,
        "at": "2023-11-14T22:13:20.000Z",
        "ready_at": "2023-11-14T22:13:24.500Z",
        "previous_instance": "gw-b",
        "seconds": 6.1,
    }


async def test_a_page_of_another_instance_may_read_health_only(http: httpx.AsyncClient) -> None:
    read = await http.get("/v1/health", headers={"Origin": A})
    assert read.status_code == 200
    assert read.headers["access-control-allow-origin"] == A
    assert "Origin" in read.headers["vary"]
    preflight = await http.options(
        "/v1/health", headers={"Origin": A, "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-methods"] == "GET"
    # Nothing else opens up: other paths, writes, other origins.
    for method, path in (("GET", "/v1/machines"), ("GET", "/v1/ready"), ("POST", "/v1/health")):
        refused = await http.request(method, path, headers={"Origin": A})
        assert refused.status_code == 403, (method, path)
        assert "access-control-allow-origin" not in refused.headers
    for origin in ("http://127.0.0.9:8080", "https://127.0.0.2:8080", "http://127.0.0.2:8081"):
        refused = await http.get("/v1/health", headers={"Origin": origin})
        assert refused.status_code == 403, origin


async def test_the_pages_may_fetch_from_the_cells_instances(http: httpx.AsyncClient) -> None:
    for path in ("/", "/station/s1"):
        csp = (await http.get(path)).headers["content-security-policy"]
        connect = next(d for d in csp.split(";") if d.strip().startswith("connect-src"))
        assert connect.split() == ["connect-src", "'self'", "ws:", "wss:", A, B]
