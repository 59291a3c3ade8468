"""The admin's bulk action in headless Chromium: select products in the emulator's admin
list, open the app through its admin link (the selected ids in the URL), run a job type on
them, and watch the batch (a child per product) finish on the app's page. Real processes:
the emulator, the web and a worker."""

from __future__ import annotations

import sys

from playwright.async_api import async_playwright, expect

from tests.support.browser import CHROMIUM_ARGS, chromium_executable
from tests.support.config import TEST_API_KEY
from tests.support.net import free_port, wait_for_http
from tests.support.processes import start_worker, web_command

SHOP = "bulk-shop.myshopify.com"
TIMEOUT_MS = 30_000


async def test_selected_products_run_as_one_batch(env, spawn, database, redis) -> None:  # type: ignore[no-untyped-def]
    web_port, shopify_port = free_port(), free_port()
    web_url, shopify_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{shopify_port}"
    stack_env = {
        **env,
        "SHOPIFY_APP_URL": web_url,
        "SHOPIFY_ADMIN_URL": shopify_url,
        "APP_BRIDGE_URL": f"{shopify_url}/cdn/shopifycloud/app-bridge.js",
        "WORKER_CONCURRENCY": "2",
    }
    emulator = [sys.executable, "-m", "shopify_emulator", "--port", str(shopify_port)]
    emulator += ["--app-url", web_url, "--api-key", TEST_API_KEY, "--products", "5"]
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
        await expect(app.locator("#job-type option").first).to_be_attached()  # installed
        await page.get_by_role("button", name="Products").click()
        boxes = page.locator('#product-list input[name="product"]')
        chosen = [await boxes.nth(i).get_attribute("value") for i in (0, 1, 2)]
        for i in (0, 1, 2):
            await boxes.nth(i).check()
        await page.get_by_role("button", name="Run a background job").click()

        await expect(app.locator("#bulk")).to_be_visible()
        await expect(app.locator("#bulk-selected")).to_have_text("3 product(s) selected")
        offered = await app.locator("#bulk-type option").all_inner_texts()
        assert offered == ["echo", "product_summary"]
        await app.locator("#bulk-type").select_option("echo")
        await app.get_by_role("button", name="Run", exact=True).click()
        progress = app.locator("#bulk-progress")
        await expect(progress).to_have_attribute("data-status", "completed")
        await expect(app.locator("#bulk-status")).to_have_text(
            "Batch completed: 3 completed, 0 failed"
        )
        parent = await progress.get_attribute("data-job-id")
        await browser.close()

    rows = await database.fetch_all(
        "SELECT input->>'message' AS message, status FROM jobs WHERE parent_id = :p",
        {"p": parent},
    )
    assert sorted(r["message"] for r in rows) == sorted(
        f"gid://shopify/Product/{product_id}" for product_id in chosen
    )
    assert {r["status"] for r in rows} == {"completed"}
