-- 0001 baseline: the schema as release 120a921 left it, whose databases record no version.
-- Every statement is idempotent, so this one file brings any earlier release's database up to
-- this point in place (rows kept) and builds the whole schema on an empty one. Never edit it:
-- a database that recorded version 1 does not run it again; change the schema in a new
-- migration (service/migrations/__init__.py says how).

CREATE TABLE IF NOT EXISTS shops (
    id              bigserial PRIMARY KEY,
    domain          text NOT NULL UNIQUE
                    CHECK (domain ~ '^[a-z0-9][a-z0-9-]*\.myshopify\.com$'),
    access_token    text,
    scopes          text NOT NULL DEFAULT '',
    token_expires_at          timestamptz,
    refresh_token             text,
    refresh_token_expires_at  timestamptz,
    installed_at    timestamptz NOT NULL DEFAULT now(),
    uninstalled_at  timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS jobs (
    id              uuid PRIMARY KEY,
    shop_id         bigint NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    type            text NOT NULL,
    input           jsonb NOT NULL DEFAULT '{}'::jsonb,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'retrying', 'completed', 'failed')),
    progress        smallint NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    progress_message text,
    result          jsonb,
    error_message   text,
    attempts        integer NOT NULL DEFAULT 0,   -- runs started and counted by us, not arq's job_try
    retry_count     integer NOT NULL DEFAULT 0,   -- failed attempts that were followed by a retry
    customer_id     text,                         -- logged_in_customer_id; NULL when anonymous
    idempotency_key text,
    source          text NOT NULL DEFAULT 'proxy',
    lease_owner     text,
    lease_expires_at timestamptz,
    run_at          timestamptz,                  -- when a retrying or delayed job is due
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    CONSTRAINT jobs_idempotency UNIQUE (shop_id, idempotency_key)
);

-- The status page and dashboard list a shop's jobs newest first.
CREATE INDEX IF NOT EXISTS jobs_shop_created_idx ON jobs (shop_id, created_at DESC);
-- The dashboard lists all jobs newest first.
CREATE INDEX IF NOT EXISTS jobs_created_idx ON jobs (created_at DESC);
-- Retention, the reconciler and the dashboard scan by status and age.
CREATE INDEX IF NOT EXISTS jobs_status_updated_idx ON jobs (status, updated_at);

-- Shopify webhooks received. Shopify delivers an event more than once (retries, several
-- subscriptions); its X-Shopify-Event-Id is recorded here first, and the unique constraint
-- turns every later delivery of the same event into a no-op. Kept a week (longer than
-- Shopify's 4 hours of retries), then pruned. No foreign keys: an event outlives its job.
CREATE TABLE IF NOT EXISTS webhook_events (
    id              bigserial PRIMARY KEY,
    event_id        text NOT NULL,
    topic           text NOT NULL,
    shop_domain     text NOT NULL,
    webhook_id      text,
    api_version     text,
    job_id          uuid,
    received_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_events_event UNIQUE (event_id)
);

CREATE INDEX IF NOT EXISTS webhook_events_received_idx ON webhook_events (received_at);

-- The staff member (the session token's `sub`) who started a job from the embedded admin;
-- NULL for jobs from the storefront, webhooks and the app itself.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS staff_user_id text;

-- The per-shop concurrency cap counts a shop's running jobs at every claim.
CREATE INDEX IF NOT EXISTS jobs_processing_shop_idx ON jobs (shop_id) WHERE status = 'processing';

-- The Shopify bulk operation a job started (service/shopify/bulk.py): a run interrupted while
-- waiting for it resumes that operation instead of starting another.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS bulk_operation_id text;

-- Batches (service/batches.py): a child names its parent; a parent's `batch` holds what its
-- handler asked for (follow-up type, fail on a child's failure) and is NULL for other jobs.
-- A parent's progress and completion are counted from its children's rows, by status.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS parent_id uuid REFERENCES jobs (id) ON DELETE CASCADE;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS batch jsonb;
CREATE INDEX IF NOT EXISTS jobs_parent_status_idx ON jobs (parent_id, status)
    WHERE parent_id IS NOT NULL;

-- Whether `error_message` may be shown to a storefront and the merchant (the app proxy's
-- status, the embedded admin): true for a handler's NonRetryableError and for messages the
-- worker writes itself ("Cancelled", timeouts); false for an unexpected exception, whose text
-- (a driver's error, a stack's innards) only the dashboard and the logs show. Rows failed
-- before this column existed read false (the generic text), except cancelled ones, marked once,
-- by the upgrade that adds the column.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = current_schema() AND table_name = 'jobs'
                      AND column_name = 'error_public') THEN
        ALTER TABLE jobs ADD COLUMN error_public boolean NOT NULL DEFAULT false;
        UPDATE jobs SET error_public = true WHERE status = 'failed' AND error_message = 'Cancelled';
    END IF;
END
$$;

-- Schedules (service/store/schedules.py): the latest tick whose runs exist, per scheduled type.
CREATE TABLE IF NOT EXISTS schedule_ticks (
    job_type        text PRIMARY KEY,
    tick            timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Dropped: the fault suite's record of the diagnostic `echo` job's side effects, which earlier
-- releases created here. No product code reads or writes it; the tests create their own.
DROP TABLE IF EXISTS echo_effects;
