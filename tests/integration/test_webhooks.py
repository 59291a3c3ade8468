"""POST /webhooks: HMAC, dedupe, uninstall, and the compliance topics as jobs."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import orjson
import pytest
from arq.connections import ArqRedis
from databases import Database

from jobs.builtin import compliance
from service import store
from service.app import create_app
from service.core.settings import Settings
from service.shopify.signatures import webhook_hmac
from tests.support.config import TEST_SECRET
from tests.support.jobs import HandlerContext
from tests.support.net import free_port
from tests.support.queue_entries import queue_entries

SHOP = "hooks-shop.myshopify.com"
TOKEN = "shpat_hooks"


@pytest.fixture
async def site(settings: Settings, database: Database, redis: ArqRedis, emulator, serve):
    """The app over HTTP, an emulated Shopify pointing at it, and one installed shop."""
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    shopify = emulator(app_url=app_url, shops={SHOP: TOKEN})
    configured = settings.model_copy(
        update={"shopify_admin_url": shopify.url, "shopify_app_url": app_url}
    )
    app = serve(create_app(configured), port=port)
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    return app, shopify


async def send(shopify, topic: str, payload: dict, **extra: object) -> dict:
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{shopify.url}/_emulator/webhooks/send",
            json={"topic": topic, "shop": SHOP, "payload": payload, "wait": True, **extra},
        )
    return answer.json()


async def webhook_jobs(database: Database) -> list[store.Job]:
    rows = await database.fetch_all(
        f"SELECT {store.JOB_COLUMNS} FROM jobs WHERE source = 'webhook' ORDER BY created_at"
    )
    return [store.job_from_row(row._mapping) for row in rows]  # type: ignore[misc]


async def queued(redis: ArqRedis) -> int:
    return len(await queue_entries(redis))


PRODUCT = {"id": 8000000001, "admin_graphql_api_id": "gid://shopify/Product/8000000001"}


async def test_signed_webhook_is_accepted_and_queued(site, database: Database, redis) -> None:
    _, shopify = site
    delivery = await send(shopify, "products/update", PRODUCT)
    assert delivery["attempts"] == [{"status": 200}]
    [job] = await webhook_jobs(database)
    assert job.type == "product_summary" and job.status == "pending"
    # As given (the model's defaults fill in when the job runs: docs/upgrading.md).
    assert job.input == {"product_id": PRODUCT["admin_graphql_api_id"]}
    assert job.idempotency_key == f"webhook:{delivery['eventId']}"
    assert await queued(redis) == 1


async def test_bad_hmac_is_401_and_records_nothing(site, database: Database, redis) -> None:
    app, shopify = site
    delivery = await send(shopify, "products/update", PRODUCT, secret="not-the-app-secret")
    assert not delivery["delivered"]
    assert [a["status"] for a in delivery["attempts"]] == [401, 401, 401]  # Shopify retries
    body = b'{"id": 1}'
    async with httpx.AsyncClient(base_url=app.url) as client:
        headers = {"X-Shopify-Topic": "products/update", "X-Shopify-Shop-Domain": SHOP}
        missing = await client.post("/webhooks", content=body, headers=headers)
        altered = await client.post(
            "/webhooks",
            content=b'{"id": 2}',
            headers={**headers, "X-Shopify-Hmac-Sha256": webhook_hmac(body, TEST_SECRET)},
        )
    assert missing.status_code == altered.status_code == 401
    assert missing.json() == {"error": "Invalid HMAC"}
    assert await database.fetch_val("SELECT count(*) FROM webhook_events") == 0
    assert await webhook_jobs(database) == [] and await queued(redis) == 0


async def test_one_event_delivered_three_times_is_one_job(site, database: Database, redis) -> None:
    _, shopify = site
    event = str(uuid.uuid4())
    first = await send(shopify, "products/update", PRODUCT, event_id=event)
    again = await asyncio.gather(
        send(shopify, "products/update", PRODUCT, event_id=event),
        send(shopify, "products/update", PRODUCT, event_id=event),
    )
    assert all(d["attempts"] == [{"status": 200}] for d in (first, *again))
    assert len({d["webhookId"] for d in (first, *again)}) == 3
    assert len(await webhook_jobs(database)) == 1
    assert await queued(redis) == 1
    # A new event is new work: Shopify's next products/update carries the product's new state.
    changed = {**PRODUCT, "updated_at": "2026-01-02T03:04:05-05:00"}
    other = await send(shopify, "products/update", changed)
    assert other["delivered"] and len(await webhook_jobs(database)) == 2


async def test_unqueueable_webhook_is_503_and_undone(
    settings: Settings, database: Database, redis
) -> None:
    broken = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    await store.upsert_shop(database, SHOP, TOKEN, "")
    app = create_app(broken)
    body = b'{"admin_graphql_api_id": "gid://shopify/Product/1"}'
    headers = {
        "X-Shopify-Topic": "products/update",
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Event-Id": "ev-1",
        "X-Shopify-Hmac-Sha256": webhook_hmac(body, TEST_SECRET),
    }
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answer = await client.post("/webhooks", content=body, headers=headers)
    assert answer.status_code == 503 and answer.json() == {"error": "Failed to queue job"}
    assert await database.fetch_val("SELECT count(*) FROM webhook_events") == 0
    assert await webhook_jobs(database) == []  # Shopify's redelivery will start afresh


async def test_malformed_webhooks_are_400(app_client: httpx.AsyncClient) -> None:
    def signed(body: bytes, **headers: str) -> dict:
        return {
            "content": body,
            "headers": {"X-Shopify-Hmac-Sha256": webhook_hmac(body, TEST_SECRET), **headers},
        }

    good = {"X-Shopify-Topic": "x/y", "X-Shopify-Shop-Domain": SHOP, "X-Shopify-Event-Id": "e"}
    assert (await app_client.post("/webhooks", **signed(b"[1]", **good))).status_code == 400
    assert (await app_client.post("/webhooks", **signed(b"{", **good))).status_code == 400
    no_shop = {**good, "X-Shopify-Shop-Domain": "evil.com"}
    assert (await app_client.post("/webhooks", **signed(b"{}", **no_shop))).status_code == 400
    unknown = await app_client.post("/webhooks", **signed(b"{}", **good))
    assert unknown.status_code == 200 and unknown.json() == {"status": "ignored"}


@pytest.mark.parametrize("triggered_at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_uninstall_triggered_out_of_postgres_range_is_400(
    app_client: httpx.AsyncClient, database: Database, triggered_at: str
) -> None:
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    body = orjson.dumps({"id": 1, "myshopify_domain": SHOP})
    headers = {
        "X-Shopify-Topic": "app/uninstalled",
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Hmac-Sha256": webhook_hmac(body, TEST_SECRET),
        "X-Shopify-Triggered-At": triggered_at,  # valid ISO 8601, but not a UTC moment
    }
    answer = await app_client.post("/webhooks", content=body, headers=headers)
    assert answer.status_code == 400
    assert answer.json() == {"error": "Missing or invalid X-Shopify-Triggered-At"}
    shop = await store.get_shop(database, SHOP)
    assert shop is not None and shop.installed
    assert await database.fetch_val("SELECT count(*) FROM webhook_events") == 0


async def test_app_uninstalled_stops_the_shops_proxy_calls(site, database: Database) -> None:
    _, shopify = site
    async with httpx.AsyncClient(base_url=shopify.url) as storefront:
        before = await storefront.get("/apps/jobs/status", params={"jobId": str(uuid.uuid4())})
        assert before.status_code == 404 and before.json() == {"error": "Job not found"}
        delivery = (await storefront.post(f"/_emulator/shops/{SHOP}/uninstall")).json()
        assert delivery["topic"] == "app/uninstalled" and delivery["delivered"]
        after = await storefront.get("/apps/jobs/status", params={"jobId": str(uuid.uuid4())})
    assert after.status_code == 404 and after.json() == {"error": "Shop not found"}
    shop = await store.get_shop(database, SHOP)
    assert shop is not None and not shop.installed and shop.access_token is None


async def _customer_job(database: Database, shop_id: int, customer: str | None) -> store.Job:
    job, _ = await store.create_job(
        database,
        shop_id=shop_id,
        job_type="echo",
        job_input={"message": f"from {customer}"},
        customer_id=customer,
    )
    return job


async def _run(job: store.Job, database: Database) -> dict:
    """Run a compliance job's handler as the worker would, with its validated input."""
    job_type = {
        t.name: t
        for t in (
            compliance.CUSTOMERS_DATA_REQUEST,
            compliance.CUSTOMERS_REDACT,
            compliance.SHOP_REDACT,
        )
    }[job.type]
    ctx = HandlerContext(shop=SHOP, job_type=job.type, job_id=str(job.id), database=database)
    return await job_type.handler(ctx, job_type.input_model.model_validate(job.input))


