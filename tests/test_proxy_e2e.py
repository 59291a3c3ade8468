"""The app proxy through a real `uvicorn service.app:app` process (body limits on the wire)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
from databases import Database

from service import store
from service.shopify.proxy_url import signed_proxy_url
from service.web.proxy import MAX_BODY_BYTES
from tests.conftest import TEST_SECRET, free_port, wait_for_http, web_command

SHOP = "e2e-shop.myshopify.com"


def proxy_url(base: str, path: str, customer: str = "") -> str:
    return signed_proxy_url(
        base, path, shop=SHOP, secret=TEST_SECRET, customer_id=customer, timestamp=int(time.time())
    )


def start_web(spawn, env: dict[str, str]) -> str:  # type: ignore[no-untyped-def]
    port = free_port()
    spawn(web_command(port), env, "web")
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/healthz")
    return base


async def test_the_real_web_process_refuses_oversized_bodies(
    env: dict[str, str], spawn, database: Database
) -> None:
    await store.upsert_shop(database, SHOP, "shpat_e2e", "")
    base = start_web(spawn, env)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"type": "echo", "input": {"message": "'
        for _ in range(1_000):
            yield b"x" * 1024
        yield b'"}}'

    async with httpx.AsyncClient(timeout=10) as client:
        chunked = await client.post(proxy_url(base, "/proxy/process"), content=chunks())
        assert chunked.status_code == 413 and chunked.json()["error"] == "Request body too large"
        sized = await client.post(
            proxy_url(base, "/proxy/process"), content=b" " * (MAX_BODY_BYTES + 1)
        )
        assert sized.status_code == 413 and sized.json()["error"] == "Request body too large"
        # The server is still fine afterwards.
        ok = await client.post(
            proxy_url(base, "/proxy/process"), json={"type": "echo", "input": {"message": "x"}}
        )
        assert ok.status_code == 200, ok.text
    assert await database.fetch_val("SELECT count(*) FROM jobs") == 1
