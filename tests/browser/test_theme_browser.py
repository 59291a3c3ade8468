"""The theme client in a real browser, against the real stack.

Headless Chromium (Debian's package, driven by Playwright) opens the emulator's storefront:
the app's `job_button` block rendered from its Liquid, `shopjobs.js` loaded from the emulated
CDN, every request through the emulated app proxy to a real web process, run by a real worker.
The stack and the browser start once for the module; each test gets a fresh page. A failing
test leaves a screenshot and the page's console in test-artifacts/.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import redis
from playwright.sync_api import Browser, Locator, Page, Request, Route, expect, sync_playwright

from shopify_emulator.catalogue import build
from tests.support.browser import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    chromium_executable,
    item_failed,
    save_screenshot,
)
from tests.support.config import ROOT, TEST_API_KEY, TEST_SECRET, TEST_TOKEN_KEYS
from tests.support.net import free_port, wait_for_http
from tests.support.processes import Process, web_command, worker_command

SHOP = "demo-shop.myshopify.com"  # as in `make dev`, for the docs picture
TOKEN = "dev-admin-token"
CATALOGUE = {"products": 3, "max_variants": 12, "seed": 5}
MODULE = "/cdn/extensions/shopjobs-theme/assets/shopjobs.js"
SLOW_MESSAGE = "Hello from the demo storefront"
FAIL_MESSAGE = "echo: asked to fail permanently"


@dataclass
class Stack:
    storefront: str
    database_url: str


@pytest.fixture(scope="module")
def stack(servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """Emulator (storefront + app proxy + Admin API), web and worker, as real processes."""
    logs = tmp_path_factory.mktemp("theme-stack")
    web_port, shopify_port, health_port = free_port(), free_port(), free_port()
    web_url, shopify_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{shopify_port}"
    env = {
        **os.environ,
        "DATABASE_URL": servers.database_url,
        "REDIS_URL": servers.redis_url,
        "SHOPIFY_API_KEY": TEST_API_KEY,
        "SHOPIFY_API_SECRET": TEST_SECRET,
        "TOKEN_ENCRYPTION_KEYS": TEST_TOKEN_KEYS,
        "SHOPIFY_APP_URL": web_url,
        "SHOPIFY_ADMIN_URL": shopify_url,
        "ENABLE_DIAGNOSTIC_JOBS": "true",
        "WORKER_HEALTH_PORT": str(health_port),
        "WORKER_CONCURRENCY": "4",
        "RATE_LIMIT_MAX": "0",
        "PYTHONUNBUFFERED": "1",
    }
    redis.Redis.from_url(servers.redis_url).flushdb()
    subprocess.run(
        [sys.executable, "-m", "service", "shops", "add", SHOP, "--token", TOKEN],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    emulator = [sys.executable, "-m", "shopify_emulator", "--port", str(shopify_port)]
    emulator += ["--app-url", web_url, "--api-key", TEST_API_KEY, "--api-secret", TEST_SECRET]
    emulator += ["--shop", f"{SHOP}={TOKEN}"]
    for name, value in CATALOGUE.items():
        emulator += [f"--{name.replace('_', '-')}", str(value)]
    processes = [
        Process(emulator, env, logs / "shopify.log"),
        Process(web_command(web_port), env, logs / "web.log"),
        Process(worker_command(), env, logs / "worker.log"),
    ]
    try:
        wait_for_http(f"{web_url}/healthz")
        wait_for_http(f"{shopify_url}/_emulator/stats")
        wait_for_http(f"http://127.0.0.1:{health_port}/healthz")
        yield Stack(storefront=shopify_url, database_url=servers.database_url)
    finally:
        for process in processes:
            process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_executable()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, stack: Stack, request: pytest.FixtureRequest) -> Iterator[Page]:
    """The storefront, loaded, with every block bound; a screenshot is kept if the test fails."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    console: list[str] = []
    errors: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{stack.storefront}/")
    expect(page.locator("[data-shopjobs-block]:not([data-shopjobs-state])")).to_have_count(0)
    yield page
    if item_failed(request.node):
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / f"{request.node.name}.png", full_page=True)
        lines = console + [f"pageerror: {error}" for error in errors]
        (ARTIFACTS / f"{request.node.name}.console.log").write_text("\n".join(lines) + "\n")
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def block(page: Page, block_id: str) -> Locator:
    return page.locator(f"#shopjobs-{block_id}")


