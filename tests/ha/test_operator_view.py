"""What the operator sees of a takeover, in a real browser (Debian's Chromium via
Playwright) against the two gateway processes of a cell: the standby's pages say who is
active and keep the commands off; kill -9 of the active and its open pages say "Switching
gateway…", then stand on the same page of the new active, which says who took over, when
and how long it took; the station page keeps its station and explains the job whose move
the switch interrupted, next to Resume. The words come from the page's own catalogue."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.e2e.test_dashboard import (
    browser,  # noqa: F401  (the fixture)
    screenshot,
    untranslated,
)

from .harness import Cell, GatewayProcess, poll_until_async
from .processes import wait_for_events

pytestmark = pytest.mark.timeout(240)

I18N = Path(__file__).resolve().parents[2] / "carousel_gateway" / "web" / "i18n"
WORDS: dict[str, dict[str, str]] = {
    lang: json.loads((I18N / f"{lang}.json").read_text(encoding="utf-8")) for lang in ("en", "es")
}
#: Long enough (0.2 s a bucket) to kill the active while its carousel moves for the job.
SLOW = 0.2
#: Generous: a takeover here is the TTL (1.5 s) plus a first reading of every PLC.
SWITCH_MS = 30_000

JOB = {
    "job_id": "PED-9001",
    "workstation_id": "station_1",
    "lines": [
        {"line_id": "1", "machine_id": "m1", "position": 16, "quantity": 2,
         "sku": "TORN-M6", "description": "Tornillo M6", "order_id": "PED-1"},
    ],
}  # fmt: skip


def text(key: str, lang: str = "en", **values: str) -> str:
    """The catalogue's words for ``key`` with ``values`` filled in."""
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], WORDS[lang][key])


def pattern(key: str, lang: str = "en", **values: str) -> re.Pattern[str]:
    """The catalogue's words for ``key`` as a regex: given values literally, others any."""
    parts = re.split(r"(\{\w+\})", WORDS[lang][key])
    regex = "".join(
        (re.escape(values[p[1:-1]]) if p[1:-1] in values else ".+?")
        if re.fullmatch(r"\{\w+\}", p)
        else re.escape(p)
        for p in parts
    )
    return re.compile(regex)


async def open_at(context: BrowserContext, url: str) -> Page:
    """``url`` in a new tab of ``context``."""
    page = await context.new_page()
    await page.goto(url)
    return page


async def _lists(gateway: GatewayProcess, instances: dict[str, str]) -> bool | None:
    data = await gateway.health()
    listed = {i["instance"]: i["http_url"] for i in (data or {"ha": {}})["ha"].get("instances", [])}
    return True if listed == instances else None


async def moving_for_the_job(cell: Cell, gateway: GatewayProcess) -> None:
    """Until carousel m1 has read a MOVE from ``gateway`` (the job's first stop)."""
    await wait_for_events(
        cell.move_log,
        lambda events: any(
            e["event"] == "move"
            and e["machine"] == 1
            and str(e["peer"]).startswith(f"{gateway.address}:")
            for e in events
        ),
        timeout=30,
        what=f"the job's MOVE from {gateway.instance}",
    )


