"""The app proxy through a real `uvicorn service.app:app` process (body limits on the wire)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from databases import Database

from service import store
from service.web.parsing import MAX_BODY_BYTES
from tests.support.processes import start_web
from tests.support.proxy import proxy_url

SHOP = "e2e-shop.myshopify.com"


async def test_the_real_web_process_refuses_oversized_bodies(
    env: dict[str, str], spawn, database: Database
) -> None:
    await store.upsert_shop(database, SHOP, "shpat_e2e", "")
    _, base = start_web(spawn, env)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"type": "echo", "input": {"message": "'
        for _ in range(1_000):
            yield b"x" * 1024
        yield b'"}}'

    async with httpx.AsyncClient(timeout=10) as client:
        chunked = await client.post(proxy_url(base, "/proxy/process", shop=SHOP), content=chunks())
        assert chunked.status_code == 413 and chunked.json()["error"] == "Request body too large"
        sized = await client.post(
            proxy_url(base, "/proxy/process", shop=SHOP), content=b" " * (MAX_BODY_BYTES + 1)
        )
        assert sized.status_code == 413 and sized.json()["error"] == "Request body too large"
        # The server is still fine afterwards.
        ok = await client.post(
            proxy_url(base, "/proxy/process", shop=SHOP),
            json={"type": "echo", "input": {"message": "x"}},
        )
        assert ok.status_code == 200, ok.text
    assert await database.fetch_val("SELECT count(*) FROM jobs") == 1
