"""Shopify bulk operations through the real Admin client, against the emulator, Postgres and
Redis: streaming, reassembly, slots by API version, failures, cancellation, mutations."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import orjson
import pytest
from arq.connections import ArqRedis
from databases import Database

from jobs.builtin import inventory_report
from service import store
from service.core.settings import Settings
from service.shopify import bulk
from service.shopify.admin import AdminClient
from service.shopify.signatures import webhook_hmac
from shopify_emulator.catalogue import build
from tests.support.config import TEST_SECRET
from tests.support.jobs import HandlerContext, add_job

SHOP = "bulk-shop.myshopify.com"
TOKEN = "shpat_bulk"
CATALOGUE = {"products": 40, "max_variants": 9, "seed": 3}
QUERY = """
{ products { edges { node { id title vendor
    variants { edges { node { id sku inventoryQuantity } } } } } } }
"""
UPDATE = """
mutation Update($product: ProductUpdateInput!) {
  productUpdate(product: $product) { product { id title } userErrors { field message } }
}
"""


@pytest.fixture
def shopify(emulator):
    return emulator(shops={SHOP: TOKEN}, bulk_run_seconds=0.3, **CATALOGUE)


def make_client(settings: Settings, database: Database, redis: ArqRedis, url: str, **update: Any):
    return AdminClient(
        settings.model_copy(update={"shopify_admin_url": url, **update}), database, redis
    )


@pytest.fixture
async def admin(shopify, settings: Settings, database: Database, redis: ArqRedis):
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    client = make_client(settings, database, redis, shopify.url)
    yield client
    await client.aclose()


async def job_admin(admin: AdminClient, database: Database, redis: ArqRedis):
    """A job row (not queued) and the ShopAdmin a run of it gets: (job id, context, admin)."""
    shop = await store.get_shop(database, SHOP)
    assert shop is not None
    job_id = await add_job(database, redis, shop, {}, "inventory_report", enqueue=False)
    ctx = HandlerContext(shop=SHOP, job_type="inventory_report", job_id=str(job_id))
    ctx.admin = admin.admin_for(SHOP, bulk.JobLink(job_id, ctx.report_progress))
    return job_id, ctx, ctx.admin


async def operations(shopify) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{shopify.url}/_emulator/bulk")).json()


async def emulator_post(shopify, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(f"{shopify.url}{path}", json=body or {})


async def test_bulk_query_streams_rows_and_reassembles_children(
    admin: AdminClient, database: Database, redis: ArqRedis
) -> None:
    job_id, ctx, shop_admin = await job_admin(admin, database, redis)
    rows = await shop_admin.bulk_query(QUERY)
    catalogue = list(build(**CATALOGUE).values())
    assert rows.object_count == len(catalogue) + sum(len(p.variants) for p in catalogue)
    seen = []
    async for product, variants in rows.grouped():
        assert all(v["__parentId"] == product["id"] for v in variants)
        seen.append(
            (product["id"], product["title"], [(v["id"], v["inventoryQuantity"]) for v in variants])
        )
    assert seen == [
        (p.gid, p.title, [(v.gid, v.inventory_quantity) for v in p.variants]) for p in catalogue
    ]
    assert rows.rows_read == rows.object_count
    # Progress was reported from the operation and the rows; the operation id kept with the job.
    assert any("bulk operation running" in (m or "") for _, m in ctx.progress)
    assert await store.bulk_operation_of(database, job_id) == rows.operation_id
    # Row by row: the plain iterator gives the same lines, children flagged by __parentId.
    # A later run of the job (a retry) resumes the completed operation, not a new one.
    rerun = admin.admin_for(SHOP, bulk.JobLink(job_id, ctx.report_progress))
    again = await rerun.bulk_query(QUERY)
    assert again.operation_id == rows.operation_id
    first = [row async for row in again][:2]
    assert "__parentId" not in first[0] and first[1]["__parentId"] == first[0]["id"]
    assert len(await operations_of(admin)) == 1


async def operations_of(admin: AdminClient) -> list[dict[str, Any]]:
    url = admin.settings.shopify_admin_url
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{url}/_emulator/bulk")).json()


async def test_inventory_report_totals(
    admin: AdminClient, database: Database, redis: ArqRedis
) -> None:
    _, ctx, _ = await job_admin(admin, database, redis)
    result = await inventory_report.inventory_report(ctx, inventory_report.InventoryReportInput())
    catalogue = list(build(**CATALOGUE).values())
    variants = [v for p in catalogue for v in p.variants]
    assert result["products"] == len(catalogue)
    assert result["variants"] == len(variants)
    assert result["totalInventory"] == sum(v.inventory_quantity for v in variants)
    empty = [v for v in variants if v.inventory_quantity <= 0]
    assert result["outOfStock"]["count"] == len(empty) > 0
    assert [o["variantId"] for o in result["outOfStock"]["first"]] == [v.gid for v in empty][:20]
    vendors = {p.vendor for p in catalogue}
    assert set(result["byVendor"]) == vendors
    assert sum(v["variants"] for v in result["byVendor"].values()) == len(variants)
    assert ctx.progress[-1][0] == 100


@pytest.mark.parametrize(("version", "overlap"), [("2025-10", False), ("2026-01", True)])
async def test_bulk_queries_of_one_shop_take_turns_by_api_version(
    shopify, settings: Settings, database: Database, redis: ArqRedis, version: str, overlap: bool
) -> None:
    """Before 2026-01 one bulk query at a time per shop: the second waits its turn (never an
    OPERATION_IN_PROGRESS failure); from 2026-01 both run at once."""
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    client = make_client(settings, database, redis, shopify.url, shopify_api_version=version)
    try:
        contexts = [await job_admin(client, database, redis) for _ in range(2)]

        async def run(shop_admin) -> int:
            rows = await shop_admin.bulk_query(QUERY)
            return len([row async for row in rows])

        counts = await asyncio.gather(*(run(a) for _, _, a in contexts))
        assert counts[0] == counts[1] > 0
        ops = sorted(await operations(shopify), key=lambda o: o["createdAt"])
        assert [o["status"] for o in ops] == ["COMPLETED", "COMPLETED"]
        assert (ops[1]["createdAt"] < ops[0]["completedAt"]) is overlap
        if not overlap:  # the second job said why it waited
            waited = [
                ctx for _, ctx, _ in contexts if any("slot" in (m or "") for _, m in ctx.progress)
            ]
            assert len(waited) == 1
    finally:
        await client.aclose()


async def test_failed_operation_is_a_clear_error(
    admin: AdminClient, database, redis, shopify
) -> None:
    await emulator_post(shopify, "/_emulator/bulk/faults", {"error_code": "ACCESS_DENIED"})
    _, _, shop_admin = await job_admin(admin, database, redis)
    with pytest.raises(bulk.BulkOperationFailed, match="failed \\(ACCESS_DENIED\\)"):
        await shop_admin.bulk_query(QUERY)
    # The slot was given back: the next bulk query runs.
    rows = await shop_admin.bulk_query(QUERY)
    assert rows.object_count > 0


async def test_partial_data_is_a_clear_error(admin: AdminClient, database, redis, shopify) -> None:
    await emulator_post(
        shopify, "/_emulator/bulk/faults", {"error_code": "TIMEOUT", "partial": True}
    )
    _, _, shop_admin = await job_admin(admin, database, redis)
    with pytest.raises(bulk.BulkPartialData, match=r"TIMEOUT.*partial data is not used"):
        await shop_admin.bulk_query(QUERY)


async def test_expired_url_is_a_clear_error(admin: AdminClient, database, redis, shopify) -> None:
    _, _, shop_admin = await job_admin(admin, database, redis)
    rows = await shop_admin.bulk_query(QUERY)
    number = rows.operation_id.rsplit("/", 1)[1]
    assert (await emulator_post(shopify, f"/_emulator/bulk/{number}/expire")).status_code == 200
    with pytest.raises(bulk.BulkResultExpired, match="expired"):
        async for _ in rows:
            pass


async def test_canceled_operation_is_a_clear_error(
    shopify, settings: Settings, database: Database, redis: ArqRedis
) -> None:
    """Canceled on Shopify's side (not by this job) while the job waits for it."""
    slow = shopify.config
    slow.bulk_run_seconds = 30.0
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    client = make_client(settings, database, redis, shopify.url)
    try:
        job_id, _, shop_admin = await job_admin(client, database, redis)
        waiting = asyncio.create_task(shop_admin.bulk_query(QUERY))
        operation_id = await wait_for_operation(database, job_id)
        other = client.admin_for(SHOP)  # someone else cancels it
        await other.graphql(bulk.CANCEL, {"id": operation_id})
        with pytest.raises(bulk.BulkOperationCanceled, match="was canceled"):
            await waiting
    finally:
        await client.aclose()


