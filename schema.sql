-- shopjobs schema: the whole current schema, each table in one CREATE TABLE with its
-- constraints, then its indexes. Read it here; it is not the upgrade path. `make db` (the
-- release command) runs the numbered migrations in service/migrations/, which bring an empty
-- database or any earlier release's to this same schema; tests/integration/test_schema.py
-- proves the two identical, column order included. A schema change is a new migration and the
-- same change here (service/migrations/__init__.py says how).
-- Postgres is the source of truth for a job's life; Redis only carries it to a worker.

CREATE TABLE shops (
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
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- When the shop's work was paused (JobsClient.pause_shop; migration 0004); NULL: running.
    paused_at       timestamptz
);

CREATE TABLE jobs (
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
    -- The staff member (the session token's `sub`) who started a job from the embedded admin;
    -- NULL for jobs from the storefront, webhooks and the app itself.
    staff_user_id   text,
    -- The Shopify bulk operation a job started (service/shopify/bulk.py): a run interrupted
    -- while waiting for it resumes that operation instead of starting another.
    bulk_operation_id text,
    -- Batches (service/store/batches.py): a child names its parent; a parent's `batch` holds
    -- what its handler asked for (follow-up type, fail on a child's failure) and is NULL for
    -- other jobs. A parent's progress and completion are counted from its children's rows.
    parent_id       uuid REFERENCES jobs (id) ON DELETE CASCADE,
    batch           jsonb,
    -- Whether `error_message` may be shown to a storefront and the merchant (the app proxy's
    -- status, the embedded admin): true for a handler's NonRetryableError and for messages the
    -- worker writes itself ("Cancelled", timeouts); false for an unexpected exception, whose
    -- text (a driver's error, a stack's innards) only the dashboard and the logs show. Rows
    -- failed before the column existed read false, except cancelled ones (migration 0001).
    error_public    boolean NOT NULL DEFAULT false,
    -- A suspended run (issue 24, service/migrations/0003): what it waits for ('sleep',
    -- 'bulk_operation', 'bulk_slot', 'event'), until when (NULL: until it happens), and the
    -- wait's name (the event's, the bulk operation's id, the slot's kind). The row stays
    -- 'processing' with no lease; `run_at` is when a worker looks again. NULL when running.
    wait_for        text CHECK (wait_for IN ('sleep', 'bulk_operation', 'bulk_slot', 'event')),
    wait_until      timestamptz,
    wait_name       text,
    -- The W3C trace context of the job's creation (JSON text), for OpenTelemetry traces
    -- (service/core/tracing.py, migration 0004); NULL while traces are off.
    trace_context   text,
    -- Flow control (issue 28, service/migrations/0005): a debounced job's key and the latest
    -- its run may be pushed to (first event + max_seconds); a keep-one-pending key. Each is
    -- unique among pending rows of a shop and type (the partial indexes below).
    debounce_key    text,
    debounce_until  timestamptz,
    unique_key      text,
    CONSTRAINT jobs_idempotency UNIQUE (shop_id, idempotency_key)
);

-- The status page and dashboard list a shop's jobs newest first.
CREATE INDEX jobs_shop_created_idx ON jobs (shop_id, created_at DESC);
-- The dashboard lists all jobs newest first.
CREATE INDEX jobs_created_idx ON jobs (created_at DESC);
-- Retention, the reconciler and the dashboard scan by status and age.
CREATE INDEX jobs_status_updated_idx ON jobs (status, updated_at);
-- The per-shop concurrency cap counts a shop's running jobs at every claim.
CREATE INDEX jobs_processing_shop_idx ON jobs (shop_id) WHERE status = 'processing';
-- One pending job per debounce key, and per keep-one-pending key (shop and type).
CREATE UNIQUE INDEX jobs_debounce_pending_idx ON jobs (shop_id, type, debounce_key)
    WHERE status = 'pending' AND debounce_key IS NOT NULL;
CREATE UNIQUE INDEX jobs_unique_pending_idx ON jobs (shop_id, type, unique_key)
    WHERE status = 'pending' AND unique_key IS NOT NULL;
-- A batch's progress and completion count its children by status.
CREATE INDEX jobs_parent_status_idx ON jobs (parent_id, status) WHERE parent_id IS NOT NULL;
-- Waking suspended jobs: an event's, a bulk operation's, a shop's bulk slot waiters.
CREATE INDEX jobs_waiting_idx ON jobs (shop_id, wait_for, wait_name) WHERE wait_for IS NOT NULL;

-- Shopify webhooks received. Shopify delivers an event more than once (retries, several
-- subscriptions); its X-Shopify-Event-Id is recorded here first, and the unique constraint
-- turns every later delivery of the same event into a no-op, as the body's digest does for a
-- signed body re-sent under a fresh event id (service/store/webhooks.py). Kept a week (longer than
-- Shopify's 4 hours of retries), then pruned. No foreign keys: an event outlives its job.
CREATE TABLE webhook_events (
    id              bigserial PRIMARY KEY,
    event_id        text NOT NULL,
    topic           text NOT NULL,
    shop_domain     text NOT NULL,
    webhook_id      text,
    api_version     text,
    job_id          uuid,
    received_at     timestamptz NOT NULL DEFAULT now(),
    body_sha256     bytea,        -- SHA-256 of the raw body: a replay under new headers is a duplicate
    CONSTRAINT webhook_events_event UNIQUE (event_id)
);

CREATE INDEX webhook_events_received_idx ON webhook_events (received_at);
-- A body seen before for this shop and topic (service/store/webhooks.py).
CREATE INDEX webhook_events_body_idx ON webhook_events (shop_domain, topic, body_sha256)
    WHERE body_sha256 IS NOT NULL;

-- Schedules (service/store/schedules.py): the latest tick whose runs exist, per scheduled type.
CREATE TABLE schedule_ticks (
    job_type        text PRIMARY KEY,
    tick            timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The migrations applied to this database, one row each, written by the migration runner
-- (service/migrations/__init__.py), which also creates this table before the first one.
-- What a job's steps recorded (`ctx.step`, and what `ctx.sleep` / `ctx.wait_for_event` /
-- bulk waits decided): a later run of the same job gets the record instead of running again.
CREATE TABLE job_steps (
    job_id          uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name            text NOT NULL,
    result          jsonb,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, name)
);

-- Events sent to a shop's jobs (`JobsClient.send_event`): a job waiting for one by name
-- (`ctx.wait_for_event`) takes the first sent after the job was created.
CREATE TABLE job_events (
    id              bigserial PRIMARY KEY,
    shop_id         bigint NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    name            text NOT NULL,
    payload         jsonb NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX job_events_lookup_idx ON job_events (shop_id, name, sent_at);

CREATE TABLE schema_migrations (
    version         integer PRIMARY KEY,
    name            text NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now()
);
