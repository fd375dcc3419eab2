"""Two gateways of one cell ([ha]) on one mosquitto and one PostgreSQL: they publish as ONE
Sparkplug edge node. Only the active is born; at a graceful handover the host (Eclipse
Tahu's decoder in Node) sees the old active's NDEATH with its own bdSeq, then the new
active's NBIRTH with the next bdSeq from the shared sequence, ``Owner/Instance`` and
``Owner/Epoch``, then its DBIRTH. Health and metrics follow whichever link exists."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, expect
from prometheus_client.parser import text_string_to_metric_families

from carousel_gateway.app import Gateway
from carousel_gateway.fleet.events import StatusChanged
from carousel_gateway.sim.carousel import CarouselModel
from carousel_gateway.sim.server import SimulatorServer, SimulatorSettings
from tests.e2e.test_dashboard import browser, open_page, untranslated
from tests.integration.conftest import FAST_SECONDS_PER_POSITION, gateway_config
from tests.integration.test_ha_gateways import LEASE, until_active
from tests.mqtt.conftest import Broker, metrics_of, mqtt_settings

__all__ = ["browser"]  # the fixture, shared with tests/e2e

pytestmark = pytest.mark.asyncio

CELL = "cell_mqtt"


def kind(name: str, device: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("kind") == name and (device is None or m.get("device") == device)


@pytest.fixture
async def ha_cell(postgres_server: Any, broker: Broker) -> AsyncIterator[Callable[[str], Any]]:
    """A single-session simulator, a schema of its own, and a starter of gateways of the
    cell (same [mqtt] identity on both, as the docs require)."""
    sim = SimulatorServer(
        CarouselModel(30, FAST_SECONDS_PER_POSITION),
        settings=SimulatorSettings(release_time_s=0.3, idle_drop_s=1.0),
    )
    await sim.start()
    url = postgres_server.url_for_new_schema()
    gateways: list[Gateway] = []

    async def start(instance: str) -> Gateway:
        config = gateway_config(
            [{"id": "m1", "name": "M1", "host": "127.0.0.1", "port": sim.port, "positions": 30}],
            journal={"url": url},
            ha={"enabled": True, "cell": CELL, "instance": instance, **LEASE},
            mqtt=mqtt_settings(broker),
        )
        gateway = Gateway(config)
        await gateway.start()
        gateways.append(gateway)
        return gateway

    yield start
    for gateway in gateways:
        with contextlib.suppress(Exception):
            await gateway.stop()
    await sim.stop()


async def mqtt_view(gateway: Gateway) -> tuple[dict[str, Any] | None, dict[str, float]]:
    """``/v1/health`` ``data.mqtt`` and the ``carousel_mqtt_*`` samples, as scraped."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        health = (await http.get("/v1/health")).json()["data"]["mqtt"]
        text = (await http.get("/metrics")).text
    samples = {
        sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items())): (
            sample.value
        )
        for family in text_string_to_metric_families(text)
        if family.name.startswith("carousel_mqtt")
        for sample in family.samples
    }
    return health, samples


async def test_one_edge_node_per_cell_across_a_graceful_handover(ha_cell, consumer) -> None:
    a = await ha_cell("gw-a")
    await until_active(a)
    assert a.ha is not None and a.ha.epoch is not None
    epoch_a = a.ha.epoch
    nbirth = await consumer.wait_for(kind("NBIRTH"))
    assert nbirth["topic"] == "spBv1.0/site/NBIRTH/cell_a"
    node = metrics_of(nbirth)
    bd_seq_a = node["bdSeq"]
    assert node["Owner/Instance"] == "gw-a"
    assert node["Owner/Epoch"] == epoch_a
    assert {m["name"]: m["type"] for m in nbirth["payload"]["metrics"]}["Owner/Epoch"] == "Int64"
    await consumer.wait_for(kind("DBIRTH", "m1"))

    # The standby: no link, no birth; health and metrics say "standby".
    b = await ha_cell("gw-b")
    assert b.ha is not None
    await b.ha.wait_holder("gw-a")
    assert b.mqtt is None
    health, samples = await mqtt_view(b)
    assert health is not None and health["state"] == "standby"
    assert samples["carousel_mqtt_link_state{state=standby}"] == 1.0
    assert samples["carousel_mqtt_connected"] == 0.0
    health, samples = await mqtt_view(a)
    assert health is not None and health["state"] == "online" and health["bd_seq"] == bd_seq_a
    assert samples["carousel_mqtt_connected"] == 1.0

    # A graceful stop of the active: its NDEATH (its own bdSeq), then gw-b is born with the
    # next bdSeq of the one sequence the cell shares, its instance and the next epoch.
    start = consumer.mark()
    await a.stop()
    ndeath = await consumer.wait_for(kind("NDEATH"), start=start)
    assert metrics_of(ndeath)["bdSeq"] == bd_seq_a
    await until_active(b)
    assert b.ha.epoch == epoch_a + 1
    nbirth_b = await consumer.wait_for(kind("NBIRTH"), start=start)
    node_b = metrics_of(nbirth_b)
    assert node_b["bdSeq"] == (bd_seq_a + 1) % 256
    assert node_b["Owner/Instance"] == "gw-b"
    assert node_b["Owner/Epoch"] == epoch_a + 1
    dbirth_b = await consumer.wait_for(kind("DBIRTH", "m1"), start=start)
    order = [m for m in consumer.messages[start:] if "kind" in m]
    assert order.index(ndeath) < order.index(nbirth_b) < order.index(dbirth_b)
    assert [
        metrics_of(m)["Owner/Instance"] for m in consumer.sparkplug() if m["kind"] == "NBIRTH"
    ] == ["gw-a", "gw-b"]  # only ever the active was born

    # The new active's health and metrics show its link (the object outlived the standby).
    assert b.mqtt is not None
    await b.mqtt.wait_until(lambda status: status.connected)
    health, samples = await mqtt_view(b)
    assert health is not None and health["state"] == "online"
    assert health["bd_seq"] == node_b["bdSeq"]
    assert samples["carousel_mqtt_connected"] == 1.0
    assert samples["carousel_mqtt_connects_total"] == 1.0
    assert samples["carousel_mqtt_messages_published_total{kind=NBIRTH}"] == 1.0
    assert consumer.problems() == []


