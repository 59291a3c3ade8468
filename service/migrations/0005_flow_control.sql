-- 0005 flow control (issue 28): debounce and keep-one-pending keys on jobs, pausing a shop.
-- `debounce_key`: events with the same key (per shop and type) collapse into the one pending
-- job that holds it; `debounce_until` is the latest its run may be pushed to (the first event
-- plus the debounce's max_seconds). `unique_key`: at most one pending job per key (per shop and
-- type). Both are unique among PENDING rows only (partial unique indexes): once the job is
-- claimed it leaves the index and a new one may be queued. `shops.paused_at`: the shop's work
-- is paused (JobsClient.pause_shop; the take skips a paused shop).
-- Expand-only: nullable columns and new indexes. The previous release's processes never write
-- them, and its rows hold no key, so nothing they do can conflict with the new indexes.

ALTER TABLE jobs ADD COLUMN debounce_key text;
ALTER TABLE jobs ADD COLUMN debounce_until timestamptz;
ALTER TABLE jobs ADD COLUMN unique_key text;

CREATE UNIQUE INDEX jobs_debounce_pending_idx ON jobs (shop_id, type, debounce_key)
    WHERE status = 'pending' AND debounce_key IS NOT NULL;
CREATE UNIQUE INDEX jobs_unique_pending_idx ON jobs (shop_id, type, unique_key)
    WHERE status = 'pending' AND unique_key IS NOT NULL;

ALTER TABLE shops ADD COLUMN paused_at timestamptz;
