"""The web's shop cache: trusted for SHOP_CACHE_SECONDS, forgotten at once on uninstall."""

import asyncio
from datetime import UTC, datetime

from databases import Database

from service import store
from service.web.shop_cache import ShopCache


async def test_cache_serves_within_its_ttl_then_rereads(database: Database) -> None:
    await store.upsert_shop(database, "cached.myshopify.com", "t", "")
    cache = ShopCache(database, ttl=0.3)
    first = await cache.get("cached.myshopify.com")
    assert first is not None and first.installed
    await store.mark_shop_uninstalled(database, "cached.myshopify.com")
    assert (await cache.get("cached.myshopify.com")).installed  # within the TTL: as read
    await asyncio.sleep(0.35)
    assert not (await cache.get("cached.myshopify.com")).installed


async def test_forget_drops_the_entry_at_once(database: Database) -> None:
    await store.upsert_shop(database, "forgot.myshopify.com", "t", "")
    cache = ShopCache(database, ttl=60)
    assert (await cache.get("forgot.myshopify.com")).installed
    await store.mark_shop_uninstalled(database, "forgot.myshopify.com")
    cache.forget("forgot.myshopify.com")
    assert not (await cache.get("forgot.myshopify.com")).installed


async def test_unknown_shops_are_cached_as_unknown_and_zero_disables(database: Database) -> None:
    cache = ShopCache(database, ttl=60)
    assert await cache.get("later.myshopify.com") is None
    await store.upsert_shop(database, "later.myshopify.com", "t", "")
    assert await cache.get("later.myshopify.com") is None
    assert await ShopCache(database, ttl=0).get("later.myshopify.com") is not None


async def test_uninstall_webhook_reaches_the_proxy_at_once_with_the_cache_on(
    settings, database: Database, redis, emulator
) -> None:
    import json
    import time

    import httpx

    from service.app import create_app
    from service.shopify.proxy_url import signed_query
    from service.shopify.signatures import webhook_hmac

    shop = "uninstalling.myshopify.com"
    await store.upsert_shop(database, shop, "t", "")
    shopify = emulator(shops={shop: "t"})  # asked to confirm the uninstall
    app = create_app(
        settings.model_copy(update={"shop_cache_seconds": 60, "shopify_admin_url": shopify.url})
    )
    secret = settings.shopify_api_secret.get_secret_value()
    query = signed_query([], shop=shop, secret=secret, timestamp=int(time.time()))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            ok = await client.post(
                "/proxy/process", params=query, json={"type": "echo", "input": {"message": "x"}}
            )
            assert ok.status_code == 200
            # The merchant uninstalls: Shopify revokes the token (its own delivery goes
            # nowhere here; the test delivers the webhook itself).
            async with httpx.AsyncClient(timeout=30) as http:
                revoked = await http.post(f"{shopify.url}/_emulator/shops/{shop}/uninstall")
                assert revoked.status_code == 200
            body = json.dumps({"id": 1, "myshopify_domain": shop}).encode()
            hook = await client.post(
                "/webhooks",
                content=body,
                headers={
                    "X-Shopify-Topic": "app/uninstalled",
                    "X-Shopify-Shop-Domain": shop,
                    "X-Shopify-Event-Id": "evt-uninstall-1",
                    "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
                    "X-Shopify-Hmac-Sha256": webhook_hmac(body, secret),
                    "Content-Type": "application/json",
                },
            )
            assert hook.status_code == 200, hook.text
            gone = await client.post(
                "/proxy/process", params=query, json={"type": "echo", "input": {"message": "x"}}
            )
            assert gone.status_code == 404 and gone.json() == {"error": "Shop not found"}


async def test_concurrent_misses_share_one_read(database: Database, monkeypatch) -> None:
    """An expired entry under load: the requests in flight read the row once, not each."""
    await store.upsert_shop(database, "herd.myshopify.com", "t", "")
    reads = 0
    get_shop = store.get_shop

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        return await get_shop(*args, **kwargs)

    monkeypatch.setattr(store, "get_shop", counted)
    cache = ShopCache(database, ttl=60)
    shops = await asyncio.gather(*(cache.get("herd.myshopify.com") for _ in range(20)))
    assert reads == 1 and all(s is not None and s.domain == "herd.myshopify.com" for s in shops)


async def test_a_cancelled_reader_leaves_the_others_to_read(database: Database) -> None:
    await store.upsert_shop(database, "cancel.myshopify.com", "t", "")
    cache = ShopCache(database, ttl=60)
    first = asyncio.create_task(cache.get("cancel.myshopify.com"))
    await asyncio.sleep(0)  # the first caller is reading now
    others = [asyncio.create_task(cache.get("cancel.myshopify.com")) for _ in range(3)]
    await asyncio.sleep(0)
    first.cancel()
    shops = await asyncio.gather(*others)
    assert all(s is not None and s.installed for s in shops)
