"""Shopify's webhook sender: signs a payload, delivers it to the app, retries on failure.

Headers as Shopify sends them: X-Shopify-Topic, X-Shopify-Hmac-Sha256 (base64 HMAC-SHA256 of
the raw body with the app's secret, computed here independently of the app's code),
X-Shopify-Shop-Domain, X-Shopify-API-Version, X-Shopify-Webhook-Id (one per delivery of a
subscription), X-Shopify-Event-Id (one per event: the same on every duplicate) and
X-Shopify-Triggered-At. The body is compact JSON in UTF-8, non-ASCII characters as they are
(`"Crème"`, not `"Cr\\u00e8me"`), as Shopify sends it; the HMAC covers those bytes. Anything
but a 2xx within the timeout is retried after each of the configured delays (Shopify: 8
retries over about 4 hours; tests use short ones).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from shopify_emulator.catalogue import Product
from shopify_emulator.config import EmulatorConfig

logger = logging.getLogger("shopify_emulator")


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def new_delivery(
    config: EmulatorConfig,
    topic: str,
    shop: str,
    payload: Any,
    *,
    event_id: str | None = None,
    secret: str | None = None,
) -> dict[str, Any]:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": sign(body, secret or config.api_secret),
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-API-Version": config.api_version,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
        "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
    }
    return {
        "topic": topic,
        "shop": shop,
        "webhookId": headers["X-Shopify-Webhook-Id"],
        "eventId": headers["X-Shopify-Event-Id"],
        "attempts": [],
        "delivered": False,
        "finished": False,
        "_body": body,
        "_headers": headers,
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def product_payload(product: Product) -> dict[str, Any]:
    """A product as `products/update` carries it (REST field names, tags one comma-separated
    string), for the fields the emulator keeps."""
    return {
        "admin_graphql_api_id": product.gid,
        "id": product.id,
        "title": product.title,
        "handle": product.handle,
        "vendor": product.vendor,
        "product_type": product.product_type,
        "status": product.status.lower(),
        "tags": ", ".join(product.tags),
        "created_at": _iso(product.created_at),
        "updated_at": _iso(product.updated_at or product.created_at),
        "published_at": _iso(product.created_at) if product.published else None,
        "variants": [
            {
                "admin_graphql_api_id": v.gid,
                "id": v.id,
                "product_id": product.id,
                "title": v.title,
                "sku": v.sku,
                "price": str(v.price),
                "position": v.position,
                "inventory_quantity": v.inventory_quantity,
            }
            for v in product.variants
        ],
        "variant_gids": [{"admin_graphql_api_id": v.gid} for v in product.variants],
    }


def public(delivery: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in delivery.items() if not k.startswith("_")}


async def deliver(
    client: httpx.AsyncClient, config: EmulatorConfig, delivery: dict[str, Any]
) -> None:
    """Deliver until the app answers 2xx or the retries are used up; record every attempt."""
    delays = (*config.webhook_retry_delays, None)
    for delay in delays:
        try:
            answer = await client.post(
                config.webhook_target,
                content=delivery["_body"],
                headers=delivery["_headers"],
                timeout=config.webhook_timeout_seconds,
            )
            delivery["attempts"].append({"status": answer.status_code})
            logger.info(
                "webhook %s for %s -> %d", delivery["topic"], delivery["shop"], answer.status_code
            )
            if 200 <= answer.status_code < 300:
                delivery["delivered"] = True
                break
        except httpx.HTTPError as exc:
            delivery["attempts"].append({"error": exc.__class__.__name__})
        if delay is not None:
            await asyncio.sleep(delay)
    delivery["finished"] = True
