"""The app proxy refuses a parameter name containing "=", against a real
`uvicorn service.app:app`: such a query signs the same message as another one."""

from __future__ import annotations

import time

import httpx
from databases import Database

from service import store
from service.shopify.proxy_url import signed_query
from tests.support.config import TEST_SECRET
from tests.support.net import free_port, wait_for_http
from tests.support.processes import web_command

SHOP = "keys-shop.myshopify.com"


async def test_an_ambiguous_key_is_401_and_starts_nothing(
    env: dict[str, str], spawn, database: Database, redis
) -> None:
    await store.upsert_shop(database, SHOP, "shpat_keys", "read_products")
    port = free_port()
    spawn(web_command(port), env, "web")
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/healthz")
    job = {"type": "echo", "input": {"message": "x"}}
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for extra in ([("a=b", "c")], [("logged_in_customer_id=7", "")]):
            pairs = signed_query(extra, shop=SHOP, secret=TEST_SECRET, timestamp=int(time.time()))
            refused = await client.post("/proxy/process", params=pairs, json=job)
            assert refused.status_code == 401, refused.text
            assert refused.json() == {"error": "Parameter name contains '='"}
        # The same query with "=" only in a value is Shopify's ordinary query: accepted.
        pairs = signed_query(
            [("a", "b=c")], shop=SHOP, secret=TEST_SECRET, timestamp=int(time.time())
        )
        accepted = await client.post("/proxy/process", params=pairs, json=job)
        assert accepted.status_code == 200, accepted.text
    assert await database.fetch_val("SELECT count(*) FROM jobs") == 1