async def wait_for_operation(database: Database, job_id: uuid.UUID) -> str:
    for _ in range(400):
        kept = await store.bulk_operation_of(database, job_id)
        if kept:
            return kept
        await asyncio.sleep(0.05)
    raise AssertionError("no bulk operation kept with the job")


async def test_cancelling_the_job_cancels_its_operation(
    shopify, settings: Settings, database: Database, redis: ArqRedis
) -> None:
    shopify.config.bulk_run_seconds = 30.0
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    client = make_client(settings, database, redis, shopify.url)
    try:
        job_id, _, shop_admin = await job_admin(client, database, redis)
        waiting = asyncio.create_task(shop_admin.bulk_query(QUERY))
        await wait_for_operation(database, job_id)
        assert await store.cancel_job(database, job_id) is not None  # the dashboard's cancel
        with pytest.raises(bulk.BulkOperationCanceled, match="job was cancelled"):
            await waiting
        [op] = await operations(shopify)
        assert op["status"] in ("CANCELING", "CANCELED")
    finally:
        await client.aclose()


async def test_bulk_mutation_reports_per_row_errors(
    admin: AdminClient, database: Database, redis: ArqRedis, shopify
) -> None:
    first, second = list(build(**CATALOGUE).values())[:2]
    rows = [
        {"product": {"id": first.gid, "title": "Renamed in bulk"}},
        {"product": {"id": second.gid, "title": "   "}},
        {"product": {"id": "gid://shopify/Product/1", "title": "Ghost"}},
    ]
    _, _, shop_admin = await job_admin(admin, database, redis)
    results = await shop_admin.bulk_mutation(UPDATE, rows)
    outcomes = [r async for r in results]
    assert [(r.line, r.errors) for r in outcomes] == [
        (0, []),
        (1, ["Title can't be blank"]),
        (2, ["Product does not exist"]),
    ]
    assert outcomes[0].data == {
        "productUpdate": {
            "product": {"id": first.gid, "title": "Renamed in bulk"},
            "userErrors": [],
        }
    }
    assert (results.succeeded, results.failed) == (1, 2)
    # The change happened on Shopify's side.
    data = await shop_admin.graphql(
        "query($id: ID!) { product(id: $id) { title } }", {"id": first.gid}
    )
    assert data["product"]["title"] == "Renamed in bulk"


