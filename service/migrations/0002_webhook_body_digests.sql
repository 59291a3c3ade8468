-- 0002 webhook body digests: a signed body re-sent under fresh headers (a new
-- X-Shopify-Event-Id) is recognised by the SHA-256 of its raw bytes, per topic and shop.
-- Expand-only: the column is nullable, so the previous release's processes, which insert
-- events without it, keep working during a deploy; their rows simply match no digest.
-- The index is built in this migration's transaction (not CONCURRENTLY): webhook_events
-- holds one week of events, so the write lock lasts moments.

ALTER TABLE webhook_events ADD COLUMN body_sha256 bytea;

CREATE INDEX webhook_events_body_idx ON webhook_events (shop_domain, topic, body_sha256)
    WHERE body_sha256 IS NOT NULL;
