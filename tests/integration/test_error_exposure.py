"""Who sees a failed job's error text, through the real web and worker processes.

A handler's NonRetryableError message, and what the worker writes itself (a timeout, a cancel),
are written for whoever asked for the job: the storefront (app proxy) and the merchant (the
embedded app) see them. An unexpected exception's text may hold anything (a driver's error
with host names, another customer's data): they see "The job failed", while the dashboard
(the operator's) and the logs keep the full text.
"""

from __future__ import annotations

import time
import uuid

import httpx
from arq.connections import ArqRedis
from databases import Database

from service import store
from shopify_emulator.config import EmulatorConfig
from shopify_emulator.embedded import session_claims, sign
from tests.support.config import TEST_API_KEY, TEST_SECRET
from tests.support.jobs import add_job, make_shop, wait_for_status
from tests.support.processes import start_web, start_worker
from tests.support.proxy import proxy_url

SHOP = "exposure-shop.myshopify.com"
DASHBOARD_PASSWORD = "exposure-test-password"
GENERIC = "The job failed"
# What the unexpected exception says: the text that must stay with the operator.
CRASH_TEXT = "echo: planned failure 1 of 1"


def session_token(app_url: str) -> str:
    """A session token of SHOP's admin, signed as Shopify signs it (the emulator's signer)."""
    config = EmulatorConfig(app_url=app_url, api_key=TEST_API_KEY, api_secret=TEST_SECRET)
    return sign(session_claims(config, SHOP, "1001", time.time()), TEST_SECRET)


async def test_storefront_and_merchant_see_public_errors_only(
    env: dict[str, str], spawn, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database, SHOP)
    worker = start_worker(spawn, env, job_max_attempts=1, job_timeout_seconds=1)
    _, base = start_web(spawn, {**env, "DASHBOARD_PASSWORD": DASHBOARD_PASSWORD})

    inputs = {
        "refused": {"message": "x", "fail_permanently": True},  # NonRetryableError
        "crashed": {"message": "x", "fail_times": 1},  # RuntimeError, no attempts left
        "timed_out": {"message": "x", "sleep_ms": 30_000},  # past JOB_TIMEOUT_SECONDS=1
    }
    ids: dict[str, uuid.UUID] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for name, job_input in inputs.items():
            created = await client.post(
                proxy_url(base, "/proxy/process", shop=SHOP),
                json={"type": "echo", "input": job_input},
            )
            assert created.status_code == 200, created.text
            ids[name] = uuid.UUID(created.json()["jobId"])
    # Cancelled before it ran (the dashboard's or JobsClient.cancel's store write).
    ids["cancelled"] = await add_job(database, redis, shop, {"message": "x"}, enqueue=False)
    assert await store.cancel_job(database, ids["cancelled"]) == []

    for name, job_id in ids.items():
        job = await wait_for_status(database, job_id, {"completed", "failed"}, timeout=30)
        assert job.status == "failed", (name, job, worker.output[-3000:])

    shown = {
        "refused": "echo: asked to fail permanently",
        "crashed": GENERIC,
        "timed_out": "Timed out after 1s",
        "cancelled": "Cancelled",
    }
    bearer = {"Authorization": f"Bearer {session_token(env['SHOPIFY_APP_URL'])}"}
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for name, job_id in ids.items():
            status = await client.get(proxy_url(base, f"/proxy/status?jobId={job_id}", shop=SHOP))
            assert status.status_code == 200, status.text
            assert status.json()["error"] == shown[name], name
            merchant = await client.get(f"/api/jobs/{job_id}", headers=bearer)
            assert merchant.status_code == 200, merchant.text
            assert merchant.json()["error"] == shown[name], name
            assert merchant.json()["cancelled"] is (name == "cancelled")
        listed = await client.get("/api/jobs", params={"status": "failed"}, headers=bearer)
        assert listed.status_code == 200 and CRASH_TEXT not in listed.text
        assert {job["error"] for job in listed.json()["jobs"]} == set(shown.values())

        # The operator's dashboard keeps the real text.
        page = await client.get(f"/admin/jobs/{ids['crashed']}", auth=("admin", DASHBOARD_PASSWORD))
        assert page.status_code == 200 and CRASH_TEXT in page.text
    crashed = await store.get_job(database, ids["crashed"])
    assert crashed is not None and crashed.error_message == CRASH_TEXT
    assert CRASH_TEXT in worker.output
