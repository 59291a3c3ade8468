-- 0004 job trace context (issue 27): the W3C trace context (`traceparent`, `tracestate`, as
-- JSON text) current when the job was created, so that every run of it, after a retry or a
-- wait of a day, in whatever worker, joins the trace of the request that created it
-- (service/core/tracing.py). Written only while OpenTelemetry traces are on.
-- Expand-only: a nullable column the previous release neither reads nor writes.

ALTER TABLE jobs ADD COLUMN trace_context text;
