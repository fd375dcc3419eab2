"""GatewayMetrics is wired explicitly: built without the WebSocket API, which reports its
broadcast delays through a constructor argument and is followed with ``follow()``."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from carousel_gateway.api.guard import Guard
from carousel_gateway.api.metrics import GatewayMetrics
from carousel_gateway.api.ws import WebSocketApi
from carousel_gateway.config import parse_config
from carousel_gateway.fleet.fleet import Fleet

DELAY = "carousel_ws_broadcast_delay_seconds"


def _config():
    return parse_config(
        {
            "websocket": {"host": "127.0.0.1", "port": 0},
            "machines": [{"id": "m", "name": "M", "host": "127.0.0.1", "port": 9}],
        }
    )


def _samples(metrics: GatewayMetrics) -> dict[str, float]:
    text = metrics.render().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def test_metrics_are_built_without_the_websocket_api():
    config = _config()
    fleet = Fleet(config.machines)
    metrics = GatewayMetrics(fleet, guard=Guard(config.limits, config.security))
    samples = _samples(metrics)
    assert "carousel_ws_sessions" not in samples  # nothing followed yet
    assert "carousel_ws_session_slots" in samples  # the guard's gauges
    assert samples[f"{DELAY}_count"] == 0
    metrics.close()


def test_the_websocket_api_reports_delays_through_its_constructor_argument():
    config = _config()
    fleet = Fleet(config.machines)
    guard = Guard(config.limits, config.security)
    metrics = GatewayMetrics(fleet, guard=guard)
    websocket = WebSocketApi(
        config, fleet, guard=guard, broadcast_delay_observer=metrics.observe_broadcast_delay
    )
    metrics.follow(websocket)
    assert websocket.broadcast_delay_observer == metrics.observe_broadcast_delay
    websocket.broadcast_delay_observer(0.002)
    samples = _samples(metrics)
    assert samples[f"{DELAY}_count"] == 1
    assert samples[f"{DELAY}_sum"] == 0.002
    assert samples["carousel_ws_sessions"] == 0  # followed: its sessions are reported
    metrics.close()
    assert websocket.broadcast_delay_observer == metrics.observe_broadcast_delay  # not ours
