"""What `serve` prints once everything listens: addresses a person can click."""

from __future__ import annotations

import pytest

from carousel_gateway.cli import startup_banner
from carousel_gateway.config import GatewayConfig, parse_config


def config(**tables: object) -> GatewayConfig:
    machines = [{"id": "m1", "name": "A", "kind": "simulator"}]
    return parse_config({**tables, "machines": machines})


def test_a_wildcard_bind_is_shown_as_localhost_with_the_bound_ports() -> None:
    banner = startup_banner(config(), ws_port=8765, http_port=5000)
    assert banner.splitlines() == [
        "carousel-gateway is running (1 machine):",
        "  dashboard       http://localhost:5000/",
        "  WebSocket API   ws://localhost:8765",
        "  API docs        http://localhost:5000/docs",
        "Press Ctrl+C to stop.",
    ]
    assert "0.0.0.0" not in banner


@pytest.mark.parametrize(
    ("host", "shown"),
    [("0.0.0.0", "localhost"), ("::", "localhost"), ("", "localhost"),
     ("10.0.0.5", "10.0.0.5"), ("gw.plant.example", "gw.plant.example"), ("::1", "[::1]")],
)  # fmt: skip
def test_the_host_is_the_real_one_unless_a_wildcard(host: str, shown: str) -> None:
    settings = config(http={"host": host, "port": 0}, websocket={"host": host})
    banner = startup_banner(settings, ws_port=40001, http_port=40002)
    assert f"http://{shown}:40002/" in banner
    assert f"ws://{shown}:40001" in banner


def test_tls_shows_https_and_wss() -> None:
    settings = config(security={"tls_cert": "cert.pem", "tls_key": "key.pem"})
    banner = startup_banner(settings, ws_port=8765, http_port=5000)
    assert "https://localhost:5000/" in banner
    assert "https://localhost:5000/docs" in banner
    assert "wss://localhost:8765" in banner
    assert "http://" not in banner and "ws://" not in banner


def test_mqtt_shows_its_node_and_broker_only_when_on() -> None:
    sparkplug = config(
        mqtt={"enabled": True, "host": "broker.plant", "group_id": "p1", "edge_node_id": "c1"}
    )
    banner = startup_banner(sparkplug, ws_port=1, http_port=2)
    assert "  MQTT            spBv1.0/p1/…/c1 on mqtt://broker.plant:1883" in banner.splitlines()
    json_tls = config(mqtt={"enabled": True, "format": "json", "ca": "/ca.pem", "port": 8883})
    banner = startup_banner(json_tls, ws_port=1, http_port=2)
    assert "carousel/carousels/gateway/… on mqtts://127.0.0.1:8883" in banner
    assert "MQTT" not in startup_banner(config(), ws_port=1, http_port=2)