async def test_finish_webhook_wakes_the_waiting_run(
    app_client: httpx.AsyncClient, redis: ArqRedis
) -> None:
    """The web turns `bulk_operations/finish` into a push on the list a waiting run blocks on
    (a malformed payload is acknowledged but wakes nothing)."""
    gid = "gid://shopify/BulkOperation/77"
    body = orjson.dumps({"admin_graphql_api_id": gid, "status": "completed", "type": "query"})
    headers = {
        "X-Shopify-Hmac-Sha256": webhook_hmac(body, TEST_SECRET),
        "X-Shopify-Topic": "bulk_operations/finish",
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Event-Id": "bulk-finish-1",
    }
    answer = await app_client.post("/webhooks", content=body, headers=headers)
    assert answer.json() == {"status": "bulk operation finished"}
    assert await redis.blpop([bulk.finished_key(gid)], timeout=1) == (
        bulk.finished_key(gid).encode(),
        b"completed",
    )
    bad = orjson.dumps({"status": "completed"})
    headers.update(
        {
            "X-Shopify-Event-Id": "bulk-finish-2",
            "X-Shopify-Hmac-Sha256": webhook_hmac(bad, TEST_SECRET),
        }
    )
    answer = await app_client.post("/webhooks", content=bad, headers=headers)
    assert answer.json() == {"status": "invalid payload"}


async def test_bulk_mutation_run_twice_in_one_job_applies_both_batches(
    admin: AdminClient, database: Database, redis: ArqRedis
) -> None:
    """A job writing in batches with one mutation: the second call runs its own rows, not the
    first call's completed operation read again."""
    first, second = list(build(**CATALOGUE).values())[:2]
    _, _, shop_admin = await job_admin(admin, database, redis)
    one = await shop_admin.bulk_mutation(UPDATE, [{"product": {"id": first.gid, "title": "B1"}}])
    [done] = [r async for r in one]
    assert done.data is not None
    assert done.data["productUpdate"]["product"]["title"] == "B1"
    two = await shop_admin.bulk_mutation(UPDATE, [{"product": {"id": second.gid, "title": "B2"}}])
    [result] = [r async for r in two]
    assert result.data is not None
    assert result.data["productUpdate"]["product"] == {"id": second.gid, "title": "B2"}
    assert two.operation_id != one.operation_id
    data = await shop_admin.graphql(
        "query($id: ID!) { product(id: $id) { title } }", {"id": second.gid}
    )
    assert data["product"]["title"] == "B2"