async def test_compliance_topics_become_jobs_on_our_own_data(site, database: Database) -> None:
    _, shopify = site
    shop = await store.get_shop(database, SHOP)
    assert shop is not None
    mine = [await _customer_job(database, shop.id, "42") for _ in range(2)]
    theirs = await _customer_job(database, shop.id, "7")
    anonymous = await _customer_job(database, shop.id, None)
    customer = {"id": 42, "email": "jane@example.com", "phone": "555-0100"}

    await send(
        shopify,
        "customers/data_request",
        {
            "shop_domain": SHOP,
            "customer": customer,
            "orders_requested": [1],
            "data_request": {"id": 9},
        },
    )
    await send(
        shopify,
        "customers/redact",
        {"shop_domain": SHOP, "customer": customer, "orders_to_redact": [1]},
    )
    await send(shopify, "shop/redact", {"shop_id": 954889, "shop_domain": SHOP})
    request, redact, shop_redact = await webhook_jobs(database)
    assert (request.type, redact.type, shop_redact.type) == (
        "customers_data_request",
        "customers_redact",
        "shop_redact",
    )
    assert "jane@example.com" not in str([request.input, redact.input, shop_redact.input])

    exported = await _run(request, database)
    assert exported["customerId"] == "42" and exported["dataRequestId"] == "9"
    assert sorted(j["id"] for j in exported["jobs"]) == sorted(str(j.id) for j in mine)
    # The export is kept as the request job's result (as the worker records it): a copy of
    # the customer's data, which the redaction must delete too.
    await database.execute(
        "UPDATE jobs SET status = 'completed', result = CAST(:result AS jsonb) WHERE id = :id",
        {"result": orjson.dumps(exported).decode(), "id": request.id},
    )
    other_request, _ = await store.create_job(
        database,
        shop_id=shop.id,
        job_type="customers_data_request",
        job_input={"customer_id": "7", "data_request_id": "10"},
        source="webhook",
    )

    assert (await _run(redact, database))["deletedJobs"] == 3  # 2 jobs + the data request
    remaining = {r._mapping["id"] for r in await database.fetch_all("SELECT id FROM jobs")}
    assert {theirs.id, anonymous.id, other_request.id, redact.id, shop_redact.id} == remaining
    stored = await database.fetch_all("SELECT result::text AS r FROM jobs WHERE result IS NOT NULL")
    assert not [row for row in stored if "from 42" in row._mapping["r"]]

    assert (await _run(shop_redact, database))["deletedJobs"] == 4  # 3 jobs + the redaction job
    left = await database.fetch_all("SELECT id FROM jobs")
    assert [r._mapping["id"] for r in left] == [shop_redact.id]
    gone = await store.get_shop(database, SHOP)
    assert gone is not None and gone.access_token is None and gone.refresh_token is None


async def test_compliance_types_cannot_be_started_from_the_storefront(site) -> None:
    _, shopify = site
    async with httpx.AsyncClient(base_url=shopify.url) as storefront:
        answer = await storefront.post(
            "/apps/jobs/process", json={"type": "shop_redact", "input": {}}
        )
    assert answer.status_code == 400 and answer.json()["error"] == "Unknown job type"


async def test_old_webhook_events_are_pruned(database: Database) -> None:
    for event in ("old", "new"):
        assert (
            await store.record_webhook_event(
                database,
                event_id=event,
                topic="x/y",
                shop_domain=SHOP,
                webhook_id=None,
                api_version=None,
            )
            is store.WebhookRecord.FRESH
        )
    await database.execute(
        "UPDATE webhook_events SET received_at = now() - interval '8 days' WHERE event_id = 'old'"
    )
    assert await store.prune_webhook_events(database, older_than_seconds=7 * 86_400) == 1
    left = await database.fetch_all("SELECT event_id FROM webhook_events")
    assert [r._mapping["event_id"] for r in left] == ["new"]
