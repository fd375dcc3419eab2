"""Security: TLS, browser origins, limits and lockout, and tokens kept out of logs.

Every refusal is checked for its status, its own error code and its count in /metrics.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from carousel_gateway.api.auth import redact
from carousel_gateway.api.guard import AuthLockout, OriginPolicy, TokenBucket
from carousel_gateway.app import Gateway
from carousel_gateway.config import ConfigError, parse_config
from tests.integration.conftest import gateway_config
from tests.integration.wsclient import TestClient

OPERATOR_TOKEN = "op-7c1f0e9d2b"
VIEWER_TOKEN = "view-4a8b3c"
WRONG_TOKEN = "guess-0000"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKENS = {
    "tokens": [
        {"name": "wms", "role": "operator", "sha256": digest(OPERATOR_TOKEN)},
        {"name": "screen", "role": "viewer", "sha256": digest(VIEWER_TOKEN)},
    ]
}


def ws_url(gateway: Any, scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{gateway.websocket.port}"


def http_url(gateway: Any, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{gateway.http_port}"


async def refused(url: str, **kwargs: Any) -> tuple[int, dict[str, Any], Any]:
    """Open a session that must be refused: its status, ``error`` body and headers."""
    with pytest.raises(InvalidStatus) as caught:
        await TestClient.open(url, **kwargs)
    response = caught.value.response
    return response.status_code, json.loads(response.body), response.headers


async def opens(url: str, **kwargs: Any) -> TestClient:
    client = await TestClient.open(url, **kwargs)
    assert (await client.next())["type"] == "welcome"
    return client


async def scrape(gateway: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(base_url=http_url(gateway)) as http:
        text = (await http.get("/metrics")).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def refusals(samples: dict, where: str, code: str) -> float:
    return samples[("carousel_refusals_total", (("code", code), ("where", where)))]


# -- TLS -------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made for this test."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "carousel-gateway test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_serves_wss_and_https_on_the_same_ports(gateway_factory, certificate):
    cert, key = certificate
    gateway = await gateway_factory(
        gateway_config(security={"tls_cert": str(cert), "tls_key": str(key)})
    )
    trust = ssl.create_default_context(cafile=str(cert))
    client = await opens(ws_url(gateway, "wss"), ssl=trust)
    status = await client.request({"type": "get_status", "machine_id": "machine_1"})
    assert status["raw_status"] == 21
    # The dashboard's page, served over https, may open the wss session.
    page = await opens(ws_url(gateway, "wss"), ssl=trust, origin=http_url(gateway, "https"))
    await page.close()
    async with httpx.AsyncClient(base_url=http_url(gateway, "https"), verify=trust) as http:
        assert (await http.get("/v1/health")).status_code == 200
        moved = await http.post("/v1/machines/machine_1/move?wait=arrival", json={"position": 4})
        assert moved.json()["data"]["outcome"]["state"] == "arrived"
    # Plain text is not served on those ports, nor is an untrusted certificate accepted.
    with pytest.raises((OSError, ConnectionClosed, InvalidHandshake, TimeoutError)):
        await TestClient.open(ws_url(gateway), open_timeout=2)
    async with httpx.AsyncClient(base_url=http_url(gateway), timeout=2) as plain:
        with pytest.raises(httpx.HTTPError):
            await plain.get("/v1/health")
    with pytest.raises(ssl.SSLCertVerificationError):
        await TestClient.open(ws_url(gateway, "wss"), ssl=ssl.create_default_context())
    await client.close()


def test_tls_needs_both_files_and_good_ones(tmp_path):
    base = {"machines": [{"id": "m", "name": "M"}]}
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        parse_config({**base, "security": {"tls_cert": "/x.pem"}})
    with pytest.raises(ConfigError, match="allowed_origins"):
        parse_config({**base, "security": {"allowed_origins": ["wms.example"]}})


async def test_bad_certificate_stops_the_start_before_anything_runs(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    gateway = Gateway(gateway_config(security={"tls_cert": str(junk), "tls_key": str(junk)}))
    with pytest.raises(OSError, match="TLS certificate"):
        await gateway.start()
    assert gateway.fleet is None and not gateway.simulators


# -- origins ---------------------------------------------------------------------------------


async def test_websocket_origins_same_host_only_by_default(gateway_factory):
    gateway = await gateway_factory()
    http_port, ws_port = gateway.http_port, gateway.websocket.port
    # No Origin (a script, the WMS), the dashboard's own page, a page on the WS port itself.
    for origin in (None, f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{ws_port}"):
        client = await opens(ws_url(gateway), origin=origin)
        await client.close()
    # Another site, another port on the same host, https when the gateway serves http.
    for origin in (
        "http://evil.example",
        f"http://evil.example:{http_port}",
        "http://127.0.0.1:9",
        f"https://127.0.0.1:{http_port}",
        "null",
    ):
        status, body, _ = await refused(ws_url(gateway), origin=origin)
        assert status == 403, origin
        assert body["type"] == "error" and body["code"] == "ORIGIN_NOT_ALLOWED"
    samples = await scrape(gateway)
    assert refusals(samples, "ws_handshake", "ORIGIN_NOT_ALLOWED") == 5
    assert gateway.websocket.guard.sessions.count == 0


async def test_listed_origins_are_allowed_for_websocket_and_cors(gateway_factory):
    gateway = await gateway_factory(
        gateway_config(security={"allowed_origins": ["https://wms.plant.example"]})
    )
    client = await opens(ws_url(gateway), origin="https://wms.plant.example")
    await client.close()
    async with httpx.AsyncClient(base_url=http_url(gateway)) as http:
        headers = {"Origin": "https://wms.plant.example"}
        read = await http.get("/v1/machines/machine_1/status", headers=headers)
        assert read.status_code == 200
        assert read.headers["access-control-allow-origin"] == "https://wms.plant.example"
        preflight = await http.options(
            "/v1/machines/machine_1/move",
            headers={
                **headers,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 204
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "Authorization" in preflight.headers["access-control-allow-headers"]
        # The dashboard's own page (same host, HTTP port) posts without any listing.
        same = await http.post(
            "/v1/machines/machine_1/command",
            json={"command": 0},
            headers={"Origin": http_url(gateway)},
        )
        assert same.status_code == 200
        for origin in ("https://evil.example", "http://wms.plant.example"):
            foreign = await http.post(
                "/v1/machines/machine_1/move", json={"position": 3}, headers={"Origin": origin}
            )
            assert foreign.status_code == 403
            assert foreign.json()["code"] == "ORIGIN_NOT_ALLOWED"
            assert "access-control-allow-origin" not in foreign.headers
    assert gateway.simulators["machine_1"].model.moves_started == 0
    samples = await scrape(gateway)
    assert refusals(samples, "http", "ORIGIN_NOT_ALLOWED") == 2


def test_origin_policy_rules():
    policy = OriginPolicy(["https://wms.example:8443", "null"], tls=False)
    policy.ports |= {5000, 8765}
    assert policy.allows(None, "gw:8765")
    assert policy.allows("http://gw:5000", "gw:8765")
    assert policy.allows("HTTP://GW:5000", "gw:8765")
    assert policy.allows("https://wms.example:8443", "gw:8765")
    assert policy.allows("null", "gw:8765")
    assert not policy.allows("https://wms.example", "gw:8765")  # port 443, not 8443
    assert not policy.allows("http://gw:5001", "gw:8765")
    assert not policy.allows("http://gw.evil:5000", "gw:8765")
    assert not policy.allows("http://gw:5000", None)
    assert not policy.allows("http://user@gw:5000", "gw:8765")
    assert not policy.allows("not an origin", "gw:8765")
    assert OriginPolicy(["*"]).allows("http://anything.example", None)
    v6 = OriginPolicy()
    v6.ports.add(5000)
    assert v6.allows("http://[::1]:5000", "[::1]:8765")


# -- limits ----------------------------------------------------------------------------------


async def test_message_rate_limit_answers_rate_limited_and_keeps_the_session(gateway_factory):
    gateway = await gateway_factory(
        gateway_config(limits={"messages_per_second": 5, "message_burst": 5})
    )
    client = await opens(ws_url(gateway))
    other = await opens(ws_url(gateway))
    for i in range(12):
        await client.send({"type": "ping", "request_id": f"p{i}"})
    replies = [await client.next() for _ in range(12)]
    limited = [r for r in replies if r["type"] == "error"]
    assert len([r for r in replies if r["type"] == "pong"]) >= 5
    assert len(limited) >= 6
    assert all(r["code"] == "RATE_LIMITED" for r in limited)
    assert {r["request_id"] for r in limited} <= {f"p{i}" for i in range(12)}
    # Other sessions have their own budget; this one gets its back with time.
    assert (await other.request({"type": "ping"}))["type"] == "pong"
    await asyncio.sleep(0.5)
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    samples = await scrape(gateway)
    assert refusals(samples, "ws_message", "RATE_LIMITED") == len(limited)
    await client.close()
    await other.close()


async def test_a_flood_is_closed_with_1008_and_others_keep_working(gateway_factory):
    gateway = await gateway_factory(
        gateway_config(
            limits={"messages_per_second": 5, "message_burst": 5, "max_refused_messages": 20}
        )
    )
    flood = await opens(ws_url(gateway))
    other = await opens(ws_url(gateway))
    with pytest.raises(ConnectionClosed):
        for _ in range(1000):
            await flood.send({"type": "get_status"})
            await asyncio.sleep(0)
        for _ in range(1000):
            await flood.next()
    assert flood.connection.close_code == 1008
    assert (await other.request({"type": "get_status", "machine_id": "machine_2"}))[
        "raw_status"
    ] == 21
    await other.close()


async def test_commands_per_machine_are_limited_for_all_clients_together(gateway_factory):
    gateway = await gateway_factory(
        gateway_config(limits={"commands_per_machine_per_second": 0.5, "command_burst": 2})
    )
    first = await opens(ws_url(gateway))
    second = await opens(ws_url(gateway))
    status = {"type": "send_command", "machine_id": "machine_1", "command": {"command": 0}}
    assert (await first.request(status))["type"] == "command_result"
    assert (await second.request(status))["type"] == "command_result"
    limited = await first.request(status)
    assert limited["type"] == "error" and limited["code"] == "MACHINE_RATE_LIMITED"
    assert limited["machine_id"] == "machine_1"
    # Another machine has its own budget.
    other = {**status, "machine_id": "machine_2"}
    assert (await second.request(other))["type"] == "command_result"
    async with httpx.AsyncClient(base_url=http_url(gateway)) as http:
        response = await http.post("/v1/machines/machine_1/command", json={"command": 0})
        assert response.status_code == 429
        assert response.json()["code"] == "MACHINE_RATE_LIMITED"
        assert int(response.headers["retry-after"]) >= 1
    # Refused before the machine: nothing reached the PLC or the journal for them.
    await gateway.journal.flush()
    history = await gateway.journal.history("machine_1", kinds=["command", "command_refused"])
    assert len(history.rows) == 2
    samples = await scrape(gateway)
    assert refusals(samples, "ws_message", "MACHINE_RATE_LIMITED") == 1
    assert refusals(samples, "http", "MACHINE_RATE_LIMITED") == 1
    await first.close()
    await second.close()


async def test_session_limits_per_address_and_in_all_refuse_with_503(gateway_factory):
    gateway = await gateway_factory(
        gateway_config(limits={"max_sessions": 4, "max_sessions_per_address": 2})
    )
    a, b = await opens(ws_url(gateway)), await opens(ws_url(gateway))
    status, body, _ = await refused(ws_url(gateway))
    assert status == 503 and body["code"] == "ADDRESS_SESSION_LIMIT"
    await a.close()
    await asyncio.sleep(0.05)
    c = await opens(ws_url(gateway))  # the slot came back
    # 127.0.0.2 is another address (loopback): its own 2, up to the total of 4.
    others = []
    for _ in range(2):
        client = await TestClient.open(
            ws_url(gateway), sock=await _socket_from("127.0.0.2", gateway.websocket.port)
        )
        assert (await client.next())["type"] == "welcome"
        others.append(client)
    status, body, _ = await refused(
        ws_url(gateway), sock=await _socket_from("127.0.0.3", gateway.websocket.port)
    )
    assert status == 503 and body["code"] == "SESSION_LIMIT"
    samples = await scrape(gateway)
    assert refusals(samples, "ws_handshake", "ADDRESS_SESSION_LIMIT") == 1
    assert refusals(samples, "ws_handshake", "SESSION_LIMIT") == 1
    for client in (b, c, *others):
        await client.close()
    await asyncio.sleep(0.05)
    assert gateway.websocket.guard.sessions.count == 0
    assert not gateway.websocket.guard.sessions.by_address


async def _socket_from(address: str, port: int):
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def test_failed_handshakes_hold_no_slot(gateway_factory):
    """Plain HTTP to the WebSocket port, refused tokens, vanished clients: no slot leaks."""
    gateway = await gateway_factory(gateway_config(auth=TOKENS))
    port = gateway.websocket.port
    for _ in range(30):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /?token={OPERATOR_TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 426")
        writer.close()
        await writer.wait_closed()
    for _ in range(5):
        await refused(ws_url(gateway))  # no token: 401
    await asyncio.sleep(0.1)
    assert gateway.websocket.guard.sessions.count == 0


async def test_wrong_tokens_lock_the_address_out_of_both_apis(gateway_factory):
    gateway = await gateway_factory(
        gateway_config(
            auth=TOKENS, limits={"auth_failures": 3, "auth_failure_window_s": 60, "lockout_s": 1}
        )
    )
    good = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    for _ in range(4):  # a missing token is not a guess: no lockout from these
        status, body, _ = await refused(ws_url(gateway))
        assert status == 401 and body["code"] == "UNAUTHORIZED"
    for _ in range(3):
        status, body, headers = await refused(
            ws_url(gateway), additional_headers={"Authorization": f"Bearer {WRONG_TOKEN}"}
        )
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    # Locked out: even the right token is refused, on the WebSocket and on HTTP.
    status, body, headers = await refused(ws_url(gateway), additional_headers=good)
    assert status == 429 and body["code"] == "AUTH_LOCKED_OUT"
    assert int(headers["Retry-After"]) >= 1
    async with httpx.AsyncClient(base_url=http_url(gateway)) as http:
        locked = await http.get("/v1/machines", headers=good)
        assert locked.status_code == 429 and locked.json()["code"] == "AUTH_LOCKED_OUT"
        assert (await http.get("/v1/health")).status_code == 200  # probes stay open
        samples = await scrape(gateway)
        assert samples[("carousel_auth_lockouts_total", ())] == 1
        assert samples[("carousel_auth_locked_out_addresses", ())] == 1
        assert refusals(samples, "ws_handshake", "UNAUTHORIZED") == 7
        await asyncio.sleep(1.1)
        assert (await http.get("/v1/machines", headers=good)).status_code == 200
    client = await opens(ws_url(gateway), additional_headers=good)
    await client.close()


def test_lockout_window_and_bucket_arithmetic():
    now = [0.0]
    lockout = AuthLockout(3, window_s=10, lockout_s=30, clock=lambda: now[0])
    assert not lockout.failed("a") and not lockout.failed("a")
    now[0] = 11  # the first two fell out of the window
    assert not lockout.failed("a") and not lockout.failed("a")
    assert lockout.failed("a")
    assert lockout.remaining("a") == 30 and lockout.remaining("b") == 0
    now[0] = 41
    assert lockout.remaining("a") == 0
    lockout.failed("c")
    lockout.succeeded("c")  # a good token forgives
    assert not lockout.failed("c") and not lockout.failed("c")
    bucket = TokenBucket(2.0, 2, clock=lambda: now[0])
    assert bucket.acquire() == 0 and bucket.acquire() == 0
    assert bucket.acquire() == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.acquire() == 0


# -- tokens never in logs ----------------------------------------------------------------------


async def test_tokens_never_appear_in_logs(gateway_factory, caplog):
    caplog.set_level(logging.DEBUG)  # websockets logs request lines and headers at DEBUG
    gateway = await gateway_factory(gateway_config(auth=TOKENS))
    secrets = (OPERATOR_TOKEN, VIEWER_TOKEN, WRONG_TOKEN)
    client = await opens(f"{ws_url(gateway)}/?token={VIEWER_TOKEN}")
    await client.request({"type": "get_status"})
    await client.close()
    client = await opens(
        ws_url(gateway), additional_headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    )
    await client.close()
    await refused(f"{ws_url(gateway)}/?token={WRONG_TOKEN}")
    await refused(ws_url(gateway), additional_headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
    async with httpx.AsyncClient(base_url=http_url(gateway)) as http:
        assert (await http.get(f"/v1/machines?token={VIEWER_TOKEN}")).status_code == 200
        assert (await http.get(f"/v1/machines?x=1&token={WRONG_TOKEN}&y=2")).status_code == 401
        headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
        command = {"machine_id": "machine_1", "command": 0}
        assert (await http.post("/v1/command", json=command, headers=headers)).is_success
    await gateway.stop()
    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert secret not in text
    # The lines that would have carried them were logged, redacted.
    access = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("token=[redacted]" in line for line in access), access
    ws_debug = [r.getMessage() for r in caplog.records if r.name.endswith("ws.protocol")]
    assert any("token=[redacted]" in line for line in ws_debug)
    assert any("Bearer [redacted]" in line for line in ws_debug)


def test_redact_keeps_other_text():
    assert redact("GET /v1/machines?a=1 HTTP/1.1") == "GET /v1/machines?a=1 HTTP/1.1"
    assert redact("GET /?token=abc&b=2") == "GET /?token=[redacted]&b=2"
    assert redact("> Authorization: Bearer abc") == "> Authorization: [redacted]"