async def test_the_operator_follows_a_kill_9_to_the_new_active(
    cell_factory: Any,
    browser: Browser,  # noqa: F811
) -> None:
    cell: Cell = await cell_factory(seconds_per_position=SLOW, workstation=True)
    errors: list[str] = []
    contexts = {}
    for lang, locale in (("en", "en-GB"), ("es", "es-ES")):  # the plant floor reads Spanish
        context = await browser.new_context(viewport={"width": 1400, "height": 900}, locale=locale)
        context.on("page", lambda page: page.on("pageerror", lambda exc: errors.append(str(exc))))
        contexts[lang] = context

    # A's dashboard is open before B exists: it learns of B (and reloads for a CSP that
    # lets it ask B) on its own.
    a = await cell.gateway("gw-a", "127.0.0.2")
    await a.wait_role("active")
    await cell.wait_connected(a)
    dashboard = await open_at(contexts["en"], f"{a.url}/")
    await expect(dashboard.get_by_test_id("link-state")).to_have_attribute("data-state", "online")
    await dashboard.evaluate("() => { window.servedBeforeB = true; }")
    b = await cell.gateway("gw-b", "127.0.0.3")
    await b.wait_role("standby")

    # Health names every instance of the cell (B registered after A started), and answers
    # a GET from their pages only.
    both = {"gw-a": a.url, "gw-b": b.url}
    await poll_until_async(lambda: _lists(a, both), 30, "gw-a listing both instances")
    await poll_until_async(lambda: _lists(b, both), 30, "gw-b listing both instances")
    await dashboard.wait_for_function("() => !window.servedBeforeB", timeout=SWITCH_MS)
    async with httpx.AsyncClient(timeout=5) as http:
        cross = await http.get(f"{b.url}/v1/health", headers={"Origin": a.url})
        assert cross.status_code == 200
        assert cross.headers["access-control-allow-origin"] == a.url
        assert "Origin" in cross.headers["vary"]
        stranger = await http.get(f"{b.url}/v1/health", headers={"Origin": "http://evil.test"})
        assert stranger.status_code == 403
        other_path = await http.get(f"{b.url}/v1/machines", headers={"Origin": a.url})
        assert other_path.status_code == 403
        page_reply = await http.get(f"{a.url}/")
        assert b.url in page_reply.headers["content-security-policy"]
        submitted = await http.post(f"{a.url}/v1/jobs", json=JOB)
        assert submitted.status_code == 201, submitted.text

    station = await open_at(contexts["es"], f"{a.url}/station/station_1")
    standby = await open_at(contexts["en"], f"{b.url}/")
    for page in (dashboard, station, standby):
        await expect(page.get_by_test_id("link-state")).to_have_attribute("data-state", "online")
    await expect(dashboard.get_by_test_id("ha-banner")).to_be_hidden()
    await expect(station.locator("#station-name")).to_have_text("Puesto 1")

    # The standby says who is active, links to it, and keeps the commands off.
    banner = standby.get_by_test_id("ha-banner")
    await expect(banner).to_have_attribute("data-state", "standby")
    await expect(banner).to_contain_text(text("ha.standby", active="gw-a"))
    await expect(standby.get_by_test_id("ha-active-link")).to_have_attribute("href", f"{a.url}/")
    go = standby.locator('article.machine[data-machine="m1"] .go')
    await expect(go).to_be_disabled()
    await expect(standby.locator('article.machine[data-machine="m1"] .why')).to_have_text(
        text("why.standby", active="gw-a")
    )
    # Its PLC links are closed on purpose: what the active last read, not a red fault.
    await expect(standby.locator('article.machine[data-machine="m1"] .conn')).to_have_text(
        text("conn.standby")
    )
    await screenshot(standby, "ha-standby-en.png")

    # kill -9 of the active while its carousel moves for the job.
    await moving_for_the_job(cell, a)
    await a.kill9()
    for page, lang in ((dashboard, "en"), (station, "es")):
        switching = page.get_by_test_id("ha-banner")
        await expect(switching).to_have_attribute("data-state", "switching", timeout=SWITCH_MS)
        await expect(switching).to_have_text(text("ha.switching", lang))
    await expect(dashboard.locator("#offline-banner")).to_be_hidden()  # one message, not two

    # ...then the same pages on B, which says who took over, when, and in how long.
    await b.wait_role("active")
    await expect(dashboard).to_have_url(f"{b.url}/", timeout=SWITCH_MS)
    await expect(station).to_have_url(f"{b.url}/station/station_1", timeout=SWITCH_MS)
    for page, lang in ((dashboard, "en"), (station, "es"), (standby, "en")):
        news = page.get_by_test_id("ha-takeover")
        await expect(news).to_be_visible(timeout=SWITCH_MS)
        await expect(news).to_have_text(pattern("ha.took_over", lang, instance="gw-b"))
        await expect(news).to_have_attribute("data-instance", "gw-b")
        await expect(page.get_by_test_id("ha-banner")).to_be_hidden()
    assert standby.url == f"{b.url}/"  # the standby's own page took over in place

    health = await b.health()
    assert health is not None
    record = health["ha"]["takeover"]
    assert record["instance"] == "gw-b" and record["previous_instance"] == "gw-a"
    assert record["ready_at"] is not None and record["seconds"] is not None
    shown = await dashboard.get_by_test_id("ha-takeover").get_attribute("data-seconds")
    assert shown is not None and float(shown) == record["seconds"]

    # The dashboard's feed says why the interrupted MOVE did not arrive.
    lost = dashboard.locator('#feed li[data-kind="move_failed"]')
    await expect(lost.first).to_contain_text(text("reason.failover_lost"), timeout=SWITCH_MS)

    # The station keeps its station and says what the switch did to the job.
    await expect(station.locator("#station-name")).to_have_text("Puesto 1")
    paused = station.get_by_test_id("paused")
    await expect(paused).to_be_visible(timeout=SWITCH_MS)
    await expect(paused.get_by_test_id("failover-lost")).to_have_text(
        pattern("station.failover_lost_at", "es", instance="gw-b")
    )
    for page in (dashboard, station, standby):
        assert await untranslated(page) == []
    await screenshot(dashboard, "ha-took-over-en.png")
    await screenshot(station, "ha-station-failover-es.png")
    resume = paused.get_by_test_id("resume")
    await expect(resume).to_be_enabled()
    await station.bring_to_front()  # a background tab gets no animation frames to click in
    await resume.click()
    await expect(paused).to_be_hidden(timeout=SWITCH_MS)

    # Dismissed, the news stays away.
    await dashboard.bring_to_front()
    await dashboard.get_by_test_id("ha-dismiss").click()
    await expect(dashboard.get_by_test_id("ha-takeover")).to_be_hidden()
    assert errors == []
    for context in contexts.values():
        await context.close()


