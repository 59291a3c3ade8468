"""Webhook events received: the record that turns Shopify's repeated deliveries into no-ops."""

from __future__ import annotations

from uuid import UUID

from databases import Database

from service.store.sql import connection


async def record_webhook_event(
    database: Database,
    *,
    event_id: str,
    topic: str,
    shop_domain: str,
    webhook_id: str | None,
    api_version: str | None,
) -> bool:
    """Record a webhook event; False if it was recorded before (a duplicate delivery)."""
    async with connection(database) as raw:
        row = await raw.fetchrow(
            """
            INSERT INTO webhook_events (event_id, topic, shop_domain, webhook_id, api_version)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT ON CONSTRAINT webhook_events_event DO NOTHING
            RETURNING id
            """,
            event_id,
            topic,
            shop_domain,
            webhook_id,
            api_version,
        )
    return row is not None


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
