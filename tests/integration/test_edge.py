"""Edge hygiene on both ports (issue 12, section 5): offline API docs, HEAD, security
headers, the Host check (DNS rebinding), compression and the ``Server`` header.

Every test runs a real gateway on loopback and talks to it over sockets.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import re
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from carousel_gateway.api import dashboard
from carousel_gateway.api.edge import SERVER, inline_script_hashes
from carousel_gateway.api.guard import ADDRESS_REFRESH_S, HostPolicy
from carousel_gateway.api.http.application import ROUTERS
from carousel_gateway.api.http.gatekeeper import DOCS_PAGES
from carousel_gateway.config import ConfigError, parse_config
from carousel_gateway.errors import ErrorCode
from tests.integration.conftest import gateway_config
from tests.integration.wsclient import TestClient

SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "referrer-policy")


def base_url(gateway: Any) -> str:
    return f"http://127.0.0.1:{gateway.http_port}"


@pytest.fixture
async def http(gateway) -> Any:
    async with httpx.AsyncClient(base_url=base_url(gateway), timeout=10) as client:
        yield client


class _Assets(HTMLParser):
    """Every URL a page loads or links to (src and href attributes), and inline handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)
            if name == "style" or name.startswith("on"):
                self.inline.append(f"<{tag} {name}>")
        if tag == "style" or (tag == "script" and "src" not in names):
            self.inline.append(f"<{tag}>")


def assets_of(html: str) -> _Assets:
    parser = _Assets()
    parser.feed(html)
    return parser


def directives(csp: str) -> dict[str, list[str]]:
    parts = (d.split() for d in csp.split(";") if d.strip())
    return {d[0]: d[1:] for d in parts}


def assert_security_headers(headers: httpx.Headers | Any) -> None:
    for name in SECURITY_HEADERS:
        assert headers.get(name), f"{name} missing"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert directives(headers["content-security-policy"])["frame-ancestors"] == ["'none'"]


# -- offline docs ------------------------------------------------------------------------------


async def test_docs_load_only_same_origin_assets_that_exist(http):
    page = await http.get("/docs")
    assert page.status_code == 200
    urls = assets_of(page.text).urls
    assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls)
    for url in urls:
        # Same origin: a path on this server, never a CDN (a plant network has no internet).
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await http.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    # The page loads the document it describes from here too.
    assert "url: '/openapi.json'" in page.text


# -- HEAD --------------------------------------------------------------------------------------


async def test_head_answers_wherever_get_does_without_a_body(http):
    paths = {
        route.path.replace("{machine_id}", "machine_1").replace("{workstation_id}", "station_1")
        for router in (*ROUTERS, dashboard.router)
        for route in router.routes
        if isinstance(route, APIRoute) and "GET" in route.methods
        # Pick jobs' reads need workstations (tests/integration/test_job_api.py does HEAD).
        and not route.path.startswith(("/v1/jobs", "/v1/workstations"))
    }
    # The shortcut needs the machine named on a gateway of two.
    paths = {"/v1/status?machine_id=machine_1" if p == "/v1/status" else p for p in paths}
    paths |= {*DOCS_PAGES, "/openapi.json", "/static/app.js", "/docs/assets/swagger-ui.css"}
    assert {"/", "/v1/health", "/metrics", "/v1/machines/machine_1/status"} <= paths
    identity = {"Accept-Encoding": "identity"}
    for path in sorted(paths):
        get = await http.get(path, headers=identity)
        head = await http.head(path, headers=identity)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
        if path != "/metrics":  # its numbers change between the two requests
            assert head.headers["content-length"] == str(len(get.content)), path
        assert_security_headers(head.headers)
    # HEAD where GET is not allowed is refused like GET.
    refused = await http.head("/v1/command")
    assert refused.status_code == 405 and refused.content == b""


# -- security headers --------------------------------------------------------------------------


def test_dashboard_page_needs_no_inline_script_or_style():
    """The dashboard keeps to the strict policy: its page has nothing inline to allow."""
    page = assets_of((dashboard.WEB_DIR / "index.html").read_text(encoding="utf-8"))
    assert page.inline == []
    script = (dashboard.WEB_DIR / "app.js").read_text(encoding="utf-8")
    assert not re.search(r"\.style\b|setAttribute\(\s*['\"](style|on)", script)


