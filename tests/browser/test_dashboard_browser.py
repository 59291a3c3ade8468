"""The job dashboard in headless Chromium, against a real worker.

The app is served by uvicorn on a free port, the worker is a real `arq jobs.WorkerSettings`
process, and the browser logs in with basic auth as a person would. The list test takes the
screenshot in docs/operations.md (test-artifacts/dashboard.png; docs/ too with UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from arq.connections import ArqRedis
from databases import Database
from playwright.async_api import Browser, Page, async_playwright, expect
from pydantic import SecretStr

from service import queue, store
from service.app import create_app
from service.core.settings import Settings
from tests.support.browser import ARTIFACTS, CHROMIUM_ARGS, chromium_executable, save_screenshot
from tests.support.jobs import add_job, make_shop, wait_all, wait_for_status
from tests.support.processes import start_worker
from tests.support.queue_entries import queued_score

USER, PASSWORD = "ops", "a long admin password"
SHOPS = ("alpine-outfitters.myshopify.com", "harbor-coffee.myshopify.com")
TIMEOUT_MS = 15_000


@dataclass
class Stack:
    url: str
    browser: Browser
    worker: object


@pytest.fixture
async def stack(
    settings: Settings, env: dict[str, str], spawn, serve, database: Database, redis: ArqRedis
) -> AsyncIterator[Stack]:
    worker = start_worker(
        spawn, env, job_max_attempts=3, job_backoff_seconds=30, worker_shutdown_grace_seconds=1
    )
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
        yield Stack(url=f"{server.url}/admin", browser=browser, worker=worker)
        await browser.close()


async def open_page(stack: Stack, path: str = "/", width: int = 1280, height: int = 900) -> Page:
    context = await stack.browser.new_context(
        viewport={"width": width, "height": height},
        http_credentials={"username": USER, "password": PASSWORD},
    )
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    answer = await page.goto(stack.url + path)
    assert answer is not None and answer.status == 200
    return page


async def keep_evidence(page: Page, request: pytest.FixtureRequest) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)


async def seed(database: Database, redis: ArqRedis) -> dict[str, uuid.UUID]:
    """Jobs in every status, run by the real worker where a worker would have run them."""
    alpine, harbor = [await make_shop(database, domain) for domain in SHOPS]
    ids: dict[str, uuid.UUID] = {}
    done = []
    for n, shop in enumerate((alpine, harbor, alpine, harbor, alpine)):
        done.append(await add_job(database, redis, shop, {"message": f"order {1001 + n}"}))
    ids["failed"] = await add_job(
        database, redis, harbor, {"message": "refund", "fail_permanently": True}
    )
    ids["retrying"] = await add_job(database, redis, alpine, {"message": "sync", "fail_times": 2})
    ids["processing"] = await add_job(
        database, redis, harbor, {"message": "import", "sleep_ms": 20_000}
    )
    # Waiting rows whose queue entries have not reached a worker yet.
    ids["pending"] = await add_job(database, redis, alpine, {"message": "cancel me"}, enqueue=False)
    ids["pending-summary"] = await add_job(
        database,
        redis,
        harbor,
        {"product_id": "gid://shopify/Product/1"},
        "product_summary",
        enqueue=False,
    )
    await wait_all(database, done)
    await wait_for_status(database, ids["failed"], {"failed"})
    await wait_for_status(database, ids["retrying"], {"retrying"})
    job = await wait_for_status(database, ids["processing"], {"processing"})
    while job.progress < 10:  # a moving progress bar for the picture
        await asyncio.sleep(0.2)
        job = await store.get_job(database, ids["processing"])
    return ids


def row(page: Page, job_id: uuid.UUID):  # type: ignore[no-untyped-def]
    return page.locator(f'tr[data-job-id="{job_id}"]')


async def test_list_filters_phone_layout_and_screenshot(
    stack: Stack, database: Database, redis: ArqRedis, request: pytest.FixtureRequest
) -> None:
    ids = await seed(database, redis)
    page = await open_page(stack)
    try:
        expected = {"completed": 5, "failed": 1, "retrying": 1, "processing": 1, "pending": 2}
        for status, count in expected.items():
            await expect(page.locator(f'a.card[data-status="{status}"] b')).to_have_text(str(count))
        await expect(page.locator("#jobs tbody tr")).to_have_count(10)
        await expect(row(page, ids["pending-summary"])).to_have_attribute("data-status", "pending")
        await expect(row(page, ids["processing"]).locator(".bar i")).not_to_have_attribute(
            "style", "width: 0%"
        )
        save_screenshot(await page.screenshot(full_page=True), "dashboard.png")

        await page.locator('#list-filter select[name="status"]').select_option("failed")
        await page.get_by_role("button", name="Filter").click()
        await expect(page).to_have_url(f"{stack.url}/?status=failed&shop=&type=")  # a GET form
        await expect(page.locator("#jobs tbody tr")).to_have_count(1)
        await expect(row(page, ids["failed"])).to_contain_text("echo: asked to fail permanently")

        await page.locator('#list-filter select[name="status"]').select_option("")
        await page.locator('#list-filter input[name="shop"]').fill("harbor")
        await page.locator('#list-filter select[name="type"]').select_option("product_summary")
        await page.get_by_role("button", name="Filter").click()
        await expect(page.locator("#jobs tbody tr")).to_have_count(1)
        await expect(row(page, ids["pending-summary"])).to_contain_text(SHOPS[1])
        await expect(page.locator('a.card[data-status="pending"] b')).to_have_text("1")

        await page.locator('#list-filter select[name="type"]').select_option("")
        await page.get_by_role("button", name="Filter").click()
        await expect(page.locator("#jobs tbody tr")).to_have_count(5)
        for status in await page.locator("#jobs tbody tr").evaluate_all(
            "rows => rows.map(r => r.querySelector('td:nth-child(4)').textContent)"
        ):
            assert status == SHOPS[1]

        await row(page, ids["failed"]).get_by_role("link").click()
        await expect(page.locator("#status")).to_have_text("failed")
        await expect(page.locator("#input")).to_contain_text('"fail_permanently": true')
        await expect(page.locator("#attempts")).to_have_text("1 started, 1 failed (retry count)")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "dashboard-job.png", full_page=True)
        await page.get_by_role("link", name="← All jobs").click()
        await expect(page).to_have_url(f"{stack.url}/?shop=harbor")
    except Exception:
        await keep_evidence(page, request)
        raise

    phone = await open_page(stack, width=390, height=844)
    await expect(phone.locator("#jobs tbody tr")).to_have_count(10)
    overflow = await phone.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow}px wider than a phone"
    label = (
        await phone.locator(f'tr[data-job-id="{ids["failed"]}"] td')
        .nth(1)
        .evaluate("cell => getComputedStyle(cell, '::before').content")
    )
    assert label == '"Status"'  # the table turned into labelled cards
    ARTIFACTS.mkdir(exist_ok=True)
    await phone.screenshot(path=ARTIFACTS / "dashboard-phone.png", full_page=True)


async def test_cancel_is_honoured_and_retry_runs_the_job_again(
    stack: Stack, database: Database, redis: ArqRedis, request: pytest.FixtureRequest
) -> None:
    ids = await seed(database, redis)
    page = await open_page(stack)
    try:
        await row(page, ids["pending"]).get_by_role("button", name="Cancel").click()
        await expect(page.locator(".notice")).to_contain_text("Job cancelled")
        await expect(page.locator("#status")).to_have_text("failed")
        await expect(page.locator("#error")).to_have_text("Cancelled")

        # Its queue entry reaches the worker now: the worker must skip it.
        shop = SHOPS[0]
        assert await queue.enqueue(redis, "echo", str(ids["pending"]), shop=shop)
        deadline = time.monotonic() + 20
        while await queued_score(redis, str(ids["pending"])) is not None:
            assert time.monotonic() < deadline, "the worker never took the entry"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # it would have claimed the job by now
        job = await store.get_job(database, ids["pending"])
        assert (job.status, job.error_message, job.attempts) == ("failed", "Cancelled", 0)
        assert f"job {ids['pending']} type=echo skipped" in stack.worker.output  # type: ignore[attr-defined]

        # Retried, it runs to completion on the real worker.
        await page.get_by_role("button", name="Retry").click()
        await expect(page.locator(".notice")).to_contain_text("Job queued again")
        job = await wait_for_status(database, ids["pending"], {"completed"})
        assert job.result == {"message": "cancel me"} and job.attempts == 1
        await page.reload()
        await expect(page.locator("#status")).to_have_text("completed")
        await expect(page.locator("#result")).to_contain_text('"message": "cancel me"')

        # A running job offers a cancel too (its handler is then stopped, which
        # tests/integration/test_jobs_client.py shows on a real worker); so does a retrying one.
        await page.goto(f"{stack.url}/jobs/{ids['processing']}")
        await expect(page.get_by_role("button")).to_have_count(1)
        await expect(page.get_by_role("button", name="Cancel")).to_have_count(1)
        await page.goto(f"{stack.url}/jobs/{ids['retrying']}")
        await page.get_by_role("button", name="Cancel").click()
        await expect(page.locator("#status")).to_have_text("failed")

        # Retry all failed echo jobs: the permanent failure runs (and fails) again; the
        # cancelled retrying job is left alone.
        before = await store.get_job(database, ids["failed"])
        await page.goto(f"{stack.url}/")
        await page.locator('form[data-type="echo"]').get_by_role("button").click()
        await expect(page.locator(".notice")).to_have_text("1 failed echo job(s) queued again.")
        await expect(page).to_have_url(f"{stack.url}/?type=echo&notice=bulk-retried&n=1")
        deadline = time.monotonic() + 20
        while True:
            after = await store.get_job(database, ids["failed"])
            if after.status == "failed" and after.finished_at > before.finished_at:
                break
            assert time.monotonic() < deadline, f"not run again: {after}"
            await asyncio.sleep(0.05)
        assert after.attempts == 1 and after.error_message == "echo: asked to fail permanently"
        assert (await store.get_job(database, ids["retrying"])).error_message == "Cancelled"
    except Exception:
        await keep_evidence(page, request)
        raise
