"""What the storefront may reach through the app proxy, against the real app over HTTP.

- `GET /proxy/status` serves only jobs the storefront created (`source` 'proxy') and their
  batch children; a job the merchant, a webhook, a schedule, a compliance topic, the CLI or
  the app's own JobsClient started is 404 `Job not found`, byte for byte a missing job.
- A job type is offered to the storefront only if it opts in (`JobType(proxy=True)`).
- A storefront request to `product_summary` is bounded: page_size at most 50 (each Admin API
  call requests at most 54 points) and 30 jobs a minute per shop, 429 past that.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from arq.connections import ArqRedis
from databases import Database
from pydantic import BaseModel

from jobs.builtin import product_summary
from jobs.types import JobType
from service import store
from service.app import create_app
from service.core.settings import Settings
from service.intake import Source
from service.jobs_client import JobsClient
from service.shopify.admin import AdminClient
from shopify_emulator.catalogue import build
from shopify_emulator.config import EmulatorConfig
from shopify_emulator.embedded import session_claims, sign
from tests.support.config import TEST_API_KEY, TEST_SECRET
from tests.support.jobs import HandlerContext, wait_for_status
from tests.support.net import free_port
from tests.support.processes import Spawn, start_worker
from tests.support.proxy import proxy_url

SHOP = "storefront-shop.myshopify.com"
TOKEN = "shpat_storefront"
NOT_FOUND = {"error": "Job not found"}
CATALOGUE = {"products": 3, "max_variants": 23, "seed": 5}


@pytest.fixture
async def site(settings: Settings, database: Database, redis: ArqRedis, emulator, serve):  # type: ignore[no-untyped-def]
    """The app over HTTP, an emulated Shopify that delivers webhooks to it, one shop."""
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    shopify = emulator(app_url=app_url, shops={SHOP: TOKEN}, **CATALOGUE)
    configured = settings.model_copy(
        update={"shopify_admin_url": shopify.url, "shopify_app_url": app_url}
    )
    web = create_app(configured)
    app = serve(web, port=port)
    app.web = web
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    return app, shopify


async def _status(base: str, job_id: object, customer: str = "") -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        url = proxy_url(base, f"/proxy/status?jobId={job_id}", shop=SHOP, customer=customer)
        return await client.get(url)


async def _assert_hidden(base: str, job_id: object) -> None:
    """404 exactly like a job that does not exist, for anonymous and logged-in visitors."""
    missing = await _status(base, uuid.uuid4())
    for customer in ("", "7"):
        answer = await _status(base, job_id, customer)
        assert (answer.status_code, answer.json()) == (404, NOT_FOUND), (job_id, answer.text)
        assert answer.content == missing.content


async def _deliver(shopify, topic: str, payload: dict) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            f"{shopify.url}/_emulator/webhooks/send",
            json={"topic": topic, "shop": SHOP, "payload": payload, "wait": True},
        )
    assert answer.json()["delivered"], answer.text


async def _ids_by_source(database: Database) -> dict[str, list[uuid.UUID]]:
    rows = await database.fetch_all("SELECT id, source FROM jobs ORDER BY created_at")
    found: dict[str, list[uuid.UUID]] = {}
    for row in rows:
        found.setdefault(row._mapping["source"], []).append(row._mapping["id"])
    return found


async def test_only_the_storefronts_own_jobs_are_shown(
    site, settings: Settings, database: Database, redis: ArqRedis, env: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    app, shopify = site
    shop = await store.get_shop(database, SHOP)
    assert shop is not None
    # The merchant, in the embedded app (POST /api/jobs with a session token).
    config = EmulatorConfig(app_url=app.url, api_key=TEST_API_KEY, api_secret=TEST_SECRET)
    session = sign(session_claims(config, SHOP, "1001", time.time()), TEST_SECRET)
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as client:
        merchant = await client.post(
            "/api/jobs",
            json={"type": "echo", "input": {"message": "the merchant's"}},
            headers={"Authorization": f"Bearer {session}"},
        )
    assert merchant.status_code == 201, merchant.text
    # Webhooks: an ordinary topic and a compliance one (a customer's data export).
    await _deliver(shopify, "products/update", {"admin_graphql_api_id": "gid://shopify/Product/1"})
    await _deliver(
        shopify,
        "customers/data_request",
        {
            "shop_domain": SHOP,
            "customer": {"id": 42, "email": "jane@example.com"},
            "orders_requested": [1],
            "data_request": {"id": 9},
        },
    )
    # A schedule's run (the tick after the first the schedule sees).
    tick = datetime.now(UTC).replace(microsecond=0)
    for at in (tick, tick + timedelta(minutes=1)):
        await store.create_tick_jobs(
            database, "echo", at, per_shop=True, input_json='{"message": "tick"}',
            interval_seconds=60,
        )  # fmt: skip
    # The CLI, as an operator runs it.
    cli = subprocess.run(
        [sys.executable, "-m", "service", "jobs", "enqueue", "echo", "--shop", SHOP,
         "--input", '{"message": "from the cli"}'],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    # The app's own code, and a handler's ctx.enqueue (both JobsClient).
    client = JobsClient(database, redis, {"echo": app.web.state.web.job_types["echo"]})
    await client.enqueue("echo", shop=SHOP, input={"message": "the app's"})
    await client.enqueue("echo", shop=SHOP, input={"message": "a job's"}, source=Source.JOB)

    started = await _ids_by_source(database)
    assert set(started) == {"admin", "webhook", "schedule", "cli", "app", "job"}, started
    assert len(started["webhook"]) == 2
    for ids in started.values():
        for job_id in ids:
            await _assert_hidden(app.url, job_id)

    # The storefront's own job is shown, with the same database and shop.
    async with httpx.AsyncClient(timeout=10) as http:
        made = await http.post(
            proxy_url(app.url, "/proxy/process", shop=SHOP),
            json={"type": "echo", "input": {"message": "the storefront's"}},
        )
    assert made.status_code == 200, made.text
    shown = await _status(app.url, made.json()["jobId"])
    assert shown.status_code == 200 and shown.json()["status"] == "pending"


async def test_batch_children_of_a_storefront_job_are_shown_to_its_customer(
    site, database: Database, env: dict[str, str], spawn: Spawn
) -> None:  # type: ignore[no-untyped-def]
    app, _ = site
    async with httpx.AsyncClient(timeout=10) as http:
        made = await http.post(
            proxy_url(app.url, "/proxy/process", shop=SHOP, customer="7"),
            json={"type": "echo", "input": {"message": "fan", "children": 2}},
        )
    assert made.status_code == 200, made.text
    parent = uuid.UUID(made.json()["jobId"])
    start_worker(spawn, env)
    await wait_for_status(database, parent, {"completed"})
    children = [
        r._mapping["id"]
        for r in await database.fetch_all("SELECT id FROM jobs WHERE parent_id = :p", {"p": parent})
    ]
    assert len(children) == 2
    for child in children:
        answer = await _status(app.url, child, customer="7")
        assert answer.status_code == 200 and answer.json()["status"] == "completed", answer.text
        # Judged by the parent's customer: not another customer's, nor an anonymous visitor's.
        for other in ("", "8"):
            hidden = await _status(app.url, child, customer=other)
            assert (hidden.status_code, hidden.json()) == (404, NOT_FOUND)
    assert (await _status(app.url, parent, customer="7")).json()["batch"]["completed"] == 2


# -- opt-in ----------------------------------------------------------------------------------


class PlainInput(BaseModel):
    message: str = ""


async def _plain(ctx: object, data: PlainInput) -> dict[str, str]:
    return {"message": data.message}


@pytest.mark.parametrize("offered", [False, True])
async def test_a_type_that_does_not_opt_in_is_unknown_to_the_storefront(
    app_client: httpx.AsyncClient, database: Database, offered: bool
) -> None:
    await store.upsert_shop(database, SHOP, TOKEN, "")
    declared = (
        JobType(name="plain", input_model=PlainInput, handler=_plain, proxy=True)
        if offered
        else JobType(name="plain", input_model=PlainInput, handler=_plain)  # no `proxy=`
    )
    web = app_client.app.state.web  # type: ignore[attr-defined]
    web.job_types["plain"] = declared
    answer = await app_client.post(
        proxy_url("", "/proxy/process", shop=SHOP), json={"type": "plain", "input": {}}
    )
    if offered:
        assert answer.status_code == 200, answer.text
        return
    assert answer.status_code == 400
    assert answer.json() == {
        "error": "Unknown job type",
        "details": [{"field": "type", "message": "no such job type"}],
    }
    assert await database.fetch_val("SELECT count(*) FROM jobs") == 0


# -- what one storefront request may cost ----------------------------------------------------


async def test_a_storefront_product_summary_pages_at_most_50_variants(
    app_client: httpx.AsyncClient, database: Database
) -> None:
    await store.upsert_shop(database, SHOP, TOKEN, "")
    gid = "gid://shopify/Product/1"
    refused = await app_client.post(
        proxy_url("", "/proxy/process", shop=SHOP),
        json={"type": "product_summary", "input": {"product_id": gid, "page_size": 250}},
    )
    assert refused.status_code == 400 and refused.json()["error"] == "Invalid input"
    assert refused.json()["details"][0]["field"] == "input.page_size"
    assert await database.fetch_val("SELECT count(*) FROM jobs") == 0
    accepted = await app_client.post(
        proxy_url("", "/proxy/process", shop=SHOP),
        json={"type": "product_summary", "input": {"product_id": gid, "page_size": 50}},
    )
    assert accepted.status_code == 200, accepted.text


async def test_a_storefront_product_summary_never_asks_more_than_54_points(
    settings: Settings,
    database: Database,
    redis: ArqRedis,
    app_client: httpx.AsyncClient,
    emulator,  # type: ignore[no-untyped-def]
) -> None:
    """A shop whose bucket holds 60 points refuses any single query that asks for more
    (MAX_COST_EXCEEDED, never retried): the storefront's job, at its largest page, still runs
    to the end on it, one page after another."""
    shopify = emulator(shops={SHOP: TOKEN}, bucket_size=60, restore_rate=1000, **CATALOGUE)
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    product = next(iter(build(**CATALOGUE).values()))  # 23 variants
    one_more = await app_client.post(
        proxy_url("", "/proxy/process", shop=SHOP),
        json={"type": "product_summary", "input": {"product_id": product.gid, "page_size": 51}},
    )
    assert one_more.status_code == 400, one_more.text  # 55 points: more than the bound
    made = await app_client.post(
        proxy_url("", "/proxy/process", shop=SHOP),
        json={"type": "product_summary", "input": {"product_id": product.gid, "page_size": 50}},
    )
    assert made.status_code == 200, made.text
    job = await store.get_job(database, uuid.UUID(made.json()["jobId"]))
    assert job is not None
    admin = AdminClient(
        settings.model_copy(update={"shopify_admin_url": shopify.url}), database, redis
    )
    try:
        kind = product_summary.job_type(show_inventory=False)
        ctx = HandlerContext(shop=SHOP, job_type=kind.name, admin=admin.admin_for(SHOP))
        summary = await kind.handler(ctx, kind.input_model.model_validate(job.input))
        assert (summary["variantCount"], summary["pagesRead"]) == (23, 1)
    finally:
        await admin.aclose()


async def test_a_shops_storefront_starts_at_most_30_product_summaries_a_minute(
    app_client: httpx.AsyncClient, database: Database, redis: ArqRedis
) -> None:
    await store.upsert_shop(database, SHOP, TOKEN, "")
    other = "other-storefront.myshopify.com"
    await store.upsert_shop(database, other, TOKEN, "")
    body = {"type": "product_summary", "input": {"product_id": "gid://shopify/Product/1"}}
    limit = product_summary.STOREFRONT_JOBS_PER_MINUTE
    if time.time() % 60 > 45:  # the quota's window is the wall-clock minute: start in one
        await asyncio.sleep(61 - time.time() % 60)
    answers = [
        await app_client.post(proxy_url("", "/proxy/process", shop=SHOP), json=body)
        for _ in range(limit + 1)
    ]
    assert [a.status_code for a in answers[:limit]] == [200] * limit
    refused = answers[-1]
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == "Too many requests: try again later"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Other types, and other shops, are not held back by it.
    echo = await app_client.post(
        proxy_url("", "/proxy/process", shop=SHOP), json={"type": "echo", "input": {"message": "x"}}
    )
    assert echo.status_code == 200, echo.text
    elsewhere = await app_client.post(proxy_url("", "/proxy/process", shop=other), json=body)
    assert elsewhere.status_code == 200, elsewhere.text
    rows = await database.fetch_val(
        "SELECT count(*) FROM jobs WHERE type = 'product_summary' AND source = 'proxy'"
    )
    assert rows == limit + 1  # 30 of SHOP's, one of the other shop's