async def test_bulk_mutation_waiting_for_a_foreign_operation_keeps_its_rows(
    shopify, settings: Settings, database: Database, redis: ArqRedis
) -> None:
    """Rows given as a generator (as the docs show): when Shopify answers that another bulk
    mutation is in progress and the run tries again, the rows are still all uploaded."""
    shopify.config.bulk_run_seconds = 30.0
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    client = make_client(settings, database, redis, shopify.url)
    try:
        products = list(build(**CATALOGUE).values())[:3]
        # A bulk mutation started outside this app's slots (another process, by hand).
        other = client.admin_for(SHOP)
        path = await bulk._upload(other, [{"product": {"id": products[0].gid}}])
        started = await other.graphql(bulk.RUN_MUTATION, {"mutation": UPDATE, "path": path})
        foreign = started["bulkOperationRunMutation"]["bulkOperation"]["id"]
        shopify.config.bulk_run_seconds = 0.2

        _, ctx, shop_admin = await job_admin(client, database, redis)
        rows = ({"product": {"id": p.gid, "title": f"Gen {p.id}"}} for p in products)
        waiting = asyncio.create_task(shop_admin.bulk_mutation(UPDATE, rows))
        for _ in range(400):
            if any("running bulk operation" in (m or "") for _, m in ctx.progress):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the run never waited for the foreign operation")
        await other.graphql(bulk.CANCEL, {"id": foreign})
        results = await waiting
        outcomes = [r async for r in results]
        assert [(r.line, r.errors) for r in outcomes] == [(0, []), (1, []), (2, [])]
    finally:
        await client.aclose()


async def test_from_2026_01_bulk_queries_are_grouped_only_when_asked(
    shopify, settings: Settings, database: Database, redis: ArqRedis
) -> None:
    """Shopify's groupObjects defaults to false from API 2026-01 (children no longer directly
    under their parent); the app asks for grouping, so grouped() and inventory_report hold."""
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    client = make_client(settings, database, redis, shopify.url, shopify_api_version="2026-01")
    try:
        # Shopify's default, as the emulator plays it: every product first, then the variants.
        raw = client.admin_for(SHOP)
        started = await raw.graphql(
            "mutation($q: String!) { bulkOperationRunQuery(query: $q) "
            "{ bulkOperation { id } userErrors { message } } }",
            {"q": QUERY},
        )
        number = started["bulkOperationRunQuery"]["bulkOperation"]["id"].rsplit("/", 1)[1]
        for _ in range(400):
            [op] = [o for o in await operations(shopify) if o["id"].endswith(f"/{number}")]
            if op["status"] == "COMPLETED":
                break
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient() as http:
            lines = [orjson.loads(x) for x in (await http.get(op["url"])).text.splitlines()]
        parents = [("__parentId" in line) for line in lines]
        products = len(build(**CATALOGUE))
        assert parents == [False] * products + [True] * (len(lines) - products)

        _, ctx, _ = await job_admin(client, database, redis)
        report = await inventory_report.inventory_report(
            ctx, inventory_report.InventoryReportInput()
        )
        catalogue = list(build(**CATALOGUE).values())
        assert report["products"] == len(catalogue)
        assert report["variants"] == sum(len(p.variants) for p in catalogue)
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        (
            "{ products { edges { node { id variants { edges { node { id "
            "product { variants { edges { node { id } } } } } } } } } } }",
            "nesting depth greater than 2",
        ),
        (
            "{ " + " ".join(f"p{n}: products {{ nodes {{ id }} }}" for n in range(6)) + " }",
            "more than 5 connections",
        ),
        ("{ shop { name } }", "at least one connection"),
        ("{ products { edges { node { id ", "Syntax Error"),
    ],
)
async def test_queries_shopify_refuses_fail_the_job_clearly(
    admin: AdminClient, database: Database, redis: ArqRedis, query: str, problem: str
) -> None:
    """Shopify refuses a bulk query nesting connections more than two deep or holding more
    than five (userErrors, no operation): the job fails at once, naming why."""
    _, _, shop_admin = await job_admin(admin, database, redis)
    with pytest.raises(bulk.BulkOperationFailed, match=f"refused the bulk operation: .*{problem}"):
        await shop_admin.bulk_query(query)
    assert await operations_of(admin) == []
