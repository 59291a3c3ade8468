"""The dashboard's charts (/admin/charts) in headless Chromium: drawn, filtered, on a phone.

Jobs are written with chosen times over the last day (no worker needed: the charts read only
the rows), so the page shows a day of traffic. Takes docs/dashboard-charts.png
(test-artifacts/ always; docs/ with UPDATE_SCREENSHOT=1, `make screenshot`).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from databases import Database
from playwright.async_api import async_playwright, expect
from pydantic import SecretStr

from service.app import create_app
from service.core.settings import Settings
from tests.browser.test_dashboard_browser import (
    PASSWORD,
    SHOPS,
    USER,
    Stack,
    keep_evidence,
    open_page,
)
from tests.integration.test_dashboard_charts import put_job
from tests.support.browser import CHROMIUM_ARGS, chromium_executable, save_screenshot
from tests.support.jobs import make_shop


@pytest.fixture
async def charts_stack(settings: Settings, serve, database: Database) -> AsyncIterator[Stack]:
    app = create_app(
        settings.model_copy(
            update={"dashboard_username": USER, "dashboard_password": SecretStr(PASSWORD)}
        )
    )
    server = serve(app)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_executable(), args=CHROMIUM_ARGS
        )
        yield Stack(url=f"{server.url}/admin", browser=browser, worker=None)
        await browser.close()


async def seed_day(database: Database) -> int:
    """A day of jobs in two shops and two types, busier in the last hours, some failed, with
    waits that grow in a burst; how many of them are alpine's `echo` jobs in the last hour."""
    shops = [await make_shop(database, domain) for domain in SHOPS]
    pick = random.Random(27)
    now = datetime.now(UTC)
    recent_alpine_echo = 0
    for minutes_ago in range(0, 24 * 60, 9):
        created = now - timedelta(minutes=minutes_ago, seconds=30)
        load = 1 + (3 if minutes_ago < 180 else 0)
        for _ in range(load):
            shop = pick.choice(shops)
            job_type = pick.choice(("echo", "product_summary"))
            failed = pick.random() < (0.25 if 300 < minutes_ago < 420 else 0.05)
            wait = pick.uniform(0.05, 0.4) + (6.0 if 60 < minutes_ago < 120 else 0.0)
            await put_job(database, shop, job_type, "failed" if failed else "completed",
                          created, wait, run=0.2)  # fmt: skip
            if minutes_ago < 55 and shop.domain == SHOPS[0] and job_type == "echo":
                recent_alpine_echo += 1
    return recent_alpine_echo


async def test_charts_drawn_filtered_on_a_phone_and_screenshot(
    charts_stack: Stack, database: Database, request: pytest.FixtureRequest
) -> None:
    alpine_echo = await seed_day(database)
    page = await open_page(charts_stack)
    try:
        await page.locator("#charts-link").click()
        await expect(page).to_have_url(f"{charts_stack.url}/charts?")
        for window in ("hour", "day"):
            section = page.locator(f"#window-{window}")
            for chart in ("throughput", "failures", "wait"):
                svg = section.locator(f'svg[data-chart="{chart}"]')
                await expect(svg).to_be_visible()
                await expect(svg.locator("g.bar")).to_have_count(12 if window == "hour" else 24)
        # Bars are drawn in proportion: the day's throughput has rectangles of real height.
        heights = await page.locator('#window-day svg[data-chart="throughput"] rect').evaluate_all(
            "rects => rects.map(r => r.getBBox().height)"
        )
        assert len(heights) >= 24 and max(heights) > 50
        tooltip = await page.locator(
            '#window-day svg[data-chart="wait"] g.bar title'
        ).last.text_content()
        assert tooltip and "median wait" in tooltip
        save_screenshot(await page.screenshot(full_page=True), "dashboard-charts.png")

        await page.locator('input[name="shop"]').fill("alpine")
        await page.locator('select[name="type"]').select_option("echo")
        await page.get_by_role("button", name="Show").click()
        await expect(page).to_have_url(f"{charts_stack.url}/charts?shop=alpine&type=echo")
        values = await page.locator('#window-hour svg[data-chart="throughput"] g.bar').evaluate_all(
            "bars => bars.map(b => Number(b.dataset.value))"
        )
        assert sum(values) == alpine_echo
    except Exception:
        await keep_evidence(page, request)
        raise

    phone = await open_page(charts_stack, "/charts", width=390, height=844)
    await expect(phone.locator('svg[data-chart="wait"]')).to_have_count(2)
    overflow = await phone.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow}px wider than a phone"
