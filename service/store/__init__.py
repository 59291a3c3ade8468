"""Every SQL statement the project runs against its tables, in one package, one module a domain.

Functions take the `databases.Database` they act on and run on its asyncpg connection
(sql.connection); nothing else in the tree writes SQL for these tables, so a reader reviews
all of it here. Callers import the package (`from service import store`) and use the names
below.
"""

from __future__ import annotations

from service.core.states import CANCELLED_MESSAGE
from service.store.batches import (
    FollowUp,
    await_children,
    batch_counts,
    batch_counts_many,
    finish_batches,
    insert_children,
    start_batch,
)
from service.store.bulk import bulk_operation_of, job_is_final, keep_bulk_operation
from service.store.charts import Bucket, Series, Window, job_chart
from service.store.claims import (
    Claim,
    claim_jobs,
    fail_unclaimed_job,
    release_job,
    renew_leases,
)
from service.store.compliance import customer_jobs, delete_customer_jobs, redact_shop
from service.store.control import (
    BATCH_SIZE,
    FlowFilter,
    cancel_job,
    cancel_jobs,
    count_matching,
    matching_to_cancel,
    retry_failed_jobs,
    retry_job,
    retry_matching,
)
from service.store.flow import DebounceSpec, create_keyed_job
from service.store.jobs import (
    Job,
    create_job,
    delete_job,
    get_job,
    get_job_for_shop,
    get_storefront_job,
    inputs_of,
    insert_jobs,
    job_from_row,
    jsonb_safe,
)
from service.store.listing import (
    JobFilter,
    ListedJob,
    count_jobs_by_status,
    failed_jobs_by_type,
    get_listed_job,
    job_types_in_use,
    job_types_of_shop,
    list_jobs,
)
from service.store.maintenance import delete_old_jobs, stranded_jobs
from service.store.outcomes import (
    complete_job,
    complete_jobs,
    fail_job,
    note_rate_limited,
    record_progress,
    schedule_retry,
)
from service.store.schedules import TickJob, create_tick_jobs, schedule_ticks
from service.store.shops import (
    Shop,
    encrypt_stored_tokens,
    get_shop,
    mark_shop_uninstalled,
    pause_shop,
    paused_shops,
    update_shop_token,
    upsert_shop,
)
from service.store.sql import JOB_COLUMNS
from service.store.traces import set_trace_context, trace_context_of
from service.store.waits import (
    Woken,
    bulk_operation_awaited,
    event_for,
    prune_events,
    record_step,
    send_event,
    step_of,
    steps_of,
    suspend_job,
    take_cancelled_bulk_waits,
    wake_bulk_waiters,
    wake_event_waiters,
    wake_slot_waiters,
)
from service.store.webhooks import (
    WebhookRecord,
    forget_webhook_event,
    link_webhook_job,
    prune_webhook_events,
    record_webhook_event,
)

__all__ = [
    "BATCH_SIZE",
    "CANCELLED_MESSAGE",
    "JOB_COLUMNS",
    "Bucket",
    "Claim",
    "DebounceSpec",
    "FlowFilter",
    "FollowUp",
    "Job",
    "JobFilter",
    "ListedJob",
    "Series",
    "Shop",
    "TickJob",
    "WebhookRecord",
    "Window",
    "Woken",
    "await_children",
    "batch_counts",
    "batch_counts_many",
    "bulk_operation_awaited",
    "bulk_operation_of",
    "cancel_job",
    "cancel_jobs",
    "claim_jobs",
    "complete_job",
    "complete_jobs",
    "count_jobs_by_status",
    "count_matching",
    "create_job",
    "create_keyed_job",
    "create_tick_jobs",
    "customer_jobs",
    "delete_customer_jobs",
    "delete_job",
    "delete_old_jobs",
    "encrypt_stored_tokens",
    "event_for",
    "fail_job",
    "fail_unclaimed_job",
    "failed_jobs_by_type",
    "finish_batches",
    "forget_webhook_event",
    "get_job",
    "get_job_for_shop",
    "get_listed_job",
    "get_shop",
    "get_storefront_job",
    "inputs_of",
    "insert_children",
    "insert_jobs",
    "job_chart",
    "job_from_row",
    "job_is_final",
    "job_types_in_use",
    "job_types_of_shop",
    "jsonb_safe",
    "keep_bulk_operation",
    "link_webhook_job",
    "list_jobs",
    "mark_shop_uninstalled",
    "matching_to_cancel",
    "note_rate_limited",
    "pause_shop",
    "paused_shops",
    "prune_events",
    "prune_webhook_events",
    "record_progress",
    "record_step",
    "record_webhook_event",
    "redact_shop",
    "release_job",
    "renew_leases",
    "retry_failed_jobs",
    "retry_job",
    "retry_matching",
    "schedule_retry",
    "schedule_ticks",
    "send_event",
    "set_trace_context",
    "start_batch",
    "step_of",
    "steps_of",
    "stranded_jobs",
    "suspend_job",
    "take_cancelled_bulk_waits",
    "trace_context_of",
    "update_shop_token",
    "upsert_shop",
    "wake_bulk_waiters",
    "wake_event_waiters",
    "wake_slot_waiters",
]
