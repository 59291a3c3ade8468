"""Storefront quotas on POST /proxy/process, shared by two real `uvicorn service.app:app`
processes through Redis; and client idempotency keys kept apart from the app's own."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
from databases import Database

from service import store
from service.shopify.proxy_url import signed_proxy_url
from service.shopify.signatures import webhook_hmac
from service.web.proxy_quota import WINDOW_SECONDS
from tests.support.config import TEST_SECRET
from tests.support.net import free_port, wait_for_http
from tests.support.processes import web_command

BUSY = "busy-shop.myshopify.com"
QUIET = "quiet-shop.myshopify.com"
PER_SHOP = 30
PER_CUSTOMER = 5
ECHO = {"type": "echo", "input": {"message": "hi"}}


def start_webs(spawn, env: dict[str, str], count: int, **settings: object) -> list[str]:  # type: ignore[no-untyped-def]
    extra = {k.upper(): str(v) for k, v in settings.items()}
    bases = []
    for n in range(count):
        port = free_port()
        spawn(web_command(port), {**env, **extra}, f"web{n}")
        bases.append(f"http://127.0.0.1:{port}")
    for base in bases:
        wait_for_http(f"{base}/healthz")
    return bases


def url(base: str, shop: str, customer: str = "") -> str:
    return signed_proxy_url(
        base,
        "/proxy/process",
        shop=shop,
        secret=TEST_SECRET,
        customer_id=customer,
        timestamp=int(time.time()),
    )


def window() -> int:
    return int(time.time() // WINDOW_SECONDS)


async def test_a_burst_from_one_shop_gets_429_while_other_shops_are_served(
    env: dict[str, str], spawn, database: Database, redis
) -> None:
    for shop in (BUSY, QUIET):
        await store.upsert_shop(database, shop, f"shpat_{shop[:4]}", "read_products")
    webs = start_webs(
        spawn,
        env,
        2,
        proxy_limit_shop_per_minute=PER_SHOP,
        proxy_limit_customer_per_minute=PER_CUSTOMER,
    )
    burst = 3 * PER_SHOP  # anonymous visitors of one shop, spread over both processes
    async with httpx.AsyncClient(timeout=30) as client:
        first_window = window()
        answers = await asyncio.gather(
            *(client.post(url(webs[n % 2], BUSY), json=ECHO) for n in range(burst))
        )
        windows = window() - first_window + 1  # a minute's boundary may fall inside the burst
        accepted = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code == 429]
        assert len(accepted) + len(refused) == burst, [a.status_code for a in answers]
        assert len(accepted) <= PER_SHOP * windows and refused
        for answer in refused:
            assert answer.json()["error"] == "Too many requests: try again later"
            assert 1 <= int(answer.headers["Retry-After"]) <= WINDOW_SECONDS
        # Another shop's visitors are served meanwhile, by either process.
        for base in webs:
            assert (await client.post(url(base, QUIET), json=ECHO)).status_code == 200

        # One logged-in customer is held to their own limit; others of the shop are not.
        first_window = window()
        mine = [
            (await client.post(url(webs[n % 2], QUIET, "42"), json=ECHO)).status_code
            for n in range(2 * PER_CUSTOMER + 1)
        ]
        windows = window() - first_window + 1
        assert mine.count(200) <= PER_CUSTOMER * windows and 429 in mine, mine
        assert (await client.post(url(webs[0], QUIET, "7"), json=ECHO)).status_code == 200
        assert (await client.post(url(webs[1], QUIET), json=ECHO)).status_code == 200

        # Jobs the app starts itself are not counted: the busy shop's webhook still queues.
        body = json.dumps({"admin_graphql_api_id": "gid://shopify/Product/1"}).encode()
        hook = await client.post(
            f"{webs[0]}/webhooks",
            content=body,
            headers={
                "X-Shopify-Topic": "products/update",
                "X-Shopify-Shop-Domain": BUSY,
                "X-Shopify-Event-Id": str(uuid.uuid4()),
                "X-Shopify-Hmac-Sha256": webhook_hmac(body, TEST_SECRET),
            },
        )
        assert hook.status_code == 200 and hook.json() == {"status": "queued"}
    busy_jobs = await database.fetch_val(
        "SELECT count(*) FROM jobs JOIN shops ON shops.id = shop_id "
        "WHERE domain = :d AND source = 'proxy'",
        {"d": BUSY},
    )
    assert busy_jobs == len(accepted)


async def test_zero_turns_the_quotas_off(env: dict[str, str], spawn, database: Database) -> None:
    await store.upsert_shop(database, BUSY, "shpat_busy", "read_products")
    [web] = start_webs(spawn, env, 1, proxy_limit_shop_per_minute=0)
    async with httpx.AsyncClient(timeout=30) as client:
        answers = await asyncio.gather(
            *(client.post(url(web, BUSY), json=ECHO) for _ in range(150))
        )
    assert [a.status_code for a in answers] == [200] * 150


async def test_client_idempotency_keys_never_match_the_apps_own(
    env: dict[str, str], spawn, database: Database, redis
) -> None:
    """A visitor who sends a webhook's key gets a job of their own, not the webhook's."""
    await store.upsert_shop(database, BUSY, "shpat_busy", "read_products")
    [web] = start_webs(spawn, env, 1)
    event = str(uuid.uuid4())
    body = json.dumps({"admin_graphql_api_id": "gid://shopify/Product/1"}).encode()
    job_input = {"type": "product_summary", "input": {"product_id": "gid://shopify/Product/1"}}
    async with httpx.AsyncClient(timeout=30) as client:
        hook = await client.post(
            f"{web}/webhooks",
            content=body,
            headers={
                "X-Shopify-Topic": "products/update",
                "X-Shopify-Shop-Domain": BUSY,
                "X-Shopify-Event-Id": event,
                "X-Shopify-Hmac-Sha256": webhook_hmac(body, TEST_SECRET),
            },
        )
        assert hook.json() == {"status": "queued"}
        theirs = await client.post(
            url(web, BUSY), json=job_input, headers={"Idempotency-Key": f"webhook:{event}"}
        )
        again = await client.post(
            url(web, BUSY), json=job_input, headers={"Idempotency-Key": f"webhook:{event}"}
        )
    assert theirs.status_code == 200 and again.json()["jobId"] == theirs.json()["jobId"]
    rows = await database.fetch_all("SELECT id, source, idempotency_key FROM jobs ORDER BY source")
    keys = {(r._mapping["source"], r._mapping["idempotency_key"]) for r in rows}
    assert keys == {("proxy", f"proxy:webhook:{event}"), ("webhook", f"webhook:{event}")}
    proxy_job = next(r for r in rows if r._mapping["source"] == "proxy")
    assert str(proxy_job._mapping["id"]) == theirs.json()["jobId"]


async def test_concurrent_requests_share_a_round_trip_and_are_counted_one_by_one(redis) -> None:
    """Requests in flight together are counted in one pipeline (one INCRBY per key), yet each
    gets the count its own INCR would have: a limit lets exactly that many through, in order."""
    from service.web.proxy_quota import ProxyQuota

    left = WINDOW_SECONDS - time.time() % WINDOW_SECONDS
    if left < 5:  # all in one window
        await asyncio.sleep(left + 0.1)
    quota = ProxyQuota(redis, per_shop=5, per_customer=3)
    await redis.config_resetstat()
    anonymous = await asyncio.gather(*(quota.refusal(BUSY, None) for _ in range(12)))
    stats = await redis.info("commandstats")
    increments = sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("incr", "incrby"))
    assert increments < 12  # the first alone, then the eleven that came meanwhile together
    assert anonymous[:5] == [None] * 5
    assert all(r is not None and 1 <= r <= WINDOW_SECONDS for r in anonymous[5:])
    assert await redis.get(f"shopjobs:proxy-quota:{window()}:shop:{BUSY}") == b"12"

    # Customer 42 asks 4 times among other visitors of the shop: the customer's limit of 3
    # refuses the 4th; the shop's own limit refuses everyone after its 5th request.
    mixed = await asyncio.gather(*(quota.refusal(QUIET, "42" if n < 4 else None) for n in range(7)))
    assert [r is None for r in mixed] == [True, True, True, False, True, False, False]
