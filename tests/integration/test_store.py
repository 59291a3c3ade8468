"""Job rows in Postgres: creation, idempotency under concurrency, shop scoping, deletion."""

from __future__ import annotations

import asyncio
from uuid import uuid4

from databases import Database

from service import store


async def _shop(database: Database, name: str = "store-test") -> store.Shop:
    return await store.upsert_shop(database, f"{name}.myshopify.com", "shpat_test", "")


async def test_create_job_writes_a_pending_row(database: Database) -> None:
    shop = await _shop(database)
    job, created = await store.create_job(
        database, shop_id=shop.id, job_type="echo", job_input={"message": "hi"}, customer_id="7"
    )
    assert created
    again = await store.get_job(database, job.id)
    assert again == job
    assert (job.status, job.progress, job.input, job.customer_id) == (
        "pending",
        0,
        {"message": "hi"},
        "7",
    )
    assert (job.source, job.idempotency_key, job.attempts, job.result) == ("proxy", None, 0, None)


async def test_jobs_without_a_key_are_always_new(database: Database) -> None:
    shop = await _shop(database)
    first, _ = await store.create_job(database, shop_id=shop.id, job_type="echo", job_input={})
    second, created = await store.create_job(
        database, shop_id=shop.id, job_type="echo", job_input={}
    )
    assert created and first.id != second.id


async def test_a_key_returns_the_existing_job(database: Database) -> None:
    shop = await _shop(database)
    first, created = await store.create_job(
        database, shop_id=shop.id, job_type="echo", job_input={"a": 1}, idempotency_key="k"
    )
    second, created_again = await store.create_job(
        database, shop_id=shop.id, job_type="echo", job_input={"a": 2}, idempotency_key="k"
    )
    assert created and not created_again
    assert second == first


async def test_the_same_key_in_two_shops_makes_two_jobs(database: Database) -> None:
    one, two = await _shop(database, "one"), await _shop(database, "two")
    a, _ = await store.create_job(
        database, shop_id=one.id, job_type="echo", job_input={}, idempotency_key="k"
    )
    b, created = await store.create_job(
        database, shop_id=two.id, job_type="echo", job_input={}, idempotency_key="k"
    )
    assert created and a.id != b.id


async def test_concurrent_duplicates_make_one_row(database: Database) -> None:
    shop = await _shop(database)
    results = await asyncio.gather(
        *[
            store.create_job(
                database, shop_id=shop.id, job_type="echo", job_input={}, idempotency_key="same"
            )
            for _ in range(20)
        ]
    )
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    assert await database.fetch_val("SELECT count(*) FROM jobs") == 1


async def test_a_deleted_job_frees_its_key(database: Database) -> None:
    shop = await _shop(database)
    job, _ = await store.create_job(
        database, shop_id=shop.id, job_type="echo", job_input={}, idempotency_key="k"
    )
    await store.delete_job(database, job.id)
    assert await store.get_job(database, job.id) is None
    again, created = await store.create_job(
        database, shop_id=shop.id, job_type="echo", job_input={}, idempotency_key="k"
    )
    assert created and again.id != job.id


async def test_get_job_for_shop_hides_other_shops_jobs(database: Database) -> None:
    mine, theirs = await _shop(database, "mine"), await _shop(database, "theirs")
    job, _ = await store.create_job(database, shop_id=mine.id, job_type="echo", job_input={})
    assert await store.get_job_for_shop(database, mine.id, job.id) == job
    assert await store.get_job_for_shop(database, theirs.id, job.id) is None
    assert await store.get_job_for_shop(database, mine.id, uuid4()) is None


def test_jsonb_safe_finds_nul_anywhere() -> None:
    assert store.jsonb_safe({"a": ["b", {"c": 1.5, "d": None}], "e": True})
    assert not store.jsonb_safe({"a": "x\x00"})
    assert not store.jsonb_safe({"a\x00": 1})
    assert not store.jsonb_safe({"a": [[["\x00"]]]})
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert store.jsonb_safe(deep)
