"""The example `product_summary` job against the emulator, through the real Admin client."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import pytest
from arq.connections import ArqRedis
from databases import Database

from jobs.builtin import product_summary
from jobs.types import NonRetryableError
from service import store
from service.core.settings import Settings
from service.shopify.admin import AdminClient
from shopify_emulator.catalogue import build
from tests.support.jobs import HandlerContext

SHOP = "summary-shop.myshopify.com"
TOKEN = "shpat_summary"
CATALOGUE = {"products": 6, "max_variants": 23, "seed": 5}
# The same seed with a draft (product 7) and an unpublished product (9): the first six match.
WIDE_CATALOGUE = {**CATALOGUE, "products": 10}


@pytest.fixture
def shopify(emulator):
    # A small bucket, quickly refilled: demand far above its size, tests still fast.
    return emulator(shops={SHOP: TOKEN}, bucket_size=100, restore_rate=250, **WIDE_CATALOGUE)


@pytest.fixture
async def admin(shopify, settings: Settings, database: Database, redis: ArqRedis):
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    client = AdminClient(
        settings.model_copy(update={"shopify_admin_url": shopify.url}), database, redis
    )
    yield client
    await client.aclose()


def run(
    admin: AdminClient, product_id: str, page_size: int = 10, *, show_inventory: bool = True
) -> tuple[HandlerContext, object]:
    ctx = HandlerContext(shop=SHOP, job_type="product_summary", admin=admin.admin_for(SHOP))
    data = product_summary.ProductSummaryInput(product_id=product_id, page_size=page_size)
    handler = product_summary.job_type(show_inventory=show_inventory).handler
    return ctx, handler(ctx, data)


async def emulator_stats(shopify) -> dict:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{shopify.url}/_emulator/stats")).json()["shops"][SHOP]


async def test_summary_of_every_variant_with_progress_per_page(admin: AdminClient) -> None:
    product = next(iter(build(**CATALOGUE).values()))  # the first product has 23 variants
    ctx, job = run(admin, product.gid, page_size=10)
    summary = await job
    prices = [v.price for v in product.variants]
    assert summary == {
        "productId": product.gid,
        "title": product.title,
        "handle": product.handle,
        "status": product.status,
        "vendor": product.vendor,
        "variantCount": 23,
        "totalInventory": product.total_inventory,
        "outOfStockVariants": sum(1 for v in product.variants if v.inventory_quantity <= 0),
        "minPrice": str(min(prices)),
        "maxPrice": str(max(prices)),
        "pagesRead": 3,
    }
    assert Decimal(summary["minPrice"]) <= Decimal(summary["maxPrice"])
    assert [p for p, _ in ctx.progress] == [43, 86, 100]
    assert ctx.progress[-1][1] == "23 of 23 variants read"


async def test_missing_product_is_not_retryable(admin: AdminClient) -> None:
    _, job = run(admin, "gid://shopify/Product/123")
    with pytest.raises(product_summary.ProductNotFound) as missing:
        await job
    assert isinstance(missing.value, NonRetryableError)
    assert (
        product_summary.ProductNotFound
        in product_summary.job_type(show_inventory=False).non_retryable
    )


def test_input_must_be_a_product_gid() -> None:
    model = product_summary.ProductSummaryInput
    for bad in ({"product_id": "123"}, {"product_id": "gid://shopify/Order/1"}, {}):
        with pytest.raises(ValueError):
            model.model_validate(bad)
    with pytest.raises(ValueError):
        model.model_validate({"product_id": "gid://shopify/Product/1", "page_size": 251})


async def test_fifty_jobs_share_a_small_bucket_without_hammering_it(
    admin: AdminClient, shopify, settings: Settings, database: Database, redis: ArqRedis
) -> None:
    """50 jobs, 8 at a time, split over two clients as two worker processes would be."""
    second = AdminClient(admin.settings, database, redis)
    products = [p.gid for p in build(**CATALOGUE).values()]
    running = asyncio.Semaphore(8)

    async def one(n: int) -> dict:
        async with running:
            _, job = run((admin, second)[n % 2], products[n % len(products)], page_size=5)
            return await job

    try:
        summaries = await asyncio.gather(*(one(n) for n in range(50)))
    finally:
        await second.aclose()
    assert len(summaries) == 50 and all(s["variantCount"] >= 1 for s in summaries)
    counters = await emulator_stats(shopify)
    assert counters["throttled"] <= 3, counters
    assert counters["requests"] - counters["throttled"] == sum(s["pagesRead"] for s in summaries)


async def test_only_products_on_the_storefront_are_summarised(shopify, admin: AdminClient) -> None:
    """A visitor must not read a draft's or an unpublished product's details with the
    merchant's token: both look exactly like a product that does not exist."""
    catalogue = list(build(**WIDE_CATALOGUE).values())
    draft, unpublished = catalogue[6], catalogue[8]  # products 7 and 9
    assert draft.status == "DRAFT" and unpublished.status == "ACTIVE" and not unpublished.published
    for hidden in (draft, unpublished):
        _, job = run(admin, hidden.gid)
        with pytest.raises(product_summary.ProductNotFound) as refused:
            await job
        assert str(refused.value) == f"Product not found: {hidden.gid}"
    _, shown = run(admin, catalogue[0].gid)
    assert (await shown)["productId"] == catalogue[0].gid


async def test_stock_counts_only_when_the_type_allows_them(admin: AdminClient) -> None:
    product = next(iter(build(**CATALOGUE).values()))
    _, default = run(admin, product.gid, show_inventory=False)
    summary = await default
    assert summary["variantCount"] == len(product.variants)
    assert "totalInventory" not in summary and "outOfStockVariants" not in summary
    _, allowed = run(admin, product.gid, show_inventory=True)
    assert (await allowed)["totalInventory"] == product.total_inventory
