"""The example batch job `catalogue_audit` against the emulator, in a real worker: one child
per page of products, the parent final with the last page."""

from __future__ import annotations

from collections import Counter

from arq.connections import ArqRedis
from databases import Database

from jobs.registry import job_types
from service import store
from service.core.settings import Settings
from service.jobs_client import JobsClient
from shopify_emulator.catalogue import build
from tests.support.jobs import wait_for_status
from tests.support.processes import Spawn, start_worker

SHOP = "audit-shop.myshopify.com"
TOKEN = "shpat_audit"
CATALOGUE = {"products": 23, "max_variants": 3, "seed": 11}


async def test_the_audit_splits_the_catalogue_into_one_child_per_page(
    emulator,  # type: ignore[no-untyped-def]
    settings: Settings,
    database: Database,
    redis: ArqRedis,
    spawn: Spawn,
    env: dict[str, str],
) -> None:
    shopify = emulator(shops={SHOP: TOKEN}, **CATALOGUE)
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    client = JobsClient(database, redis, job_types(settings))
    parent = await client.enqueue("catalogue_audit", shop=SHOP, input={"page_size": 5})
    start_worker(spawn, {**env, "SHOPIFY_ADMIN_URL": shopify.url}, worker_concurrency=4)

    job = await wait_for_status(database, parent.id, {"completed", "failed"}, timeout=60)
    assert (job.status, job.result) == (
        "completed",
        {"completed": 5, "failed": 0, "result": {"pages": 5}},
    )
    pages = await database.fetch_all(
        "SELECT input, result FROM jobs WHERE parent_id = :p ORDER BY idempotency_key",
        {"p": parent.id},
    )
    assert len(pages) == 5
    results = [store.sql.from_json(r._mapping["result"]) for r in pages]
    products = build(**CATALOGUE).values()
    assert sum(r["products"] for r in results) == 23
    by_status: Counter[str] = Counter()
    for r in results:
        by_status.update(r["byStatus"])
    assert by_status == Counter(p.status for p in products)
    out_of_stock = {gid for r in results for gid in r["outOfStock"]}
    assert out_of_stock == {p.gid for p in products if p.total_inventory <= 0}
