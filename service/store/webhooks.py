"""Webhook events received: the record that turns Shopify's repeated deliveries into no-ops.

An event is a duplicate when its X-Shopify-Event-Id was recorded before (Shopify's retries),
or when the same raw body (its SHA-256) was recorded before for the same topic and shop: the
HMAC covers the body only, so a captured body re-sent with a fresh, unsigned event id is the
same event. Both hold for as long as events are kept (a week: jobs/worker/maintenance.py
prunes them with `prune_webhook_events`).
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from databases import Database

from service.store.sql import connection

# The class of the two-key advisory lock that serialises the digest check of one body (its
# second key is a hash of topic, shop and digest): two deliveries of one body at once must not
# both find it new. Two-key locks do not share a space with the schema's one-key lock.
BODY_LOCK_CLASS = 7_331_002


class WebhookRecord(StrEnum):
    """What recording an event found."""

    FRESH = "fresh"
    DUPLICATE_EVENT = "duplicate"  # its event id was recorded before
    DUPLICATE_BODY = "duplicate body"  # its body was, for this topic and shop, under another id


async def record_webhook_event(
    database: Database,
    *,
    event_id: str,
    topic: str,
    shop_domain: str,
    webhook_id: str | None,
    api_version: str | None,
    body_sha256: bytes | None = None,
    match_body: bool = True,
) -> WebhookRecord:
    """Record a webhook event unless its event id, or its body for this topic and shop, was
    recorded before.

    `match_body=False` records the digest without matching it: `app/uninstalled`, whose
    payload (the shop) may read the same at the shop's next uninstall, is checked with Shopify
    instead (service/web/webhooks.py).
    """
    async with connection(database) as raw, raw.transaction():
        if body_sha256 is not None and match_body:
            await raw.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2 || ' ' || $3 || ' ' || $4))",
                BODY_LOCK_CLASS,
                topic,
                shop_domain,
                body_sha256.hex(),
            )
            seen = await raw.fetchval(
                """
                SELECT 1 FROM webhook_events
                 WHERE shop_domain = $1 AND topic = $2 AND body_sha256 = $3
                 LIMIT 1
                """,
                shop_domain,
                topic,
                body_sha256,
            )
            if seen:
                return WebhookRecord.DUPLICATE_BODY
        row = await raw.fetchrow(
            """
            INSERT INTO webhook_events (event_id, topic, shop_domain, webhook_id, api_version,
                                        body_sha256)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT ON CONSTRAINT webhook_events_event DO NOTHING
            RETURNING id
            """,
            event_id, topic, shop_domain, webhook_id, api_version, body_sha256,
        )  # fmt: skip
    return WebhookRecord.FRESH if row is not None else WebhookRecord.DUPLICATE_EVENT


async def link_webhook_job(database: Database, event_id: str, job_id: UUID) -> None:
    async with connection(database) as raw:
        await raw.execute(
            "UPDATE webhook_events SET job_id = $2 WHERE event_id = $1", event_id, job_id
        )


async def forget_webhook_event(database: Database, event_id: str) -> None:
    """Undo a recording whose work could not be queued, so Shopify's retry is not a dup."""
    async with connection(database) as raw:
        await raw.execute("DELETE FROM webhook_events WHERE event_id = $1", event_id)


async def prune_webhook_events(database: Database, older_than_seconds: float) -> int:
    async with connection(database) as raw:
        rows = await raw.fetch(
            """
            DELETE FROM webhook_events
             WHERE received_at < now() - make_interval(secs => $1)
            RETURNING id
            """,
            older_than_seconds,
        )
    return len(rows)
