"""Webhooks whose headers lie: the HMAC covers the body only, so a body Shopify signed for one
thing can be re-sent with another topic or shop. Against a real `uvicorn service.app:app`."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from databases import Database

from service import store
from service.shopify.signatures import webhook_hmac
from tests.support.config import TEST_SECRET
from tests.support.jobs import shop_with_tokens
from tests.support.net import free_port, wait_for_http
from tests.support.processes import web_command

VICTIM = "victim-shop.myshopify.com"
MINE = "attacker-shop.myshopify.com"


def start_web(spawn, env: dict[str, str]) -> str:  # type: ignore[no-untyped-def]
    port = free_port()
    spawn(web_command(port), env, "web")
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/healthz")
    return base


async def deliver(
    base: str, topic: str, shop: str, body: bytes, triggered_at: datetime | None = None
) -> httpx.Response:
    """A delivery with a genuine signature of `body`, whatever the headers claim."""
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Hmac-Sha256": webhook_hmac(body, TEST_SECRET),
        "X-Shopify-Triggered-At": (triggered_at or datetime.now(UTC)).isoformat(),
    }
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        return await client.post("/webhooks", content=body, headers=headers)


async def jobs_of(database: Database, domain: str) -> int:
    return await database.fetch_val(
        "SELECT count(*) FROM jobs JOIN shops ON shops.id = jobs.shop_id WHERE domain = :d",
        {"d": domain},
    )


async def test_a_signed_body_retargeted_at_another_shop_changes_nothing(
    env: dict[str, str], spawn, database: Database, redis
) -> None:
    await store.upsert_shop(database, VICTIM, "shpat_victim", "read_products")
    await store.upsert_shop(database, MINE, "shpat_mine", "read_products")
    base = start_web(spawn, env)
    # Bodies Shopify really signed, for the attacker's own shop.
    product = json.dumps({"id": 1, "admin_graphql_api_id": "gid://shopify/Product/1"}).encode()
    own_uninstall = json.dumps({"id": 2, "myshopify_domain": MINE}).encode()
    own_redact = json.dumps({"shop_id": 2, "shop_domain": MINE}).encode()
    attempts = [
        ("app/uninstalled", product),
        ("app/uninstalled", own_uninstall),
        ("shop/redact", product),
        ("shop/redact", own_redact),
        ("customers/redact", own_redact),
        ("customers/data_request", own_redact),
    ]
    for topic, body in attempts:
        answer = await deliver(base, topic, VICTIM, body)
        assert answer.status_code == 400, (topic, answer.text)
        assert "does not match X-Shopify-Shop-Domain" in answer.json()["error"]
    victim = await shop_with_tokens(database, VICTIM)
    assert victim is not None and victim.installed and victim.access_token == "shpat_victim"
    assert await jobs_of(database, VICTIM) == 0
    assert await database.fetch_val("SELECT count(*) FROM webhook_events") == 0

    # The honest deliveries still work: the payload names the header's shop.
    redact = await deliver(base, "shop/redact", MINE, own_redact)
    assert redact.status_code == 200 and redact.json() == {"status": "queued"}
    uninstall = await deliver(base, "app/uninstalled", MINE, own_uninstall)
    assert uninstall.status_code == 200 and uninstall.json() == {"status": "uninstalled"}
    mine = await store.get_shop(database, MINE)
    assert mine is not None and not mine.installed


async def test_a_late_uninstall_does_not_revoke_a_reinstall(
    env: dict[str, str], spawn, database: Database, redis
) -> None:
    await store.upsert_shop(database, VICTIM, "shpat_first", "read_products")
    base = start_web(spawn, env)
    body = json.dumps({"id": 1, "myshopify_domain": VICTIM}).encode()
    # Shopify triggers an uninstall; its delivery fails and is retried for hours. Meanwhile
    # the merchant installs the app again.
    triggered = datetime.now(UTC) - timedelta(seconds=1)
    await store.upsert_shop(database, VICTIM, "shpat_second", "read_products")
    late = await deliver(base, "app/uninstalled", VICTIM, body, triggered_at=triggered)
    assert late.status_code == 200 and late.json() == {"status": "stale"}
    shop = await shop_with_tokens(database, VICTIM)
    assert shop is not None and shop.installed and shop.access_token == "shpat_second"

    async with httpx.AsyncClient(base_url=base) as client:
        unsigned_time = await client.post(
            "/webhooks",
            content=body,
            headers={
                "X-Shopify-Topic": "app/uninstalled",
                "X-Shopify-Shop-Domain": VICTIM,
                "X-Shopify-Event-Id": str(uuid.uuid4()),
                "X-Shopify-Hmac-Sha256": webhook_hmac(body, TEST_SECRET),
            },
        )
    assert unsigned_time.status_code == 400
    assert unsigned_time.json() == {"error": "Missing or invalid X-Shopify-Triggered-At"}

    current = await deliver(base, "app/uninstalled", VICTIM, body)
    assert current.status_code == 200 and current.json() == {"status": "uninstalled"}
    gone = await store.get_shop(database, VICTIM)
    assert gone is not None and not gone.installed and gone.access_token is None
