"""The dashboard shows the MQTT link's state (Chromium, as in tests/e2e)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser, expect

from tests.e2e.test_dashboard import browser, dashboard_config, open_dashboard, untranslated
from tests.mqtt.conftest import mqtt_settings

__all__ = ["browser"]  # the fixture, shared with tests/e2e

pytestmark = pytest.mark.asyncio


async def test_the_badge_follows_the_broker(browser: Browser, broker: Any, gateway_factory: Any):
    gateway = await gateway_factory(dashboard_config(mqtt=mqtt_settings(broker)))
    tab = await open_dashboard(browser, gateway, lang="en")
    badge = tab.page.get_by_test_id("mqtt-state")
    await expect(badge).to_have_attribute("data-state", "online", timeout=15_000)
    await expect(badge).to_have_text("MQTT: online")
    await broker.stop()
    await expect(badge).to_have_attribute("data-state", "connecting", timeout=15_000)
    await expect(badge).to_have_text("MQTT: connecting…")
    assert await untranslated(tab.page) == []
    assert tab.errors == []


async def test_no_badge_without_mqtt(browser: Browser, gateway_factory: Any):
    gateway = await gateway_factory(dashboard_config())
    tab = await open_dashboard(browser, gateway, lang="en")
    await expect(tab.page.get_by_test_id("mqtt-state")).to_be_hidden()
