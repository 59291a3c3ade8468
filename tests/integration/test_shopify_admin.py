"""The Admin GraphQL client against the emulator, with real Redis and Postgres."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from arq.connections import ArqRedis
from databases import Database

from service import store
from service.core.settings import Settings
from service.shopify.admin import (
    AdminAuthError,
    AdminClient,
    AdminQueryError,
    AdminUnavailable,
    backoff_seconds,
)
from service.shopify.throttle import CostBuckets, ThrottleStatus
from service.shopify.tokens import ShopTokenMissing

SHOP = "admin-shop.myshopify.com"
SLACK = 0.01  # seconds: Redis keeps a level's time to 0.1 ms (Lua's tostring, 14 digits)
TOKEN = "shpat_admin_test"
QUERY = """
query Variants($id: ID!, $first: Int!, $after: String) {
  product(id: $id) {
    title
    variants(first: $first, after: $after) {
      nodes { id }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""


async def call(method: str, url: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.request(method, url, **kwargs)  # type: ignore[arg-type]


async def stats(shopify) -> dict:
    return (await call("GET", f"{shopify.url}/_emulator/stats")).json()["shops"][SHOP]


async def fault(shopify, **body: object) -> None:
    (await call("POST", f"{shopify.url}/_emulator/faults", json=body)).raise_for_status()


@pytest.fixture
def shopify(emulator):
    return emulator(shops={SHOP: TOKEN}, bucket_size=60, restore_rate=150, max_variants=30)


@pytest.fixture
async def admin(shopify, settings: Settings, database: Database, redis: ArqRedis) -> AdminClient:
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    configured = settings.model_copy(
        update={"shopify_admin_url": shopify.url, "shopify_admin_max_retries": 3}
    )
    client = AdminClient(configured, database, redis, backoff_base_seconds=0.01)
    yield client
    await client.aclose()


async def product_gid(shopify) -> str:
    return (await call("GET", f"{shopify.url}/_emulator/products")).json()[0]["id"]


def test_backoff_grows_and_is_capped() -> None:
    assert all(0 <= backoff_seconds(1, 0.5, 10) <= 0.5 for _ in range(50))
    assert max(backoff_seconds(10, 0.5, 10) for _ in range(200)) <= 10


def test_throttle_status_parsing() -> None:
    status = ThrottleStatus.from_extensions(
        {
            "cost": {
                "throttleStatus": {
                    "maximumAvailable": 1000,
                    "currentlyAvailable": 990.5,
                    "restoreRate": 50,
                }
            }
        }
    )
    assert status == ThrottleStatus(1000, 990.5, 50)
    assert ThrottleStatus.from_extensions({"cost": {}}) is None


async def test_query_and_bucket_state_shared_in_redis(admin: AdminClient, shopify) -> None:
    data = await admin.admin_for(SHOP).graphql(
        QUERY, {"id": await product_gid(shopify), "first": 5}
    )
    assert len(data["product"]["variants"]["nodes"]) == 5
    level = await admin.buckets.level(SHOP)
    assert level is not None and level["maximum"] == 60 and level["rate"] == 150
    assert 0 < level["available"] <= 60


async def test_concurrent_callers_wait_instead_of_being_throttled(
    admin: AdminClient, shopify, settings: Settings, database: Database, redis: ArqRedis
) -> None:
    """Two clients (as two workers would) share one shop's bucket through Redis."""
    other = AdminClient(admin.settings, database, redis)
    gid = await product_gid(shopify)
    try:
        calls = [
            client.admin_for(SHOP).graphql(QUERY, {"id": gid, "first": 20}, cost=23)
            for _ in range(8)
            for client in (admin, other)
        ]
        results = await asyncio.gather(*calls)
    finally:
        await other.aclose()
    assert all(len(r["product"]["variants"]["nodes"]) == 20 for r in results)
    counters = await stats(shopify)
    assert counters["requests"] - counters["throttled"] == 16
    assert counters["throttled"] <= 2


async def test_throttled_answer_makes_the_client_wait_and_retry(
    emulator, settings: Settings, database: Database, redis: ArqRedis
) -> None:
    """With a far too low cost estimate the third query is THROTTLED; the client then waits
    for the deficit at the restore rate (about 1.2 s here) and its retry succeeds."""
    slow = emulator(shops={SHOP: TOKEN}, bucket_size=60, restore_rate=20, max_variants=30)
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    configured = settings.model_copy(update={"shopify_admin_url": slow.url})
    client = AdminClient(configured, database, redis)
    gid = await product_gid(slow)
    try:
        shop = client.admin_for(SHOP)
        for _ in range(3):  # 28 points each: 60 -> 32 -> 4 -> refused, then waits and retries
            await shop.graphql(QUERY, {"id": gid, "first": 25}, cost=1)
    finally:
        await client.aclose()
    counters = (await call("GET", f"{slow.url}/_emulator/stats")).json()["shops"][SHOP]
    assert counters["throttled"] == 1 and counters["requests"] == 4


async def test_recovers_from_429_and_503(admin: AdminClient, shopify) -> None:
    gid = await product_gid(shopify)
    await fault(shopify, kind="429", count=1, retry_after=0.2)
    await fault(shopify, kind="503", count=2)
    data = await admin.admin_for(SHOP).graphql(QUERY, {"id": gid, "first": 1})
    assert data["product"]["title"]
    assert (await stats(shopify))["faults"] == 3


async def test_gives_up_after_max_retries_as_a_retryable_error(admin: AdminClient, shopify) -> None:
    await fault(shopify, kind="500", count=10)
    with pytest.raises(AdminUnavailable):
        await admin.admin_for(SHOP).graphql(QUERY, {"id": await product_gid(shopify), "first": 1})
    assert (await stats(shopify))["faults"] == 4  # the first try and three retries


async def test_bad_token_uninstalled_shop_and_bad_query_are_not_retryable(
    admin: AdminClient, shopify, database: Database
) -> None:
    from jobs.types import NonRetryableError

    gid = await product_gid(shopify)
    with pytest.raises(AdminQueryError) as bad_query:
        await admin.admin_for(SHOP).graphql(QUERY, {"id": "nope", "first": 1})
    assert "Invalid global id" in str(bad_query.value)
    await store.upsert_shop(database, SHOP, "shpat_revoked", "")
    with pytest.raises(AdminAuthError) as refused:
        await admin.admin_for(SHOP).graphql(QUERY, {"id": gid, "first": 1})
    assert "shpat_revoked" not in str(refused.value)
    await store.mark_shop_uninstalled(database, SHOP)
    with pytest.raises(ShopTokenMissing):
        await admin.admin_for(SHOP).graphql(QUERY, {"id": gid, "first": 1})
    for error in (AdminQueryError, AdminAuthError, ShopTokenMissing):
        assert issubclass(error, NonRetryableError)


async def test_expiring_token_is_refreshed_before_use(
    admin: AdminClient, shopify, database: Database
) -> None:
    body = {"client_id": admin.settings.shopify_api_key}
    secret = admin.settings.shopify_api_secret.get_secret_value()
    answer = await call(
        "GET",
        f"{shopify.url}/admin/oauth/authorize",
        params={
            **body,
            "scope": "read_products",
            "redirect_uri": "http://127.0.0.1:9/auth/callback",
            "state": "s",
            "shop": SHOP,
        },
    )
    code = dict(httpx.URL(answer.headers["location"]).params)["code"]
    exchanged = await call(
        "POST",
        f"{shopify.url}/admin/oauth/access_token",
        json={**body, "client_secret": secret, "code": code, "expiring": "1"},
    )
    grant = exchanged.json()
    # Stored as if it were about to run out: the client must refresh before using it.
    await store.upsert_shop(
        database,
        SHOP,
        grant["access_token"],
        "read_products",
        token_expires_at=datetime.now(UTC) + timedelta(seconds=30),
        refresh_token=grant["refresh_token"],
        refresh_token_expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    gid = await product_gid(shopify)
    shops = [admin.admin_for(SHOP) for _ in range(3)]
    await asyncio.gather(*(s.graphql(QUERY, {"id": gid, "first": 1}) for s in shops))
    shop = await store.get_shop(database, SHOP)
    assert shop is not None and shop.access_token != grant["access_token"]
    assert shop.refresh_token != grant["refresh_token"]
    assert shop.token_expires_at is not None
    assert shop.token_expires_at > datetime.now(UTC) + timedelta(minutes=50)


async def test_cost_buckets_probe_then_queue_reservations(redis: ArqRedis) -> None:
    """The bucket restores 1 point/s, so every wait below is its deficit in seconds, less the
    time since the level was last set (the test's own pace, measured here). Each bound holds
    however slow the machine is, and a model a point off breaks it."""
    rate = 1.0
    buckets = CostBuckets(redis, prefix="test:bucket:")
    assert await buckets.reserve("s", 10) == 0  # nothing known: this caller probes
    assert await buckets.reserve("s", 10) == -1  # the others wait for what it learns
    since_known = time.monotonic()
    await buckets.settle("s", 0, ThrottleStatus(maximum=100, available=30, restore_rate=rate))
    assert await buckets.reserve("s", 20) == 0  # 30 available
    first = await buckets.reserve("s", 20)  # 10 left: 10 s to restore the deficit
    second = await buckets.reserve("s", 20)  # queued behind the first: 30 s
    elapsed = time.monotonic() - since_known
    assert 10 - elapsed - SLACK <= first <= 10 + SLACK
    assert 30 - elapsed - SLACK <= second <= 30 + SLACK
    assert second - first == pytest.approx(20, abs=elapsed + SLACK)
    await buckets.settle("s", 40, None)  # both reservations given back unused: 10, restoring
    level = await buckets.level("s")
    elapsed = time.monotonic() - since_known
    assert level is not None and 10 - SLACK <= level["available"] <= 10 + elapsed * rate + SLACK
    # Shopify's word caps the model: it never believes in more points than were reported (2,
    # not the model's 10 or more): 8 s to wait for 10.
    since_known = time.monotonic()
    await buckets.settle("s", 0, ThrottleStatus(maximum=100, available=2, restore_rate=rate))
    wait = await buckets.reserve("s", 10)
    elapsed = time.monotonic() - since_known
    assert 8 - elapsed - SLACK <= wait <= 8 + SLACK
    # Five seconds pass, as Redis' clock would show them (the level's time set back): five
    # points restored, 3 s left to wait.
    level = await buckets.level("s")
    assert level is not None
    await redis.hset("test:bucket:s", "at", str(level["at"] - 5))
    wait = await buckets.reserve("s", 0)
    elapsed = time.monotonic() - since_known
    assert 3 - elapsed - SLACK <= wait <= 3 + SLACK
