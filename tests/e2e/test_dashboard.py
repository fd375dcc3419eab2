"""The dashboard in a real browser (Debian's Chromium, headless, via Playwright)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.integration.conftest import FAST_MACHINE, gateway_config

pytestmark = pytest.mark.asyncio

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser():
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


def dashboard_config(**overrides):
    machines = [
        {
            **FAST_MACHINE,
            "id": "machine_1",
            "name": "Carrusel Principal",
            "simulator": {"embedded": True, "seconds_per_position": 0.1},
        },
        {**FAST_MACHINE, "id": "machine_2", "name": "Carrusel Secundario"},
    ]
    return gateway_config(machines=machines, **overrides)


async def open_page(browser: Browser, gateway, path: str = "/") -> Page:
    """A page of the gateway with what it did recorded: ``errors`` (uncaught exceptions),
    ``console_errors`` (failed loads, refused content, console.error) and ``requests``."""
    page = await browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    console_errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda request: requests.append(request.url))
    page.errors = errors  # type: ignore[attr-defined]
    page.console_errors = console_errors  # type: ignore[attr-defined]
    page.requests = requests  # type: ignore[attr-defined]
    await page.goto(f"http://127.0.0.1:{gateway.http_port}{path}")
    return page


async def open_dashboard(browser: Browser, gateway, query: str = "") -> Page:
    return await open_page(browser, gateway, f"/{query}")


def card(page: Page, machine_id: str):
    return page.locator(f'article.machine[data-machine="{machine_id}"]')


async def test_dashboard_moves_and_shows_estop(browser, gateway_factory):
    gateway = await gateway_factory(dashboard_config())
    page = await open_dashboard(browser, gateway)

    await expect(page.get_by_test_id("link-state")).to_have_text("online")
    await expect(page.locator("article.machine")).to_have_count(2)
    # Loaded under its Content-Security-Policy with nothing refused or missing (the icon).
    await page.wait_for_load_state("networkidle")
    assert page.console_errors == []  # type: ignore[attr-defined]
    requested = page.requests  # type: ignore[attr-defined]
    assert f"http://127.0.0.1:{gateway.http_port}/static/favicon.svg" in requested
    first, second = card(page, "machine_1"), card(page, "machine_2")
    await expect(first.locator(".name")).to_have_text("Carrusel Principal")
    await expect(second.locator(".name")).to_have_text("Carrusel Secundario")
    await expect(first.locator(".pos")).to_have_text("1")
    await expect(first.locator('.flags li[data-flag="READY"] .v')).to_have_text("OK")
    await expect(first.locator(".loop .bucket")).to_have_count(30)

    # Record every bucket shown while moving: the card must animate through the loop.
    await page.evaluate(
        """() => {
            window.seen = [];
            const pos = document.querySelector('article[data-machine="machine_1"] .pos');
            new MutationObserver(() => window.seen.push(pos.textContent))
              .observe(pos, {childList: true, characterData: true, subtree: true});
        }"""
    )
    await first.locator(".target").fill("8")
    await first.locator(".go").click()
    await expect(first.locator(".outcome")).to_have_text("arrived at 8", timeout=10_000)
    await expect(first.locator(".pos")).to_have_text("8")
    await expect(first.locator(".loop .bucket.current")).to_have_attribute("data-position", "8")
    seen = await page.evaluate("window.seen")
    assert {"3", "5", "7", "8"} <= set(seen), seen
    assert gateway.simulators["machine_1"].model.position_index == 7

    await second.get_by_role("button", name="Press e-stop").click()
    estop = second.locator('.flags li[data-flag="PARADA_EMERGENCIA"] .v')
    await expect(estop).to_have_text("Activa")
    await expect(estop).to_have_class("v fault")
    await expect(second.locator(".go")).to_be_disabled()
    await expect(second.locator(".why")).to_contain_text("emergency stop pressed")
    await expect(second.locator(".interlocks")).to_contain_text("PARADA_EMERGENCIA")
    assert gateway.fleet.get("machine_2").snapshot.status.emergency_stop

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    await second.get_by_role("button", name="Release e-stop").click()
    await expect(second.locator(".go")).to_be_enabled()
    assert page.errors == []  # type: ignore[attr-defined]
    assert page.console_errors == []  # type: ignore[attr-defined]


async def test_api_docs_render_offline_under_their_policy(browser, gateway_factory):
    """Swagger UI comes from the gateway itself (no CDN) and runs under its strict CSP."""
    gateway = await gateway_factory(dashboard_config())
    page = await open_page(browser, gateway, "/docs")
    operations = sum(len(path) for path in gateway.http.app.openapi()["paths"].values())
    await expect(page.locator(".opblock")).to_have_count(operations)
    await expect(page.locator(".opblock-tag-section h3").first).to_contain_text("Machines")
    await page.wait_for_load_state("networkidle")
    origin = f"http://127.0.0.1:{gateway.http_port}/"
    requests = page.requests  # type: ignore[attr-defined]
    assert requests and all(url.startswith(origin) for url in requests), requests
    assert page.errors == []  # type: ignore[attr-defined]
    assert page.console_errors == []  # type: ignore[attr-defined]


async def test_dashboard_with_auth_and_reconnect(browser, gateway_factory):
    token = "viewer-secret"
    config = dashboard_config(
        auth={
            "tokens": [
                {
                    "name": "screen",
                    "role": "viewer",
                    "sha256": hashlib.sha256(token.encode()).hexdigest(),
                }
            ]
        }
    )
    gateway = await gateway_factory(config)
    page = await open_dashboard(browser, gateway)
    await expect(page.get_by_test_id("link-state")).to_have_text("offline")
    await page.locator("#token").fill(token)
    await page.get_by_role("button", name="Use").click()
    await expect(page.get_by_test_id("link-state")).to_have_text("online")
    await expect(page.locator("article.machine")).to_have_count(2)
    first = card(page, "machine_1")
    await expect(first.locator(".go")).to_be_disabled()
    await expect(first.locator(".why")).to_have_text("your token may only view")

    # The gateway goes away: the page says so; it comes back on the same port: it reconnects.
    ws_port, http_port = gateway.websocket.port, gateway.http_port
    await gateway.stop()
    await expect(page.locator("#offline-banner")).to_be_visible()
    restarted = await gateway_factory(
        dashboard_config(
            auth=config.auth.model_dump(),
            websocket={"host": "127.0.0.1", "port": ws_port},
            http={"host": "127.0.0.1", "port": http_port},
        )
    )
    await expect(page.get_by_test_id("link-state")).to_have_text("online", timeout=15_000)
    await expect(page.locator("#offline-banner")).to_be_hidden()
    assert restarted.websocket.sessions
