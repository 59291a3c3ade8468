"""The merchant's page (/app) in headless Chromium, inside the emulator's Shopify admin.

Real processes: the emulator (the admin page that frames the app and mints session tokens,
its App Bridge stand-in, the token exchange), the web and a worker with one slot. The shop is
unknown to the app at first: the page's first requests install it by token exchange. The test
starts a job from the generated form, watches it complete, and cancels a job waiting behind
it; it takes docs/embedded-app.png (test-artifacts/embedded-app.png; docs/ with UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import sys

from playwright.async_api import async_playwright, expect

from service import store
from tests.support.browser import CHROMIUM_ARGS, chromium_executable, save_screenshot
from tests.support.config import TEST_API_KEY
from tests.support.net import free_port, wait_for_http
from tests.support.processes import start_worker, web_command

SHOP = "demo-shop.myshopify.com"
TIMEOUT_MS = 20_000


async def test_start_watch_and_cancel_jobs_from_the_admin_and_screenshot(  # type: ignore[no-untyped-def]
    env, spawn, database, redis
) -> None:
    web_port, shopify_port = free_port(), free_port()
    web_url, shopify_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{shopify_port}"
    stack_env = {
        **env,
        "SHOPIFY_APP_URL": web_url,
        "SHOPIFY_ADMIN_URL": shopify_url,
        "APP_BRIDGE_URL": f"{shopify_url}/cdn/shopifycloud/app-bridge.js",
        "WORKER_CONCURRENCY": "1",
    }
    emulator = [sys.executable, "-m", "shopify_emulator", "--port", str(shopify_port)]
    emulator += ["--app-url", web_url, "--api-key", TEST_API_KEY]
    emulator += ["--api-secret", env["SHOPIFY_API_SECRET"]]
    spawn(emulator, stack_env, "shopify")
    spawn(web_command(web_port), stack_env, "web")
    start_worker(spawn, stack_env)
    wait_for_http(f"{web_url}/healthz", timeout=30)
    wait_for_http(f"{shopify_url}/_emulator/stats", timeout=30)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_executable(), args=CHROMIUM_ARGS
        )
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(TIMEOUT_MS)
        await page.goto(f"{shopify_url}/admin/apps/{TEST_API_KEY}?shop={SHOP}&user=7")
        app = page.frame_locator("#app")
        await app.locator("#job-type").select_option("echo")
        await app.locator("#field-message").fill("Sync 40 products")
        await app.locator("#field-sleep_ms").fill("4000")
        await app.get_by_role("button", name="Start job").click()
        running = app.locator('tr[data-status="processing"]')
        await expect(running).to_have_count(1)

        # A second job waits behind it (one worker slot): cancel it from the list.
        await app.locator("#field-message").fill("Import customers")
        await app.locator("#field-sleep_ms").fill("0")
        await app.get_by_role("button", name="Start job").click()
        waiting = app.locator('tr[data-status="pending"]')
        await expect(waiting).to_have_count(1)
        await waiting.get_by_role("button", name="Cancel").click()
        cancelled = app.locator('tr[data-status="failed"]')
        await expect(cancelled).to_contain_text("cancelled")

        # The first one moves, and completes, without a reload.
        done = app.locator('tr[data-status="completed"]')
        await expect(done).to_contain_text("Sync 40 products")
        await expect(app.locator("#jobs tbody tr")).to_have_count(2)
        await expect(app.locator("#banner")).to_be_hidden()
        save_screenshot(await page.screenshot(), "embedded-app.png")
        await browser.close()

    shop = await store.get_shop(database, SHOP)
    assert shop is not None and shop.installed and shop.has_access_token  # by token exchange
    rows = await database.fetch_all("SELECT staff_user_id, source FROM jobs")
    assert {(r._mapping["staff_user_id"], r._mapping["source"]) for r in rows} == {("7", "admin")}
