"""The operator station view in a real browser (Debian's Chromium, headless, via
Playwright) against a real gateway with its job engine: a job submitted over REST is picked
to completion from the page alone, by Confirm, Enter, a scanned SKU and a short pick."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.e2e.test_dashboard import (
    browser,  # noqa: F401  (the fixture)
    open_page,
    screenshot,
    simulator_fault,
    untranslated,
)
from tests.integration.conftest import FAST_MACHINE, gateway_config, wait_until

pytestmark = pytest.mark.asyncio

STATION = {"id": "station_1", "name": "Puesto 1", "machines": ["machine_1", "machine_2"]}


def station_config() -> Any:
    machines = [
        {**FAST_MACHINE, "id": "machine_1", "name": "Carrusel Principal"},
        {**FAST_MACHINE, "id": "machine_2", "name": "Carrusel Secundario"},
    ]
    return gateway_config(machines=machines, workstations=[STATION])


JOB = {
    "job_id": "PED-2001",
    "workstation_id": "station_1",
    "lines": [
        {"line_id": "1", "machine_id": "machine_1", "position": 6, "quantity": 3,
         "sku": "TORN-M6", "description": "Tornillo M6 x 20", "order_id": "PED-7"},
        {"line_id": "2", "machine_id": "machine_2", "position": 11, "quantity": 1,
         "sku": "TUER-M6", "description": "Tuerca M6", "order_id": "PED-7"},
        {"line_id": "3", "machine_id": "machine_1", "position": 6, "quantity": 2,
         "sku": "ARAN-6", "description": "Arandela 6 mm", "order_id": "PED-8"},
        {"line_id": "4", "machine_id": "machine_1", "position": 17, "quantity": 4,
         "sku": "BRID-40", "description": "Brida 40 mm", "order_id": "PED-8"},
    ],
}  # fmt: skip

NEXT_LINE = """(done) => {
    const current = document.querySelector('#current');
    const line = current.dataset.line;
    const ready = !current.querySelector('#confirm').disabled;
    return !current.hidden && line && !done.includes(line) && ready;
}"""


async def next_line(page: Page, done: list[str]) -> str:
    """Wait until the page presents a line not yet confirmed; its ``job/line`` key."""
    await page.wait_for_function(NEXT_LINE, arg=done, timeout=15_000)
    key: str = await page.locator("#current").get_attribute("data-line") or ""
    return key


async def test_a_job_submitted_over_rest_is_picked_to_completion_from_the_page(
    browser: Browser,  # noqa: F811
    gateway_factory: Any,
) -> None:
    gateway = await gateway_factory(station_config())
    tab = await open_page(browser, gateway, "/station/station_1", lang="es")
    page = tab.page
    await expect(page.get_by_test_id("link-state")).to_have_attribute("data-state", "online")
    await expect(page.get_by_test_id("idle")).to_have_text("Sin trabajos: esperando")
    await expect(page.locator("#station-name")).to_have_text("Puesto 1")

    base = f"http://127.0.0.1:{gateway.http_port}"
    async with httpx.AsyncClient(base_url=base) as http:
        page_reply = await http.get("/station/station_1")
        dashboard_reply = await http.get("/")
        csp = page_reply.headers["content-security-policy"]
        assert csp == dashboard_reply.headers["content-security-policy"]
        assert page_reply.headers["x-frame-options"] == "DENY"
        submitted = await http.post("/v1/jobs", json=JOB)
        assert submitted.status_code == 201, submitted.text

    lines = {line["line_id"]: line for line in JOB["lines"]}
    done: list[str] = []
    methods = ["click", "enter", "scan", "short"]
    for number, method in enumerate(methods):
        key = await next_line(page, done)
        line = lines[key.split("/")[1]]
        # The pick, in words a picker reads at arm's length.
        await expect(page.get_by_test_id("pick-bucket")).to_have_text(str(line["position"]))
        await expect(page.get_by_test_id("pick-sku")).to_have_text(line["sku"])
        await expect(page.get_by_test_id("pick-description")).to_have_text(line["description"])
        await expect(page.get_by_test_id("pick-quantity")).to_have_text(str(line["quantity"]))
        await expect(page.get_by_test_id("pick-order")).to_have_text(line["order_id"])
        size = await page.get_by_test_id("pick-bucket").evaluate(
            "e => parseFloat(getComputedStyle(e).fontSize)"
        )
        assert size >= 64
        if number == 0:
            assert await untranslated(page) == []
            await screenshot(page, "station-es-1400.png")
        if method == "click":
            await page.get_by_test_id("confirm").click()
        elif method == "enter":
            await page.locator("body").click(position={"x": 5, "y": 300})  # focus off fields
            await page.keyboard.press("Enter")
        elif method == "scan":
            scan = page.get_by_test_id("scan")
            await scan.fill("WRONG-SKU")
            await scan.press("Enter")
            await expect(page.get_by_test_id("message")).to_contain_text("no se confirma")
            await scan.fill(line["sku"])
            await scan.press("Enter")
        else:
            await page.get_by_test_id("short").click()
            await page.get_by_test_id("short-quantity").fill("1")
            await page.get_by_test_id("short-reason").fill("bandeja casi vacía")
            await page.get_by_test_id("short-reason").press("Enter")
        done.append(key)

    await expect(page.get_by_test_id("idle")).to_have_text(
        "Sin trabajos: esperando", timeout=15_000
    )
    async with httpx.AsyncClient(base_url=base) as http:
        job = (await http.get("/v1/jobs/PED-2001")).json()["data"]
    assert job["state"] == "completed"
    states = {line["line_id"]: line["state"] for line in job["lines"]}
    assert sorted(states.values()) == ["picked", "picked", "picked", "short"]
    short = next(line for line in job["lines"] if line["state"] == "short")
    assert (short["quantity_picked"], short["reason"]) == (1, "bandeja casi vacía")
    assert sorted(done) == sorted(f"PED-2001/{n}" for n in lines)
    await page.wait_for_load_state("networkidle")
    assert tab.errors == []
    assert tab.console_errors == []


async def test_station_view_speaks_english_and_says_why_a_job_paused(
    browser: Browser,  # noqa: F811
    gateway_factory: Any,
) -> None:
    gateway = await gateway_factory(station_config())
    machine_1 = gateway.fleet.get("machine_1")
    machine_2 = gateway.fleet.get("machine_2")
    # Both carousels' emergency stops pressed: the job's first move is refused, so the
    # engine pauses it with the status keys.
    for machine in (machine_1, machine_2):
        await simulator_fault(gateway, machine.id, "emergency_stop", True)
    await wait_until(
        gateway.fleet.bus,
        lambda: all(m.snapshot.status.emergency_stop for m in (machine_1, machine_2)),
    )
    base = f"http://127.0.0.1:{gateway.http_port}"
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.post("/v1/jobs", json=JOB)).status_code == 201
    tab = await open_page(browser, gateway, "/station/station_1", lang="en", width=800)
    page = tab.page
    banner = page.get_by_test_id("paused")
    await expect(banner).to_contain_text("Job PED-2001 paused: Emergency stop pressed")
    await expect(page.get_by_test_id("idle")).to_have_text("Picking is paused")
    assert await untranslated(page) == []
    await screenshot(page, "station-en-800-paused.png")
    for machine in (machine_1, machine_2):
        await simulator_fault(gateway, machine.id, "emergency_stop", False)
    await wait_until(
        gateway.fleet.bus,
        lambda: not any(m.snapshot.status.emergency_stop for m in (machine_1, machine_2)),
    )
    await banner.get_by_role("button", name="Resume").click()
    await expect(banner).to_be_hidden(timeout=15_000)
    await page.wait_for_function(NEXT_LINE, arg=[], timeout=15_000)
    async with httpx.AsyncClient(base_url=base) as http:
        await http.post("/v1/jobs/PED-2001/cancel")
    await expect(page.get_by_test_id("idle")).to_have_text(
        "No jobs: waiting for work", timeout=15_000
    )
    assert tab.errors == []
