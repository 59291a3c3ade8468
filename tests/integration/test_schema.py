import uuid

import asyncpg
import pytest
from databases import Database

from service import store
from service.core.db import apply_schema


async def test_schema_applies_twice(database: Database) -> None:
    await apply_schema(database)
    await apply_schema(database)
    tables = {
        r._mapping["tablename"]
        for r in await database.fetch_all(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
    }
    assert {"shops", "jobs"} <= tables


async def test_status_is_constrained(database: Database) -> None:
    shop = await store.upsert_shop(database, "a-shop.myshopify.com", "tok", "")
    with pytest.raises(asyncpg.CheckViolationError):
        await database.execute(
            "INSERT INTO jobs (id, shop_id, type, status) VALUES (:id, :shop, 'echo', 'lost')",
            {"id": uuid.uuid4(), "shop": shop.id},
        )


async def test_shop_domain_is_constrained(database: Database) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await store.upsert_shop(database, "evil.example.com", "tok", "")


async def test_indexes_exist(database: Database) -> None:
    names = {
        r._mapping["indexname"]
        for r in await database.fetch_all(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'"
        )
    }
    assert {"jobs_shop_created_idx", "jobs_status_updated_idx", "jobs_idempotency"} <= names
