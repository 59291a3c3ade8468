"""The whole loop with real processes: storefront -> emulated app proxy -> web -> queue ->
worker -> emulated Admin API -> Postgres -> status polled back through the proxy."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import httpx
import pytest
from databases import Database

from jobs.builtin.product_summary import STOREFRONT_JOBS_PER_MINUTE as STOREFRONT_JOBS
from service import store
from shopify_emulator.catalogue import build
from tests.support.net import free_port, wait_for_http
from tests.support.processes import web_command, worker_command

SHOP = "e2e-shop.myshopify.com"
TOKEN = "shpat_e2e"
CATALOGUE = {"products": 7, "max_variants": 12, "seed": 3}  # product 7 is a DRAFT


@pytest.fixture
async def stack(env: dict[str, str], spawn, database: Database, redis):
    """Web, worker and emulator as subprocesses; returns (storefront URL, emulator URL, env)."""
    web_port, shopify_port = free_port(), free_port()
    web_url, shopify_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{shopify_port}"
    stack_env = {
        **env,
        "SHOPIFY_APP_URL": web_url,
        "SHOPIFY_ADMIN_URL": shopify_url,
        "RATE_LIMIT_MAX": "0",
        "WORKER_CONCURRENCY": "4",
    }
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    spawn(
        [
            sys.executable,
            "-m",
            "shopify_emulator",
            "--port",
            str(shopify_port),
            "--app-url",
            web_url,
            "--api-key",
            env["SHOPIFY_API_KEY"],
            "--api-secret",
            env["SHOPIFY_API_SECRET"],
            "--shop",
            f"{SHOP}={TOKEN}",
            "--bucket-size",
            "100",
            "--restore-rate",
            "250",
            "--products",
            str(CATALOGUE["products"]),
            "--max-variants",
            str(CATALOGUE["max_variants"]),
            "--seed",
            str(CATALOGUE["seed"]),
        ],
        stack_env,
        "shopify",
    )
    spawn(web_command(web_port), stack_env, "web")
    spawn(worker_command(), stack_env, "worker")
    wait_for_http(f"{web_url}/healthz")
    wait_for_http(f"{shopify_url}/_emulator/stats")
    wait_for_http(f"http://127.0.0.1:{env['WORKER_HEALTH_PORT']}/healthz")
    return shopify_url, stack_env


async def _finished(storefront: httpx.AsyncClient, job_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = (await storefront.get("/apps/jobs/status", params={"jobId": job_id})).json()
        if body.get("status") in ("completed", "failed"):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {body}")


async def test_product_summary_end_to_end_through_the_app_proxy(stack, database: Database) -> None:
    shopify_url, _ = stack
    product = next(iter(build(**CATALOGUE).values()))
    async with httpx.AsyncClient(
        base_url=shopify_url, headers={"X-Emulator-Customer": "42"}
    ) as storefront:
        created = await storefront.post(
            "/apps/jobs/process",
            json={"type": "product_summary", "input": {"product_id": product.gid, "page_size": 5}},
        )
        assert created.status_code == 200, created.text
        job_id = created.json()["jobId"]
        done = await _finished(storefront, job_id)
        assert done["status"] == "completed" and done["progress"] == 100
        assert done["result"]["productId"] == product.gid
        assert done["result"]["variantCount"] == len(product.variants) == 12
        assert done["result"]["pagesRead"] == 3
        assert "totalInventory" not in done["result"]  # PRODUCT_SUMMARY_SHOW_INVENTORY is off
        draft = list(build(**CATALOGUE).values())[6]
        assert draft.status == "DRAFT"
        hidden = await storefront.post(
            "/apps/jobs/process",
            json={"type": "product_summary", "input": {"product_id": draft.gid}},
        )
        refused = await _finished(storefront, hidden.json()["jobId"])
        assert refused == {
            "jobId": hidden.json()["jobId"],
            "status": "failed",
            "progress": 0,
            "error": f"Product not found: {draft.gid}",
        }

        missing = await storefront.post(
            "/apps/jobs/process",
            json={"type": "product_summary", "input": {"product_id": "gid://shopify/Product/1"}},
        )
        failed = await _finished(storefront, missing.json()["jobId"])
    assert failed["status"] == "failed" and "Product not found" in failed["error"]
    job = await store.get_job(database, uuid.UUID(missing.json()["jobId"]))
    assert job is not None and job.attempts == 1  # not retried: it cannot succeed later

    async with httpx.AsyncClient(
        base_url=shopify_url, headers={"X-Emulator-Customer": "7"}
    ) as other:
        hidden = await other.get("/apps/jobs/status", params={"jobId": job_id})
    assert hidden.status_code == 404  # another customer's job does not exist for them


async def test_a_minutes_storefront_summaries_against_a_small_bucket_with_two_workers(
    stack, spawn, database: Database
) -> None:
    """As many product summaries as a shop's storefront may start in a minute (30; the next is
    429), run by two workers sharing one small Admin API bucket."""
    shopify_url, stack_env = stack
    second_health = free_port()
    spawn(worker_command(), {**stack_env, "WORKER_HEALTH_PORT": str(second_health)}, "worker2")
    wait_for_http(f"http://127.0.0.1:{second_health}/healthz")
    products = [p.gid for p in build(**CATALOGUE).values() if p.on_storefront]
    if time.time() % 60 > 45:  # the type's quota counts wall-clock minutes: stay in one
        await asyncio.sleep(61 - time.time() % 60)
    async with httpx.AsyncClient(base_url=shopify_url) as storefront:
        for n in range(STOREFRONT_JOBS + 1):
            answer = await storefront.post(
                "/apps/jobs/process",
                json={
                    "type": "product_summary",
                    "input": {"product_id": products[n % len(products)], "page_size": 4},
                },
            )
            assert answer.status_code == (200 if n < STOREFRONT_JOBS else 429), answer.text
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            counts = dict(
                (r._mapping["status"], r._mapping["n"])
                for r in await database.fetch_all(
                    "SELECT status, count(*) AS n FROM jobs GROUP BY status"
                )
            )
            if counts.get("completed", 0) + counts.get("failed", 0) == STOREFRONT_JOBS:
                break
            await asyncio.sleep(0.5)
        stats = (await storefront.get("/_emulator/stats")).json()["shops"][SHOP]
    assert counts == {"completed": STOREFRONT_JOBS}, counts
    assert stats["throttled"] <= 3, stats


async def test_compliance_webhooks_run_through_the_worker(stack, database: Database) -> None:
    shopify_url, _ = stack
    shop = await store.get_shop(database, SHOP)
    assert shop is not None
    for customer in ("42", "42", "7"):
        await store.create_job(
            database,
            shop_id=shop.id,
            job_type="echo",
            job_input={"message": "hi"},
            customer_id=customer,
        )

    async def deliver(topic: str, payload: dict) -> store.Job:
        async with httpx.AsyncClient(base_url=shopify_url) as client:
            sent = await client.post(
                "/_emulator/webhooks/send",
                json={"topic": topic, "shop": SHOP, "payload": payload, "wait": True},
            )
        assert sent.json()["attempts"] == [{"status": 200}]
        key = f"webhook:{sent.json()['eventId']}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            row = await database.fetch_one(
                f"SELECT {store.JOB_COLUMNS} FROM jobs WHERE idempotency_key = :k", {"k": key}
            )
            job = store.job_from_row(row._mapping)
            if job is not None and job.status in ("completed", "failed"):
                return job
            await asyncio.sleep(0.2)
        raise AssertionError(f"{topic} job did not finish")

    customer = {"id": 42, "email": "jane@example.com"}
    exported = await deliver(
        "customers/data_request",
        {"shop_domain": SHOP, "customer": customer, "data_request": {"id": 1}},
    )
    assert exported.status == "completed" and len(exported.result["jobs"]) == 2
    redacted = await deliver(
        "customers/redact", {"shop_domain": SHOP, "customer": customer, "orders_to_redact": []}
    )
    # The customer's 2 jobs and the data request above, whose result holds copies of them.
    assert redacted.status == "completed" and redacted.result["deletedJobs"] == 3
    gone_request = "SELECT count(*) FROM jobs WHERE id = :i"
    assert await database.fetch_val(gone_request, {"i": exported.id}) == 0
    erased = await deliver("shop/redact", {"shop_id": 1, "shop_domain": SHOP})
    assert erased.status == "completed" and erased.result["deletedJobs"] >= 1
    remaining = await database.fetch_all("SELECT id FROM jobs")
    assert [r._mapping["id"] for r in remaining] == [erased.id]
    gone = await store.get_shop(database, SHOP)
    assert gone is not None and gone.access_token is None and not gone.installed
