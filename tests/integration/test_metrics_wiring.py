"""The composition root wires one GatewayMetrics: a status broadcast written by the real
WebSocket server shows up in the real ``GET /metrics`` histogram."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.promtool import assert_promtool_accepts
from tests.integration.wsclient import TestClient

DELAY_COUNT = "carousel_ws_broadcast_delay_seconds_count"


async def scrape(http: httpx.AsyncClient) -> dict[str, float]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels
    }


async def test_a_broadcast_delay_reaches_the_metrics_endpoint(gateway):
    metrics = gateway.http.api.metrics
    assert gateway.websocket.broadcast_delay_observer == metrics.observe_broadcast_delay
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        before = await scrape(http)
        ws = await TestClient.open(f"ws://127.0.0.1:{gateway.websocket.port}")
        await ws.next()  # welcome
        await ws.request(
            {
                "type": "subscribe",
                "subscription_type": "status_updates",
                "machine_ids": ["machine_1"],
            }
        )
        moved = await http.post("/v1/machines/machine_1/move?wait=arrival", json={"position": 4})
        assert moved.status_code == 200
        await ws.wait_for(
            lambda m: m["type"] == "status_broadcast" and m["status"]["machine_1"]["position"] == 4
        )
        after = await scrape(http)
        await ws.close()
    assert after[DELAY_COUNT] > before[DELAY_COUNT]
    assert after["carousel_ws_sessions"] == 1.0


async def test_promtool_accepts_the_metrics_of_a_gateway_that_moved(gateway):
    """Every family after real traffic (a session, a MOVE, its histogram buckets), as
    Prometheus' own linter reads the exposition: names, types, help, units, counters."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        ws = await TestClient.open(f"ws://127.0.0.1:{gateway.websocket.port}")
        await ws.next()  # welcome
        moved = await http.post("/v1/machines/machine_1/move?wait=arrival", json={"position": 6})
        assert moved.status_code == 200
        exposition = (await http.get("/metrics")).text
        await ws.close()
    assert "carousel_plc_breaker_opened_total" in exposition
    assert "carousel_ws_sessions 1.0" in exposition
    await assert_promtool_accepts(exposition)