def watch_requests(page: Page, path: str, method: str = "GET") -> list[Request]:
    """Every request to `path` through the app proxy that the page starts from now on."""
    seen: list[Request] = []
    page.on(
        "request",
        lambda r: seen.append(r) if r.method == method and f"/apps/jobs/{path}" in r.url else None,
    )
    return seen


def record_progress(page: Page, block_id: str) -> None:
    """Collect every value the block's progress bar shows, in window.progressSeen."""
    page.evaluate(
        """id => {
            const bar = document.querySelector(`#shopjobs-${id} progress`);
            window.progressSeen = [];
            new MutationObserver(() => window.progressSeen.push(bar.getAttribute("value")))
                .observe(bar, {attributes: true, attributeFilter: ["value"]});
        }""",
        block_id,
    )


def query(database_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Run SQL on a thread of its own: Playwright's sync API owns this thread's event loop."""

    async def fetch() -> list[dict[str, Any]]:
        connection = await asyncpg.connect(database_url)
        try:
            return [dict(row) for row in await connection.fetch(sql, *args)]
        finally:
            await connection.close()

    rows: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: rows.extend(asyncio.run(fetch())))
    thread.start()
    thread.join(10)
    return rows


def jobs_with_message(stack: Stack, message: str) -> list[dict[str, Any]]:
    return query(
        stack.database_url,
        "SELECT j.id, j.status, j.idempotency_key FROM jobs j JOIN shops s ON s.id = j.shop_id"
        " WHERE s.domain = $1 AND j.input->>'message' = $2 ORDER BY j.created_at",
        SHOP,
        message,
    )


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_click_shows_the_progress_moving_then_the_result(page: Page) -> None:
    slow = block(page, "echo-slow")
    record_progress(page, "echo-slow")
    slow.get_by_role("button").click()
    expect(slow.get_by_role("button")).to_be_disabled()
    expect(slow).to_have_attribute("data-shopjobs-state", "running")
    expect(slow.locator("output")).to_contain_text("Working…", timeout=10_000)
    expect(slow).to_have_attribute("data-shopjobs-state", "completed", timeout=20_000)
    expect(slow.locator("output")).to_contain_text(SLOW_MESSAGE)
    expect(slow.get_by_role("button")).to_be_enabled()
    seen = [int(value) for value in page.evaluate("window.progressSeen")]
    assert seen[-1] == 100, seen
    assert any(0 < value < 100 for value in seen), f"no progress between 0 and 100: {seen}"
    assert seen == sorted(seen), seen


def test_summarise_shows_the_product_summary(page: Page, stack: Stack) -> None:
    product = next(iter(build(**CATALOGUE).values()))
    card = block(page, f"summary-{product.id}")
    card.get_by_role("button", name="Summarise").click()
    expect(card).to_have_attribute("data-shopjobs-state", "completed", timeout=20_000)
    result = card.locator("output dl")
    expect(result).to_contain_text(product.title)
    expect(result.locator("dt", has_text="variantCount").locator("+ dd")).to_have_text(
        str(len(product.variants))
    )


def test_a_double_click_creates_one_job(page: Page, stack: Stack) -> None:
    posts = watch_requests(page, "process", "POST")
    before = len(jobs_with_message(stack, SLOW_MESSAGE))
    slow = block(page, "echo-slow")
    slow.get_by_role("button").dblclick()
    expect(slow).to_have_attribute("data-shopjobs-state", "completed", timeout=20_000)
    assert len(posts) == 1
    rows = jobs_with_message(stack, SLOW_MESSAGE)[before:]
    assert len(rows) == 1 and rows[0]["status"] == "completed"
    assert rows[0]["idempotency_key"] == "proxy:" + posts[0].headers["idempotency-key"]

    # Even with the button enabled again between the clicks, the second click joins the first.
    failing = block(page, "echo-fail")
    failing.get_by_role("button").evaluate("b => { b.click(); b.disabled = false; b.click(); }")
    expect(failing).to_have_attribute("data-shopjobs-state", "failed", timeout=20_000)
    assert len(posts) == 2  # one per action
    assert posts[1].headers["idempotency-key"] != posts[0].headers["idempotency-key"]
    assert len(jobs_with_message(stack, "never")) >= 1


def test_a_failing_job_shows_its_error(page: Page) -> None:
    failing = block(page, "echo-fail")
    failing.get_by_role("button").click()
    expect(failing).to_have_attribute("data-shopjobs-state", "failed", timeout=20_000)
    expect(failing.locator("output")).to_have_text(FAIL_MESSAGE)
    expect(failing.locator("progress")).to_be_hidden()
    expect(failing.get_by_role("button")).to_be_enabled()


def test_a_block_input_that_is_not_an_object_is_named(page: Page) -> None:
    """A merchant's Job input setting of `"x"`, `[1]` or `null` gets a sentence, not a TypeError."""
    posts = watch_requests(page, "process", "POST")
    summary = page.locator("[data-shopjobs-block]").first
    for setting in ('"x"', "[1]", "null"):
        summary.get_by_role("button").evaluate(
            "(b, v) => { b.dataset.shopjobsInput = v; }", setting
        )
        summary.get_by_role("button").click()
        expect(summary).to_have_attribute("data-shopjobs-state", "failed")
        expect(summary.locator("output")).to_have_text(
            "This block's job input is not a JSON object."
        )
        summary.evaluate("el => el.setAttribute('data-shopjobs-state', 'idle')")
    assert posts == []


def test_a_very_long_error_wraps_inside_the_block(page: Page) -> None:
    """A job's error (or string result) with no spaces must not stretch the shop's page."""
    long_error = "E" * 2000
    page.route(
        lambda url: "/apps/jobs/status" in url,
        lambda route: route.fulfill(
            json={"jobId": "j", "status": "failed", "progress": 0, "error": long_error}
        ),
    )
    failing = block(page, "echo-slow")
    failing.get_by_role("button").click()
    expect(failing).to_have_attribute("data-shopjobs-state", "failed", timeout=20_000)
    expect(failing.locator("output")).to_have_text(long_error)
    width = page.evaluate("document.documentElement.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    card = failing.locator("xpath=..").bounding_box()
    output = failing.locator("output").bounding_box()
    assert card is not None and output is not None
    assert output["x"] + output["width"] <= card["x"] + card["width"]


def test_polling_survives_a_network_cut(page: Page, stack: Stack) -> None:
    cut = {"on": False, "aborted": 0}

    def status(route: Route) -> None:
        if cut["on"]:
            cut["aborted"] += 1
            route.abort("internetdisconnected")
        else:
            route.continue_()

    page.route(lambda url: "/apps/jobs/status" in url, status)
    slow = block(page, "echo-slow")
    before = len(jobs_with_message(stack, SLOW_MESSAGE))
    with page.expect_response(lambda r: "/apps/jobs/status" in r.url and r.ok):
        slow.get_by_role("button").click()
    cut["on"] = True
    expect(slow.locator("output")).to_have_text("Connection lost, retrying…", timeout=10_000)
    expect(slow).to_have_attribute("data-shopjobs-state", "running")

    def finished_while_cut() -> bool:
        page.wait_for_timeout(100)  # lets Playwright serve the route handler meanwhile
        rows = jobs_with_message(stack, SLOW_MESSAGE)[before:]
        return bool(rows) and rows[0]["status"] == "completed"

    wait_until(finished_while_cut, 20, "the job to complete on the server")
    assert cut["aborted"] >= 2
    cut["on"] = False
    expect(slow).to_have_attribute("data-shopjobs-state", "completed", timeout=20_000)
    expect(slow.locator("output")).to_contain_text(SLOW_MESSAGE)


def test_a_hidden_tab_does_not_poll(page: Page) -> None:
    page.evaluate(
        """() => {
            window.tabHidden = true;
            Object.defineProperty(document, "hidden", {configurable: true, get: () => window.tabHidden});
        }"""
    )
    polls = watch_requests(page, "status")
    slow = block(page, "echo-slow")
    slow.get_by_role("button").click()
    expect(slow.locator("output")).to_have_text("Queued…")
    page.wait_for_timeout(2_500)  # five times the first polling delay
    assert polls == []
    page.evaluate(
        "() => { window.tabHidden = false; document.dispatchEvent(new Event('visibilitychange')); }"
    )
    expect(slow).to_have_attribute("data-shopjobs-state", "completed", timeout=20_000)
    assert len(polls) >= 1


def test_client_backoff_keys_and_error_messages(page: Page) -> None:
    """startJob on its own: the polling schedule, one key across retries, readable errors."""
    assert page.evaluate(
        f"""async () => {{
            const {{ nextDelay }} = await import("{MODULE}");
            const delays = [];
            for (let d = 0, i = 0; i < 8; i++) delays.push(d = nextDelay(d));
            return delays;
        }}"""
    ) == [500, 750, 1125, 1687.5, 2531.25, 3796.875, 5000, 5000]

    def fake(status: int, body: str, content_type: str = "application/json") -> Callable:
        return lambda route: route.fulfill(status=status, body=body, content_type=content_type)

    page.route(
        "**/apps/unit400/process",
        fake(
            400,
            '{"error": "Invalid input", "details": [{"field": "input.message", '
            '"message": "Field required", "type": "missing"}]}',
        ),
    )
    page.route("**/apps/unit502/process", fake(502, "<h1>Bad Gateway</h1>", "text/html"))
    page.route("**/apps/unit404/process", fake(404, "<h1>Page not found</h1>", "text/html"))
    page.route("**/apps/unit200/process", fake(200, "<h1>Enter the password</h1>", "text/html"))
    page.route("**/apps/offline/process", lambda route: route.abort("internetdisconnected"))
    keys: list[str] = []

    def flaky_create(route: Route) -> None:
        keys.append(route.request.headers["idempotency-key"])
        if len(keys) == 1:
            route.fulfill(status=503, json={"error": "Failed to queue job"})
        else:
            route.continue_()

    page.route("**/apps/jobs/process", flaky_create)
    answers = page.evaluate(
        f"""async () => {{
            const {{ startJob }} = await import("{MODULE}");
            const fast = {{ createAttempts: 2, poll: {{ initial: 20 }} }};
            const outcome = (p) => p.then(
                (result) => ({{ result }}),
                (e) => ({{ name: e.name, message: e.message, status: e.status }}));
            const seen = [];
            const once = {{ ...fast, idempotencyKey: crypto.randomUUID(),
                onProgress: (s) => seen.push(s.jobId) }};
            const started = await outcome(startJob("echo", {{ message: "flaky create" }}, once));
            const again = await outcome(startJob("echo", {{ message: "flaky create" }}, once));
            return {{
                started, again, jobIds: [...new Set(seen)].length,
                e400: await outcome(startJob("echo", {{}}, {{ ...fast, basePath: "/apps/unit400" }})),
                e502: await outcome(startJob("echo", {{}}, {{ ...fast, basePath: "/apps/unit502" }})),
                e404: await outcome(startJob("echo", {{}}, {{ ...fast, basePath: "/apps/unit404/" }})),
                e200: await outcome(startJob("echo", {{}}, {{ ...fast, basePath: "/apps/unit200" }})),
                offline: await outcome(startJob("echo", {{}}, {{ ...fast, basePath: "/apps/offline" }})),
            }};
        }}"""
    )
    assert answers["started"] == answers["again"] == {"result": {"message": "flaky create"}}
    # The retry after the 503 carried the same key, and the same key again gave the same job.
    assert len(keys) == 3 and len(set(keys)) == 1
    assert answers["jobIds"] == 1
    assert answers["e400"] == {
        "name": "JobError",
        "message": "Invalid input (input.message: Field required)",
        "status": 400,
    }
    assert answers["e502"]["message"] == "The store could not answer (HTTP 502). Please try again."
    assert (
        answers["e404"]["message"]
        == "Nothing answers at /apps/unit404/process: is the app installed?"
    )
    assert answers["e200"]["message"].startswith("The store answered with a page, not the app")
    assert answers["offline"] == {
        "name": "JobError",
        "message": "Could not reach the store. Check your connection.",
        "status": 0,
    }


def test_demo_page_screenshot(page: Page) -> None:
    """The picture in docs/theme-client.md: a summary, an error and a job in progress.

    Saved to test-artifacts/demo.png; `make screenshot` (UPDATE_SCREENSHOT=1) also writes
    docs/demo.png, so an ordinary test run never changes a committed file.
    """
    product = next(iter(build(**CATALOGUE).values()))
    summary = block(page, f"summary-{product.id}")
    summary.get_by_role("button").click()
    failing = block(page, "echo-fail")
    failing.get_by_role("button").click()
    expect(summary).to_have_attribute("data-shopjobs-state", "completed", timeout=20_000)
    expect(failing).to_have_attribute("data-shopjobs-state", "failed", timeout=20_000)
    slow = block(page, "echo-slow")
    slow.get_by_role("button").click()
    page.wait_for_function(
        """() => {
            const bar = document.querySelector("#shopjobs-echo-slow progress");
            return bar.hasAttribute("value") && bar.value >= 30 && bar.value < 100;
        }""",
        timeout=20_000,
    )
    page.set_viewport_size({"width": 1200, "height": 800})
    save_screenshot(page.screenshot(full_page=True), "demo.png")
    expect(slow).to_have_attribute("data-shopjobs-state", "completed", timeout=20_000)