async def test_a_page_on_an_active_cut_off_from_the_cell_follows_the_takeover(
    cell_factory: Any,
    browser: Browser,  # noqa: F811
) -> None:
    """The old active still serves its page but is fenced (no database, no PLC): its page
    does not wait for it to die, it asks the other instance and goes there. Healed, the
    old active stays the standby and its page names the new active."""
    cell: Cell = await cell_factory()
    a, b, _ = await cell.start_pair()
    both = {"gw-a": a.url, "gw-b": b.url}
    await poll_until_async(lambda: _lists(a, both), 30, "gw-a listing both instances")
    context = await browser.new_context(viewport={"width": 1400, "height": 900}, locale="en-GB")
    dashboard = await open_at(context, f"{a.url}/")
    await expect(dashboard.get_by_test_id("link-state")).to_have_attribute("data-state", "online")

    a.partition()
    await b.wait_role("active")
    await expect(dashboard).to_have_url(f"{b.url}/", timeout=SWITCH_MS)
    news = dashboard.get_by_test_id("ha-takeover")
    await expect(news).to_have_text(pattern("ha.took_over", instance="gw-b"), timeout=SWITCH_MS)
    assert await untranslated(dashboard) == []

    # No failback: A, reachable again, is the standby, and its page says who is active.
    a.heal()
    again = await open_at(context, f"{a.url}/")
    banner = again.get_by_test_id("ha-banner")
    await expect(banner).to_have_attribute("data-state", "standby", timeout=SWITCH_MS)
    await expect(banner).to_contain_text(text("ha.standby", active="gw-b"))
    await expect(again.get_by_test_id("ha-active-link")).to_have_attribute("href", f"{b.url}/")
    assert (await b.health() or {}).get("ha", {}).get("role") == "active"
    await context.close()
