"""Webhooks whose headers lie: the HMAC covers the body only, so a body Shopify signed for one
thing can be re-sent with another topic or shop, or re-sent as it was under fresh headers.
Against a real `uvicorn service.app:app` and the emulated Shopify it asks about uninstalls."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import httpx
from databases import Database

from service import store
from service.shopify.signatures import webhook_hmac
from service.shopify.uninstalls import WORKING_PAUSE_SECONDS
from tests.support.config import TEST_SECRET
from tests.support.jobs import shop_with_tokens
from tests.support.net import free_port, wait_for_http
from tests.support.processes import web_command

VICTIM = "victim-shop.myshopify.com"
MINE = "attacker-shop.myshopify.com"


def start_web(spawn, env: dict[str, str], shopify_url: str, port: int | None = None) -> str:  # type: ignore[no-untyped-def]
    """The web, asking `shopify_url` (the emulator) about uninstalls."""
    port = port or free_port()
    spawn(web_command(port), {**env, "SHOPIFY_ADMIN_URL": shopify_url}, "web")
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/healthz")
    return base


def uninstall_body(shop: str) -> bytes:
    """The body of the emulator's app/uninstalled for `shop`, byte for byte (as captured)."""
    payload = {"id": 1, "name": shop.split(".")[0], "domain": shop, "myshopify_domain": shop}
    return json.dumps(payload, separators=(",", ":")).encode()


async def emulated_uninstall(shopify_url: str, shop: str) -> dict:  # type: ignore[type-arg]
    """The merchant uninstalls: Shopify revokes the tokens and delivers app/uninstalled."""
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(f"{shopify_url}/_emulator/shops/{shop}/uninstall")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


async def reinstall(shopify_url: str, database: Database, shop: str, token: str) -> None:
    """The merchant installs the app again: Shopify grants a new token, the app stores it."""
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{shopify_url}/_emulator/shops", json={"domain": shop, "token": token}
        )
    assert answer.status_code == 201, answer.text
    await store.upsert_shop(database, shop, token, "read_products")


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
    env: dict[str, str], spawn, emulator, database: Database, redis
) -> None:
    await store.upsert_shop(database, VICTIM, "shpat_victim", "read_products")
    await store.upsert_shop(database, MINE, "shpat_mine", "read_products")
    port = free_port()
    shopify = emulator(
        app_url=f"http://127.0.0.1:{port}", shops={VICTIM: "shpat_victim", MINE: "shpat_mine"}
    )
    base = start_web(spawn, env, shopify.url, port)
    # Bodies Shopify really signed, for the attacker's own shop.
    product = json.dumps({"id": 1, "admin_graphql_api_id": "gid://shopify/Product/1"}).encode()
    own_uninstall = uninstall_body(MINE)
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
    uninstall = await emulated_uninstall(shopify.url, MINE)
    assert uninstall["attempts"] == [{"status": 200}]
    mine = await store.get_shop(database, MINE)
    assert mine is not None and not mine.installed


async def test_a_replayed_body_with_fresh_headers_queues_nothing(
    env: dict[str, str], spawn, emulator, database: Database, redis
) -> None:
    """A captured products/update re-sent with a fresh X-Shopify-Event-Id (and webhook id,
    trigger time) is the same event: 200, so a retrying sender stops, and no second job."""
    await store.upsert_shop(database, VICTIM, "shpat_victim", "read_products")
    shopify = emulator(shops={VICTIM: "shpat_victim"})
    base = start_web(spawn, env, shopify.url)
    body = json.dumps({"id": 7, "admin_graphql_api_id": "gid://shopify/Product/7"}).encode()
    first = await deliver(base, "products/update", VICTIM, body)
    assert first.status_code == 200 and first.json() == {"status": "queued"}
    for _ in range(3):
        replay = await deliver(base, "products/update", VICTIM, body)
        assert replay.status_code == 200 and replay.json() == {"status": "duplicate body"}
    assert await jobs_of(database, VICTIM) == 1
    assert await database.fetch_val("SELECT count(*) FROM webhook_events") == 1
    # The same bytes under another topic or for another shop are not this event.
    await store.upsert_shop(database, MINE, "shpat_mine", "read_products")
    other_shop = await deliver(base, "products/update", MINE, body)
    assert other_shop.json() == {"status": "queued"}
    # A changed body is a new event (Shopify's next update carries the product's new state).
    changed = json.dumps({"id": 7, "admin_graphql_api_id": "gid://shopify/Product/7", "v": 2})
    again = await deliver(base, "products/update", VICTIM, changed.encode())
    assert again.json() == {"status": "queued"}
    assert await jobs_of(database, VICTIM) == 2


async def test_a_forged_late_uninstall_does_not_uninstall_a_reinstall(
    env: dict[str, str], spawn, emulator, database: Database, redis
) -> None:
    await store.upsert_shop(database, VICTIM, "shpat_first", "read_products")
    port = free_port()
    # Shopify's second try of a delivery comes after the pause a working token starts.
    shopify = emulator(
        app_url=f"http://127.0.0.1:{port}",
        shops={VICTIM: "shpat_first"},
        webhook_retry_delays=(WORKING_PAUSE_SECONDS + 1,),
    )
    base = start_web(spawn, env, shopify.url, port)
    # The merchant uninstalls; an attacker captures the signed body. Then the merchant
    # installs the app again and gets a new, working token.
    genuine = await emulated_uninstall(shopify.url, VICTIM)
    assert genuine["attempts"] == [{"status": 200}]
    gone = await store.get_shop(database, VICTIM)
    assert gone is not None and not gone.installed
    await reinstall(shopify.url, database, VICTIM, "shpat_second")
    body = uninstall_body(VICTIM)

    # Replayed with a fresh event id and a fresh, later X-Shopify-Triggered-At: Shopify
    # accepts the shop's token, so nothing is uninstalled.
    late = await deliver(base, "app/uninstalled", VICTIM, body)
    assert late.status_code == 200 and late.json() == {"status": "not confirmed"}
    # At once again: Shopify was asked a moment ago; 503, and still nothing changes.
    again = await deliver(base, "app/uninstalled", VICTIM, body)
    assert again.status_code == 503
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

    # The merchant uninstalls again, for real: the same body, but Shopify refuses the token
    # now. Its first delivery falls in the pause (503); Shopify's retry is acted on.
    second = await emulated_uninstall(shopify.url, VICTIM)
    assert second["attempts"] == [{"status": 503}, {"status": 200}]
    gone = await shop_with_tokens(database, VICTIM)
    assert gone is not None and not gone.installed and gone.access_token is None


async def test_an_uninstall_shopify_cannot_confirm_is_503_and_changes_nothing(
    env: dict[str, str], spawn, database: Database, redis
) -> None:
    """Shopify unreachable (here: nothing listens): no uninstall on headers alone; 503 so that
    Shopify delivers it again, and no record, so that its retry is checked afresh."""
    await store.upsert_shop(database, VICTIM, "shpat_victim", "read_products")
    base = start_web(spawn, env, f"http://127.0.0.1:{free_port()}")
    answer = await deliver(base, "app/uninstalled", VICTIM, uninstall_body(VICTIM))
    assert answer.status_code == 503
    assert "could not confirm" in answer.json()["error"]
    shop = await shop_with_tokens(database, VICTIM)
    assert shop is not None and shop.installed and shop.access_token == "shpat_victim"
    assert await database.fetch_val("SELECT count(*) FROM webhook_events") == 0
