"""The merchant's list on /app in headless Chromium: the merchant's own jobs first, batch
children under their parent (collapsed until opened), filters by type and by who started a
job (merchant, schedule, webhook, app), and a batch's progress and counts.

Real processes: the emulator (its admin frames the page and mints session tokens), the web. No
worker: the jobs stay as written, so what the list shows is what the rows say.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

import orjson
from databases import Database
from playwright.async_api import async_playwright, expect

from service import store
from tests.support.browser import CHROMIUM_ARGS, chromium_executable
from tests.support.config import TEST_API_KEY
from tests.support.net import free_port, wait_for_http
from tests.support.processes import web_command

SHOP = "demo-shop.myshopify.com"
TIMEOUT_MS = 20_000


async def _insert(database: Database, shop_id: int, **fields) -> uuid.UUID:  # type: ignore[no-untyped-def]
    job_id = uuid.uuid4()
    columns = {"id": job_id, "shop_id": shop_id, "type": "echo", "input": "{}", **fields}
    values = ", ".join(
        f"CAST(:{k} AS jsonb)" if k in ("input", "batch") else f":{k}" for k in columns
    )
    await database.execute(f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({values})", columns)
    return job_id


async def test_the_list_groups_filters_and_puts_the_merchants_jobs_first(  # type: ignore[no-untyped-def]
    env, spawn, database, redis
) -> None:
    web_port, shopify_port = free_port(), free_port()
    web_url, shopify_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{shopify_port}"
    stack_env = {
        **env,
        "SHOPIFY_APP_URL": web_url,
        "SHOPIFY_ADMIN_URL": shopify_url,
        "APP_BRIDGE_URL": f"{shopify_url}/cdn/shopifycloud/app-bridge.js",
    }
    emulator = [sys.executable, "-m", "shopify_emulator", "--port", str(shopify_port)]
    emulator += ["--app-url", web_url, "--api-key", TEST_API_KEY]
    emulator += ["--api-secret", env["SHOPIFY_API_SECRET"]]
    spawn(emulator, stack_env, "shopify")
    spawn(web_command(web_port), stack_env, "web")
    wait_for_http(f"{web_url}/healthz", timeout=30)
    wait_for_http(f"{shopify_url}/_emulator/stats", timeout=30)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_executable(), args=CHROMIUM_ARGS
        )
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        await page.goto(f"{shopify_url}/admin/apps/{TEST_API_KEY}?shop={SHOP}&user=7")
        app = page.frame_locator("#app")
        await app.locator("#job-type").select_option("echo")
        await app.locator("#field-message").fill("Mine")
        await app.get_by_role("button", name="Start job").click()
        await expect(app.locator('tr[data-kind="mine"]')).to_have_count(1)

        # Newer jobs of everyone else: a batch of three, a webhook's, a schedule's, the app's.
        shop = await store.get_shop(database, SHOP)
        assert shop is not None
        await asyncio.sleep(0.01)
        parent = await _insert(
            database, shop.id, type="catalogue_audit", status="processing", source="app",
            batch=orjson.dumps({"on_complete": None, "fail_parent": False}).decode(),
        )  # fmt: skip
        for status in ("completed", "failed", "pending"):
            await _insert(
                database, shop.id, type="catalogue_audit_page", status=status, source="job",
                parent_id=parent,
            )  # fmt: skip
        await _insert(database, shop.id, type="product_summary", source="webhook")
        await _insert(database, shop.id, type="inventory_report", source="schedule")
        await _insert(database, shop.id, type="echo", source="admin", staff_user_id="8")

        rows = app.locator("#jobs tbody tr")
        await expect(rows).to_have_count(5, timeout=TIMEOUT_MS)  # children collapsed
        await expect(rows.first).to_have_attribute("data-kind", "mine")  # though the oldest
        await expect(rows.first).to_contain_text("you")
        batch_row = app.locator(f'tr[data-job-id="{parent}"]')
        await expect(batch_row).to_contain_text("66%")  # 2 of 3 children finished
        await expect(batch_row).to_contain_text("3 children: 1 completed, 1 failed")
        await expect(app.locator("tr.child")).to_have_count(0)

        await batch_row.get_by_role("button", name="Show children (3)").click()
        await expect(app.locator("tr.child")).to_have_count(3)
        children = await app.locator("tr").evaluate_all(
            "rows => rows.map(r => r.dataset.kind || '')"
        )
        at = children.index("child")
        assert children[at - 1 : at + 3] == ["", "child", "child", "child"]  # under the parent
        await batch_row.get_by_role("button", name="Hide children").click()
        await expect(app.locator("tr.child")).to_have_count(0)

        await app.locator("#starter-filter").select_option("webhook")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text("product_summary")
        await app.locator("#starter-filter").select_option("schedule")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text("inventory_report")
        await app.locator("#starter-filter").select_option("merchant")
        await expect(rows).to_have_count(2)  # mine first, then the other staff member's
        await expect(rows.first).to_have_attribute("data-kind", "mine")
        await app.locator("#starter-filter").select_option("app")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text("catalogue_audit")

        await app.locator("#starter-filter").select_option("")
        await app.locator("#type-filter").select_option("echo")
        await expect(rows).to_have_count(2)
        await app.locator("#type-filter").select_option("product_summary")
        await expect(rows).to_have_count(1)
        await expect(app.locator("#banner")).to_be_hidden()
        await browser.close()
