-- 0003 job waits (issue 24): a run that waits (a sleep, a bulk operation, a bulk slot, an
-- event) suspends: its row stays 'processing' with no lease and says what it waits for and
-- until when; `run_at` is when a worker looks at it again. Steps (`ctx.step`, and what
-- `ctx.sleep` / `ctx.wait_for_event` decided) are recorded once per job in job_steps; events
-- sent to a shop (`JobsClient.send_event`) are kept in job_events for the waits to find.
-- Expand-only: nullable columns and new tables. The previous release's processes never
-- write them, and its claim does not take a row with no lease (it needs an expired one), so
-- a suspended job is left to the new workers during a rolling deploy.

ALTER TABLE jobs ADD COLUMN wait_for text
    CHECK (wait_for IN ('sleep', 'bulk_operation', 'bulk_slot', 'event'));
ALTER TABLE jobs ADD COLUMN wait_until timestamptz;
ALTER TABLE jobs ADD COLUMN wait_name text;

CREATE INDEX jobs_waiting_idx ON jobs (shop_id, wait_for, wait_name) WHERE wait_for IS NOT NULL;

CREATE TABLE job_steps (
    job_id          uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name            text NOT NULL,
    result          jsonb,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, name)
);

CREATE TABLE job_events (
    id              bigserial PRIMARY KEY,
    shop_id         bigint NOT NULL REFERENCES shops (id) ON DELETE CASCADE,
    name            text NOT NULL,
    payload         jsonb NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX job_events_lookup_idx ON job_events (shop_id, name, sent_at);
