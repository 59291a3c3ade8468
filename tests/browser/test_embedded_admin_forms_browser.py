"""The merchant's page (/app) in headless Chromium: forms from every kind of JSON schema field,
older pages of the list, and very long texts.

The emulator (the admin that frames the app, mints session tokens and answers the token
exchange) and the web are served in this process, so the web can be given an admin job type of
the test's own, whose input has an enum, optional fields, a nested object and a list. No worker:
the jobs these tests start stay pending, and their input is read from Postgres.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import orjson
import pytest
from arq.connections import ArqRedis
from databases import Database
from playwright.async_api import Browser, FrameLocator, Page, async_playwright, expect
from pydantic import BaseModel, ConfigDict, Field

from jobs.types import JobContext, JobType
from service.app import create_app
from service.core.settings import Settings
from shopify_emulator import EmulatorConfig
from shopify_emulator import create_app as create_emulator
from tests.support.browser import CHROMIUM_ARGS, chromium_executable
from tests.support.config import TEST_API_KEY, TEST_SECRET
from tests.support.jobs import add_job, make_shop
from tests.support.net import ServedApp, free_port

SHOP = "demo-shop.myshopify.com"
TIMEOUT_MS = 15_000


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    city: str


class ProbeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    colour: Colour
    mode: Literal["fast", "slow"] = "fast"
    note: str | None = None
    limit: int | None = Field(default=None, ge=1)
    ratio: float = 0.5
    address: Address
    tags: list[str] = []
    dry_run: bool = False


async def probe(ctx: JobContext, data: ProbeInput) -> dict[str, Any]:
    return data.model_dump()


PROBE = JobType(name="form_probe", input_model=ProbeInput, handler=probe, admin=True)


@dataclass
class Admin:
    url: str
    browser: Browser


@pytest.fixture
async def admin(
    settings: Settings, serve: Callable[..., ServedApp], database: Database
) -> AsyncIterator[Admin]:
    web_port = free_port()
    web_url = f"http://127.0.0.1:{web_port}"
    shopify = serve(
        create_emulator(
            EmulatorConfig(app_url=web_url, api_key=TEST_API_KEY, api_secret=TEST_SECRET)
        )
    )
    app = create_app(
        settings.model_copy(
            update={
                "shopify_app_url": web_url,
                "shopify_admin_url": shopify.url,
                "app_bridge_url": f"{shopify.url}/cdn/shopifycloud/app-bridge.js",
            }
        )
    )
    serve(app, web_port)
    web = app.state.web
    app.state.web = dataclasses.replace(web, job_types={**web.job_types, PROBE.name: PROBE})
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_executable(), args=CHROMIUM_ARGS
        )
        yield Admin(f"{shopify.url}/admin/apps/{TEST_API_KEY}?shop={SHOP}&user=7", browser)
        await browser.close()


async def open_admin(admin: Admin) -> tuple[Page, FrameLocator]:
    page = await admin.browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(admin.url)
    return page, page.frame_locator("#app")


async def inputs(database: Database) -> list[dict[str, Any]]:
    rows = await database.fetch_all("SELECT input FROM jobs WHERE type = 'form_probe'")
    return [orjson.loads(row._mapping["input"]) for row in rows]


async def test_every_kind_of_field_makes_valid_input_or_a_clear_error(
    admin: Admin, database: Database
) -> None:
    page, app = await open_admin(admin)
    await app.locator("#job-type").select_option("form_probe")
    # An enum is a choice of its values; an optional field without a default starts empty.
    await expect(app.locator("#field-colour option")).to_have_text(["", "red", "blue"])
    await expect(app.locator("#field-mode")).to_have_value('"fast"')
    await expect(app.locator("#field-note")).to_have_value("")
    await expect(app.locator("#field-limit")).to_have_value("")
    start = app.get_by_role("button", name="Start job")

    # A nested object and a list are written as JSON: unreadable JSON is named, nothing starts.
    await app.locator("#field-colour").select_option(label="blue")
    await app.locator("#field-address").fill("{city: Lyon}")
    await start.click()
    await expect(app.locator("#banner")).to_contain_text("Address: not valid JSON")
    # A number field holding what is not a number is named too, not silently left out.
    await app.locator("#field-address").fill('{"city": "Lyon"}')
    await app.locator("#field-limit").press_sequentially("1e")
    await start.click()
    await expect(app.locator("#banner")).to_contain_text("Limit: not a number")
    assert await inputs(database) == []

    await app.locator("#field-limit").fill("3")
    await app.locator("#field-tags").fill('["a", "b"]')
    await app.locator("#field-dry_run").check()
    await start.click()
    await expect(app.locator('tr[data-status="pending"]')).to_have_count(1)
    await expect(app.locator("#banner")).to_be_hidden()
    # What the form sent, as given: the optional field left empty is not stored (its default
    # applies when the job runs).
    assert await inputs(database) == [
        {
            "colour": "blue",
            "mode": "fast",
            "limit": 3,
            "ratio": 0.5,
            "address": {"city": "Lyon"},
            "tags": ["a", "b"],
            "dry_run": True,
        }
    ]
    await page.close()


async def test_older_jobs_loaded_stay_listed_while_the_list_is_polled(
    admin: Admin, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database, SHOP)
    for n in range(30):  # pending (no worker): the page polls every second
        await add_job(database, redis, shop, {"message": f"job {n}"}, enqueue=False)
    page, app = await open_admin(admin)
    rows = app.locator("#jobs tbody tr")
    await expect(rows).to_have_count(25)
    await app.locator("#more").click()
    await expect(rows).to_have_count(30)
    await expect(app.locator("#more")).to_be_hidden()
    # The next two polls of the list answer: the older jobs are still there.
    for _ in range(2):
        async with page.expect_response(lambda r: "/api/jobs?" in r.url):
            pass
    await expect(rows).to_have_count(30)
    await expect(app.locator("#more")).to_be_hidden()
    # A new job comes in at the top; none of the loaded ones is lost or listed twice.
    await add_job(database, redis, shop, {"message": "new"}, enqueue=False)
    await expect(rows).to_have_count(31)
    ids = await rows.evaluate_all("rows => rows.map((r) => r.dataset.jobId)")
    assert len(set(ids)) == 31
    await page.close()


async def test_a_very_long_error_keeps_the_page_narrow_and_its_retry_in_view(
    admin: Admin, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database, SHOP)
    job_id = await add_job(database, redis, shop, {"message": "x" * 3000}, enqueue=False)
    await database.execute(
        """UPDATE jobs SET status = 'failed', error_public = true, error_message = :error,
                           finished_at = now() WHERE id = :id""",
        {"id": job_id, "error": "E" * 3000},
    )
    done = await add_job(database, redis, shop, {"message": "y"}, enqueue=False)
    await database.execute(
        """UPDATE jobs SET status = 'completed', progress = 100, result = CAST(:result AS jsonb),
                           finished_at = now() WHERE id = :id""",
        {"id": done, "result": orjson.dumps({"text": "R" * 3000}).decode()},
    )
    page, app = await open_admin(admin)
    retry = app.locator(f'tr[data-job-id="{job_id}"] button[data-action="retry"]')
    await expect(retry).to_be_visible()
    frame = page.frame(url=lambda url: "/app?" in url)
    assert frame is not None
    width = await frame.evaluate("document.documentElement.clientWidth")
    assert await frame.evaluate("document.documentElement.scrollWidth") <= width
    box = await retry.bounding_box()
    frame_box = await page.locator("#app").bounding_box()
    assert box is not None and frame_box is not None
    assert box["x"] + box["width"] <= frame_box["x"] + frame_box["width"]
    await page.close()