async def test_a_fenced_active_leaves_with_its_own_bdseq_before_the_next_is_born(
    ha_cell, consumer
) -> None:
    a = await ha_cell("gw-a")
    await until_active(a)
    assert a.ha is not None and a.ha.epoch is not None
    epoch_a = a.ha.epoch
    bd_seq_a = metrics_of(await consumer.wait_for(kind("NBIRTH")))["bdSeq"]
    b = await ha_cell("gw-b")
    assert b.ha is not None
    await b.ha.wait_holder("gw-a")

    start = consumer.mark()
    await a.ha.halt()  # its renewals stop: it fences itself while the process runs on
    ndeath = await consumer.wait_for(kind("NDEATH"), start=start)
    assert metrics_of(ndeath)["bdSeq"] == bd_seq_a
    await until_active(b)
    nbirth_b = await consumer.wait_for(kind("NBIRTH"), start=start)
    node_b = metrics_of(nbirth_b)
    assert (node_b["bdSeq"], node_b["Owner/Instance"], node_b["Owner/Epoch"]) == (
        (bd_seq_a + 1) % 256,
        "gw-b",
        epoch_a + 1,
    )
    order = [m for m in consumer.messages[start:] if "kind" in m]
    assert order.index(ndeath) < order.index(nbirth_b)
    # The fenced instance shows "standby" (no link), keeping the bdSeq it last used.
    assert a.mqtt is None
    health, samples = await mqtt_view(a)
    assert health is not None and health["state"] == "standby"
    assert health["bd_seq"] == bd_seq_a
    assert samples["carousel_mqtt_link_state{state=standby}"] == 1.0
    assert consumer.problems() == []


async def test_after_the_fence_nothing_but_the_ndeath_leaves_the_old_active(
    ha_cell, consumer
) -> None:
    """A frozen active that wakes up runs its fence callback first, but readings waiting
    on its sockets are applied right after: none of them, nor the links' own disconnection,
    may reach the host as the cell's data (the next active is about to be born)."""
    a = await ha_cell("gw-a")
    await until_active(a)
    assert a.ha is not None and a.fleet is not None
    bd_seq_a = metrics_of(await consumer.wait_for(kind("NBIRTH")))["bdSeq"]
    await consumer.wait_for(kind("DBIRTH", "m1"))
    machine = a.fleet.get("m1")
    assert machine.snapshot.position is not None

    start = consumer.mark()
    a.ha._fence("the lease deadline passed (test)")  # what the deadline timer runs
    # A reading the woken instance applies after its fence (a reply that was waiting):
    previous = machine.snapshot
    moved = dataclasses.replace(previous, position=previous.position % 30 + 1)
    a.fleet.bus.publish(StatusChanged("m1", time.time(), snapshot=moved, previous=previous))
    ndeath = await consumer.wait_for(kind("NDEATH"), start=start)

    assert metrics_of(ndeath)["bdSeq"] == bd_seq_a
    after = [m["kind"] for m in consumer.messages[start:] if "kind" in m]
    assert after == ["NDEATH"], after
    assert consumer.problems() == []


async def test_the_standby_dashboard_says_standby_not_a_fault(ha_cell, browser: Browser) -> None:
    a = await ha_cell("gw-a")
    await until_active(a)
    b = await ha_cell("gw-b")
    assert b.ha is not None
    await b.ha.wait_holder("gw-a")
    tab = await open_page(browser, b, "/", lang="en")
    badge = tab.page.get_by_test_id("mqtt-state")
    await expect(badge).to_have_attribute("data-state", "standby", timeout=15_000)
    await expect(badge).to_have_text("MQTT: standby (the active instance publishes)")
    await expect(badge).to_have_class("link standby")
    assert await untranslated(tab.page) == []
    assert tab.errors == []