async def test_every_reply_carries_the_security_headers(gateway_factory):
    gateway = await gateway_factory(
        gateway_config(auth={"tokens": [{"name": "x", "role": "viewer", "sha256": "0" * 64}]})
    )
    async with httpx.AsyncClient(base_url=base_url(gateway)) as http:
        replies = [
            await http.get("/"),
            await http.get("/static/app.js"),
            await http.get("/favicon.ico"),
            await http.get("/v1/health"),
            await http.get("/openapi.json"),
            await http.get("/v1/machines"),  # 401: no token
            await http.get("/static/no-such-file.js"),  # 404
            await http.get("/v1/health", headers={"Origin": "http://evil.example"}),  # 403
            await http.get("/v1/health", headers={"Host": "evil.example"}),  # 400
        ]
        assert [r.status_code for r in replies] == [200] * 5 + [401, 404, 403, 400]
        for reply in replies:
            assert_security_headers(reply.headers)
        page = directives(replies[0].headers["content-security-policy"])
        assert page["default-src"] == page["script-src"] == page["style-src"] == ["'self'"]
        assert "'unsafe-inline'" not in replies[0].headers["content-security-policy"]
        # The dashboard talks to the WebSocket port: another origin.
        assert {"ws:", "wss:"} <= set(page["connect-src"])

        # The docs page allows exactly its own inline scripts, by hash.
        docs = await http.get("/docs")
        assert_security_headers(docs.headers)
        scripts = directives(docs.headers["content-security-policy"])["script-src"]
        hashes = inline_script_hashes(docs.text)
        assert hashes and set(hashes) <= set(scripts)
        assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts


async def test_websocket_port_replies_carry_security_headers(gateway):
    url = f"ws://127.0.0.1:{gateway.websocket.port}"
    with pytest.raises(InvalidStatus) as caught:
        await TestClient.open(url, origin="http://evil.example")
    response = caught.value.response
    assert response.status_code == 403
    assert_security_headers(response.headers)
    assert directives(response.headers["Content-Security-Policy"])["default-src"] == ["'none'"]
    # A plain HTTP request to the WebSocket port (426 Upgrade Required).
    async with httpx.AsyncClient() as http:
        plain = await http.get(f"http://127.0.0.1:{gateway.websocket.port}/")
    assert plain.status_code == 426
    assert_security_headers(plain.headers)


# -- Server header -----------------------------------------------------------------------------


async def test_server_header_names_the_product_without_versions_on_both_ports(gateway, http):
    for path in ("/", "/v1/health", "/no/such/path"):
        reply = await http.get(path)
        assert reply.headers.get_list("server") == [SERVER], path
    ws_url = f"ws://127.0.0.1:{gateway.websocket.port}"
    client = await TestClient.open(ws_url)
    try:
        assert client.connection.response.headers.get_all("Server") == [SERVER]
    finally:
        await client.close()
    with pytest.raises(InvalidStatus) as caught:
        await TestClient.open(ws_url, origin="http://evil.example")
    assert caught.value.response.headers.get_all("Server") == [SERVER]


# -- Host check (DNS rebinding) ----------------------------------------------------------------


def as_host(name: str, port: int) -> Any:
    """Arguments for a WebSocket to the loopback port that says ``Host: name:port``."""
    return {"url": f"ws://{name}:{port}", "host": "127.0.0.1", "port": port, "proxy": None}


def refusals(text: str, where: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "carousel_refusals_total"
                and labels.get("where") == where
                and labels.get("code") == "HOST_NOT_ALLOWED"
            ):
                return sample.value
    raise AssertionError("no HOST_NOT_ALLOWED series")


async def test_rebinding_host_names_are_refused_on_both_ports(gateway, http):
    http_port, ws_port = gateway.http_port, gateway.websocket.port
    # The names the gateway's own clients use: loopback, localhost, with or without port.
    for host in ("127.0.0.1", f"127.0.0.1:{http_port}", f"localhost:{http_port}", "[::1]"):
        reply = await http.get("/v1/machines", headers={"Host": host})
        assert reply.status_code == 200, host
    # A hostile name pointed at the gateway's address (DNS rebinding), and junk.
    for host in ("evil.example", f"evil.example:{http_port}", "localhost@evil", "a b"):
        reply = await http.get("/v1/machines", headers={"Host": host})
        assert reply.status_code == 400, host
        body = reply.json()
        assert body["success"] is False and body["code"] == ErrorCode.HOST_NOT_ALLOWED
        assert "allowed_hosts" in body["error"]
    for host in (f"localhost:{ws_port}", f"127.0.0.1:{ws_port}"):
        client = await TestClient.open(f"ws://{host}")
        assert (await client.next())["type"] == "welcome"
        await client.close()
    with pytest.raises(InvalidStatus) as caught:
        await TestClient.open(**as_host("evil.example", ws_port))
    response = caught.value.response
    assert response.status_code == 400
    error = json.loads(response.body)
    assert error["type"] == "error" and error["code"] == "HOST_NOT_ALLOWED"
    metrics = (await http.get("/metrics")).text
    assert refusals(metrics, "http") == 4
    assert refusals(metrics, "ws_handshake") == 1
    assert gateway.websocket.guard.sessions.count == 0


