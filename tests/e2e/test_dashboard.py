"""The dashboard in a real browser (Debian's Chromium, headless, via Playwright)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from tests.integration.conftest import FAST_MACHINE, gateway_config, wait_until

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
LOCALES = {"es": "es-ES", "en": "en-GB"}

# Everything in the page that is not a catalogue's words: an element naming an entry that
# got no text, a text node or label shaped like a raw key (PARADA_EMERGENCIA, fault_raised),
# the catalogue's missing-key marker, or a placeholder left unfilled.
UNTRANSLATED = r"""() => {
  const bad = [];
  for (const el of document.querySelectorAll("[data-i18n]")) {
    const text = el.textContent.trim();
    if (!text || text === el.dataset.i18n) bad.push(`no text for ${el.dataset.i18n}`);
  }
  const raw = /\b[A-Z]{2,}(?:_[A-Z0-9]+)+\b|\b[a-z]+(?:_[a-z]+)+\b|⟦|\{\w+\}/;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest("script, style")) continue;
    if (raw.test(node.textContent)) bad.push(node.textContent);
  }
  for (const el of document.querySelectorAll("[placeholder], [title], [aria-label]")) {
    for (const name of ["placeholder", "title", "aria-label"]) {
      const value = el.getAttribute(name);
      if (value !== null && (!value.trim() || raw.test(value))) bad.push(`${name}=${value}`);
    }
  }
  if (raw.test(document.title)) bad.push(document.title);
  return bad;
}"""
FONT_PX = "e => parseFloat(getComputedStyle(e).fontSize)"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


def dashboard_config(**overrides: Any) -> Any:
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


@dataclass
class Tab:
    """A page of the gateway and what it did: ``errors`` (uncaught exceptions),
    ``console_errors`` (failed loads, refused content, console.error) and ``requests``."""

    page: Page
    errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


async def open_page(
    browser: Browser, gateway: Any, path: str = "/", lang: str = "en", width: int = 1400
) -> Tab:
    """``path`` of the gateway in a browser set to ``lang``, ``width`` pixels wide."""
    context = await browser.new_context(
        viewport={"width": width, "height": 900}, locale=LOCALES[lang]
    )
    tab = Tab(await context.new_page())
    tab.page.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    tab.page.on(
        "console", lambda m: tab.console_errors.append(m.text) if m.type == "error" else None
    )
    tab.page.on("request", lambda request: tab.requests.append(request.url))
    await tab.page.goto(f"http://127.0.0.1:{gateway.http_port}{path}")
    return tab


async def open_dashboard(browser: Browser, gateway: Any, lang: str = "en") -> Tab:
    tab = await open_page(browser, gateway, "/", lang=lang)
    await expect(tab.page.get_by_test_id("link-state")).to_have_attribute("data-state", "online")
    await expect(tab.page.locator("article.machine")).to_have_count(2)
    return tab


def card(page: Page, machine_id: str) -> Locator:
    return page.locator(f'article.machine[data-machine="{machine_id}"]')


async def untranslated(page: Page) -> list[str]:
    result: list[str] = await page.evaluate(UNTRANSLATED)
    return result


async def simulator_fault(gateway: Any, machine_id: str, fault: str, active: bool) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        reply = await http.post(
            f"/v1/simulators/{machine_id}/faults", json={"fault": fault, "active": active}
        )
        reply.raise_for_status()


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)


async def test_dashboard_moves_and_shows_estop(browser: Browser, gateway_factory: Any) -> None:
    gateway = await gateway_factory(dashboard_config())
    # Before the page opens: a drive fault raised and cleared, in the journal.
    machine_2 = gateway.fleet.get("machine_2")
    await simulator_fault(gateway, "machine_2", "vfd_fault", True)
    await wait_until(gateway.fleet.bus, lambda: machine_2.snapshot.status.vfd_fault)
    await simulator_fault(gateway, "machine_2", "vfd_fault", False)
    await wait_until(gateway.fleet.bus, lambda: not machine_2.snapshot.status.vfd_fault)
    await gateway.journal.flush()

    tab = await open_dashboard(browser, gateway, lang="es")
    page = tab.page
    await expect(page.get_by_test_id("link-state")).to_have_text("En línea")
    assert await page.evaluate("document.documentElement.lang") == "es"
    # The feed starts from the journal, newest first, in words.
    feed = page.locator("#feed li")
    await expect(feed.first).to_contain_text("Carrusel Secundario")
    await expect(feed.first).to_contain_text("Variador rearmado")
    await expect(feed.nth(1)).to_contain_text("Fallo del variador (VFD)")
    await expect(page.locator('#feed li[data-kind="connected"]')).to_have_count(2)
    await expect(page.locator('#feed li[data-kind="connected"]').first).to_contain_text(
        "PLC conectado"
    )
    # Loaded under its Content-Security-Policy with nothing refused or missing (the icon).
    await page.wait_for_load_state("networkidle")
    assert tab.console_errors == []
    assert tab.errors == []
    icon = page.locator('link[rel="icon"]')
    await expect(icon).to_have_attribute("href", "static/favicon.svg")
    requested = tab.requests
    assert f"http://127.0.0.1:{gateway.http_port}/static/favicon.svg" in requested
    assert f"http://127.0.0.1:{gateway.http_port}/v1/events?limit=20" in requested

    first, second = card(page, "machine_1"), card(page, "machine_2")
    await expect(first.locator(".name")).to_have_text("Carrusel Principal")
    await expect(second.locator(".name")).to_have_text("Carrusel Secundario")
    await expect(first.locator(".pos")).to_have_text("1")
    await expect(first.locator(".state")).to_have_text("Listo")
    await expect(first.locator('.flags li[data-flag="READY"] .v')).to_have_text("Lista")
    await expect(first.locator(".loop .bucket")).to_have_count(30)

    # Record every bucket and goal shown while moving: the card animates through the loop
    # and says where it is going.
    await page.evaluate(
        """() => {
            window.seen = []; window.goals = [];
            const card = document.querySelector('article[data-machine="machine_1"]');
            const watch = (sel, into) => new MutationObserver(
                () => into.push(card.querySelector(sel).textContent)
            ).observe(card.querySelector(sel),
                      {childList: true, characterData: true, subtree: true});
            watch('.pos', window.seen); watch('.goal', window.goals);
        }"""
    )
    await first.locator(".target").fill("8")
    await first.locator(".go").click()
    await expect(first.locator(".outcome")).to_have_text("Llegó a la bandeja 8", timeout=10_000)
    await expect(first.locator(".pos")).to_have_text("8")
    await expect(first.locator(".goal")).to_have_text("")
    await expect(first.locator(".loop .bucket.current")).to_have_attribute("data-position", "8")
    seen = await page.evaluate("window.seen")
    assert {"3", "5", "7", "8"} <= set(seen), seen
    goals = await page.evaluate("window.goals")
    assert "Hacia la bandeja 8: faltan 7 bandejas" in goals, goals
    assert "Hacia la bandeja 8: falta 1 bandeja" in goals, goals
    assert gateway.simulators["machine_1"].model.position_index == 7
    await expect(feed.first).to_contain_text("Llegó a la bandeja 8")

    await second.get_by_role("button", name="Pulsar parada de emergencia").click()
    estop = second.locator('.flags li[data-flag="PARADA_EMERGENCIA"] .v')
    await expect(estop).to_have_text("Pulsada")
    await expect(estop).to_have_class("v fault")
    await expect(second.locator(".state")).to_have_text("Parada de emergencia pulsada")
    await expect(second.locator(".go")).to_be_disabled()
    await expect(second.locator(".why")).to_contain_text("Parada de emergencia pulsada")
    await expect(second.locator(".interlocks")).to_have_attribute(
        "data-keys", re.compile(r"\bPARADA_EMERGENCIA\b")
    )
    await expect(page.locator('#feed li[data-kind="fault_raised"]').first).to_contain_text(
        "Parada de emergencia pulsada"
    )
    assert machine_2.snapshot.status.emergency_stop
    assert await untranslated(page) == []

    await second.get_by_role("button", name="Liberar parada de emergencia").click()
    await expect(second.locator(".go")).to_be_enabled()
    await expect(feed.first).to_contain_text("Parada de emergencia liberada")
    assert tab.errors == []
    assert tab.console_errors == []


async def test_failed_move_says_what_happened_and_what_to_do(
    browser: Browser, gateway_factory: Any
) -> None:
    gateway = await gateway_factory(dashboard_config())
    tab = await open_dashboard(browser, gateway, lang="en")
    page = tab.page
    first = card(page, "machine_1")
    await first.locator(".target").fill("16")
    await first.locator(".go").click()
    await expect(first.locator(".state")).to_have_text("Moving")
    await expect(first.locator(".goal")).to_contain_text("Going to bucket 16:")
    await expect(first.locator(".loop .bucket.target")).to_have_attribute("data-position", "16")
    await first.get_by_role("button", name="Press e-stop").click()
    await expect(first.locator(".outcome")).to_have_text(
        "Did not reach bucket 16: Emergency stop pressed", timeout=10_000
    )
    await expect(first.locator(".advice")).to_have_text(
        "What to do: Make sure the area is safe, release the emergency stop button, reset,"
        " then send the move again."
    )
    await expect(first.locator(".goal")).to_have_text("")
    await expect(first.locator(".state")).to_have_text("Emergency stop pressed")
    await expect(page.locator('#feed li[data-kind="move_failed"]')).to_contain_text(
        "Did not reach bucket 16: Emergency stop pressed"
    )
    # The same page in Spanish, switched by hand: every word follows.
    await page.locator('#lang button[data-lang="es"]').click()
    await expect(first.locator(".outcome")).to_have_text(
        "No llegó a la bandeja 16: Parada de emergencia pulsada"
    )
    await expect(first.locator(".advice")).to_contain_text("Qué hacer:")
    assert await untranslated(page) == []
    assert tab.errors == []
    assert tab.console_errors == []


@pytest.mark.parametrize("lang", ["es", "en"])
async def test_dashboard_readable_at_arms_length(
    browser: Browser, gateway_factory: Any, lang: str
) -> None:
    """At a desk (1400 px) and on a tablet (800 px), in each language: a large bucket number
    and state, every word translated, screenshots for a person to look at."""
    gateway = await gateway_factory(dashboard_config())
    tab = await open_dashboard(browser, gateway, lang=lang)
    page = tab.page
    second = card(page, "machine_2")
    await second.locator('.sim button[data-fault="emergency_stop"][data-active="true"]').click()
    pressed = {"es": "Parada de emergencia pulsada", "en": "Emergency stop pressed"}[lang]
    await expect(second.locator(".state")).to_have_text(pressed)
    await expect(page.locator('#feed li[data-kind="fault_raised"]')).to_contain_text(pressed)
    for width in (1400, 800):
        await page.set_viewport_size({"width": width, "height": 900})
        for machine in ("machine_1", "machine_2"):
            box = card(page, machine)
            pos_px = await box.locator(".pos").evaluate(FONT_PX)
            state_px = await box.locator(".state").evaluate(FONT_PX)
            assert pos_px >= 56 and state_px >= 22, (width, machine, pos_px, state_px)
            # Nothing spills out of its card at this width.
            overflow = await box.evaluate("e => e.scrollWidth - e.clientWidth")
            assert overflow <= 0, (width, machine, overflow)
        assert await untranslated(page) == []
        await screenshot(page, f"dashboard-{lang}-{width}.png")
    assert tab.errors == []
    assert tab.console_errors == []


async def test_language_follows_the_browser_and_the_switch_is_remembered(
    browser: Browser, gateway_factory: Any
) -> None:
    gateway = await gateway_factory(dashboard_config())
    tab = await open_dashboard(browser, gateway, lang="en")
    page = tab.page
    link = page.get_by_test_id("link-state")
    await expect(link).to_have_text("Online")
    await expect(page.locator('#lang button[data-lang="en"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    await page.locator('#lang button[data-lang="es"]').click()
    await expect(link).to_have_text("En línea")
    await expect(card(page, "machine_1").locator(".state")).to_have_text("Listo")
    assert await page.title() == "Carruseles"
    await page.reload()
    await expect(link).to_have_text("En línea")
    await expect(page.locator('#lang button[data-lang="es"]')).to_have_attribute(
        "aria-pressed", "true"
    )
    assert await untranslated(page) == []
    assert tab.errors == []


async def test_offline_greys_out_and_disables_every_control(
    browser: Browser, gateway_factory: Any
) -> None:
    gateway = await gateway_factory(dashboard_config())
    tab = await open_dashboard(browser, gateway, lang="es")
    page = tab.page
    controls = page.locator("article.machine button, article.machine input")
    count = await controls.count()
    assert count == 2 * (1 + 1 + 8)  # per card: target, go, eight simulator buttons
    for i in range(count):
        await expect(controls.nth(i)).to_be_enabled()

    ws_port, http_port = gateway.websocket.port, gateway.http_port
    await gateway.stop()
    link = page.get_by_test_id("link-state")
    await expect(link).to_have_attribute("data-state", "offline")
    await expect(link).to_have_text("Sin conexión")
    await expect(page.locator("#offline-banner")).to_be_visible()
    await expect(page.locator("body")).to_have_class("offline")
    for i in range(count):
        await expect(controls.nth(i)).to_be_disabled()
    first = card(page, "machine_1")
    await expect(first.locator(".state")).to_have_text("Sin conexión")
    await expect(first.locator(".conn")).to_have_text("Datos sin actualizar")
    assert await page.locator("#machines").evaluate("e => getComputedStyle(e).filter") != "none"
    await screenshot(page, "dashboard-es-offline.png")

    await gateway_factory(
        dashboard_config(
            websocket={"host": "127.0.0.1", "port": ws_port},
            http={"host": "127.0.0.1", "port": http_port},
        )
    )
    await expect(link).to_have_attribute("data-state", "online", timeout=15_000)
    await expect(page.locator("#offline-banner")).to_be_hidden()
    await expect(page.locator("body")).not_to_have_class("offline")
    for i in range(count):
        await expect(controls.nth(i)).to_be_enabled()
    await expect(first.locator(".state")).to_have_text("Listo")


async def test_api_docs_render_offline_under_their_policy(
    browser: Browser, gateway_factory: Any
) -> None:
    """Swagger UI comes from the gateway itself (no CDN) and runs under its strict CSP."""
    gateway = await gateway_factory(dashboard_config())
    tab = await open_page(browser, gateway, "/docs")
    page = tab.page
    operations = sum(len(path) for path in gateway.http.app.openapi()["paths"].values())
    await expect(page.locator(".opblock")).to_have_count(operations)
    await expect(page.locator(".opblock-tag-section h3").first).to_contain_text("Machines")
    await page.wait_for_load_state("networkidle")
    origin = f"http://127.0.0.1:{gateway.http_port}/"
    requests = tab.requests
    assert requests and all(url.startswith(origin) for url in requests), requests
    assert tab.errors == []
    assert tab.console_errors == []


async def test_dashboard_with_auth_and_reconnect(browser: Browser, gateway_factory: Any) -> None:
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
    tab = await open_page(browser, gateway, lang="en")
    page = tab.page
    link = page.get_by_test_id("link-state")
    await expect(link).to_have_text("Offline")
    await page.locator("#token").fill(token)
    await page.get_by_role("button", name="Use").click()
    await expect(link).to_have_text("Online")
    await expect(page.locator("article.machine")).to_have_count(2)
    first = card(page, "machine_1")
    await expect(first.locator(".go")).to_be_disabled()
    await expect(first.locator(".why")).to_have_text("Your token may only view")
    await expect(first.locator(".sim button").first).to_be_disabled()
    # The journal's events came with the token.
    await expect(page.locator('#feed li[data-kind="connected"]')).to_have_count(2)

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
    await expect(link).to_have_text("Online", timeout=15_000)
    await expect(page.locator("#offline-banner")).to_be_hidden()
    assert restarted.websocket.sessions