async def test_allowed_hosts_adds_names_and_star_opts_out(gateway_factory):
    listed = await gateway_factory(
        gateway_config(http={"allowed_hosts": ["gw.plant.example", "*.corp.example"]})
    )
    anything = await gateway_factory(gateway_config(http={"allowed_hosts": ["*"]}))
    async with httpx.AsyncClient(base_url=base_url(listed)) as http:
        for host, status in (
            ("gw.plant.example", 200),
            ("gw.plant.example:5000", 200),
            ("GW.Plant.Example.", 200),
            ("screen.corp.example", 200),
            ("corp.example", 400),
            ("localhost", 200),  # the defaults stay
            ("evil.example", 400),
        ):
            reply = await http.get("/v1/health", headers={"Host": host})
            assert reply.status_code == status, host
    async with httpx.AsyncClient(base_url=base_url(anything)) as http:
        reply = await http.get("/v1/health", headers={"Host": "evil.example"})
        assert reply.status_code == 200
    client = await TestClient.open(**as_host("evil.example", anything.websocket.port))
    await client.close()


def test_host_policy_defaults_and_address_refresh():
    now = [0.0]
    own = [frozenset({ipaddress.ip_address("192.0.2.7")})]
    policy = HostPolicy(
        ["10.1.2.3", "[fd00::9]"],
        names=["gateway-01.plant.lan"],
        addresses=lambda: own[0],
        clock=lambda: now[0],
    )
    for host in (
        None,  # no Host: not a browser
        "localhost",
        "app.localhost",
        "127.9.9.9",
        "[::1]:8765",
        "192.0.2.7:5000",
        "10.1.2.3",
        "[fd00::9]:80",
        "gateway-01.plant.lan",
    ):
        assert policy.allows(host), host
    for host in ("evil.example", "192.0.2.8", "[fe80::1]", "gateway-01.plant.lan.evil", "x:99999"):
        assert not policy.allows(host), host
    # The machine got a new address: a miss re-reads the interfaces, at most so often.
    own[0] = frozenset({ipaddress.ip_address("192.0.2.8")})
    assert not policy.allows("192.0.2.8")
    now[0] = ADDRESS_REFRESH_S
    assert policy.allows("192.0.2.8")
    assert not policy.allows("192.0.2.7")


def test_bad_allowed_hosts_are_config_errors():
    machines = [{"id": "m", "name": "M", "host": "h"}]
    for bad in ("http://gw", "gw/x", "a*.example", "*.", "x y", ""):
        with pytest.raises(ConfigError, match="allowed_hosts"):
            parse_config({"http": {"allowed_hosts": ["ok.example", bad]}, "machines": machines})
    config = parse_config({"http": {"allowed_hosts": ["*", "*.ok.example"]}, "machines": machines})
    assert config.http.allowed_hosts == ("*", "*.ok.example")


# -- compression -------------------------------------------------------------------------------


async def test_large_replies_are_gzipped_when_asked(http):
    for path in ("/openapi.json", "/metrics", "/docs/assets/swagger-ui-bundle.js"):
        plain = await http.get(path, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers, path
        async with http.stream("GET", path, headers={"Accept-Encoding": "gzip"}) as packed:
            assert packed.headers["content-encoding"] == "gzip", path
            assert "accept-encoding" in packed.headers["vary"].lower()
            raw = b"".join([chunk async for chunk in packed.aiter_raw()])
        assert len(raw) < len(plain.content) / 3, path
        if path != "/metrics":
            assert gzip.decompress(raw) == plain.content, path
    # Small replies are not worth it.
    health = await http.get("/v1/health", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in health.headers
