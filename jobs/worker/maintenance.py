"""Periodic upkeep, run on arq cron by whichever worker gets each tick first.

- `reconcile`: Postgres is the source of truth. A job that is pending or retrying (and due)
  for longer than RECONCILE_AFTER_SECONDS with no queue entry (Redis lost it: a restart
  without persistence, an enqueue that died half-way), or that is processing under a lease that
  expired that long ago (its worker died after arq dropped it), is queued again, on its
  shop's set. Queuing twice is harmless: `_job_id` dedups in Redis and the claim dedups in
  Postgres. A shop whose set holds such a job but which is out of the rotation is put back.
- `reconcile` also rebuilds the per-shop running counts of fair scheduling from the jobs
  taken (service/queue/), so a count that went wrong cannot keep a shop capped.
  A row whose type no worker knows any more (renamed or removed in a deploy) is failed with
  "Unknown job type NAME" instead: queued, it would only be dropped again, and such rows,
  always the oldest, would fill every tick's batch and starve real orphans.
- `reconcile` also ends batches whose children are all final but whose parent is still
  waiting (the worker that finished the last child died before it looked), and queues their
  follow-ups: see service/store/batches.py.
- `retention`: completed jobs are kept 1 day, failed ones 7 days (settings), so the table stays
  the size of what someone may still look at; optional counts are per shop, so a busy shop
  never prunes a quiet one's fresh results. A job with an idempotency key is kept at least
  IDEMPOTENCY_WINDOW_SECONDS from its creation whatever these say: the same key gets the same
  job for that long. Recorded webhook events are kept a week (Shopify stops retrying an event
  after 4 hours).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from arq.connections import ArqRedis
from databases import Database

from jobs.types import JobType
from jobs.worker.outcomes import end_batches
from jobs.worker.runtime import Runtime, key_caps, type_caps
from service import queue, store
from service.core.settings import Settings
from service.core.states import JobStatus
from service.intake import Source, queue_entry
from service.shopify import bulk, bulk_slots

logger = logging.getLogger("shopjobs.worker")

WEBHOOK_EVENT_RETENTION_SECONDS = 7 * 86_400


async def fail_unknown_type(database: Database, job_id: str, job_type: str) -> bool:
    """Fail a job whose type is not registered; True if it was runnable and is now failed."""
    return await store.fail_unclaimed_job(
        database, UUID(job_id), f"Unknown job type {job_type[:200]}"
    )


async def requeue_stranded(
    database: Database,
    redis: ArqRedis,
    older_than_seconds: float,
    known: Mapping[str, JobType],
    shop_cap: int = 0,
) -> int:
    stranded = await store.stranded_jobs(database, older_than_seconds)
    unknown = [(job_id, job_type) for job_id, job_type, _ in stranded if job_type not in known]
    for job_id, job_type in unknown:
        await fail_unknown_type(database, str(job_id), job_type)
    if unknown:
        logger.error(
            "reconciler: failed %d job(s) of unknown types: %s",
            len(unknown),
            ", ".join(sorted({t for _, t in unknown})),
        )
    stranded = [row for row in stranded if row[1] in known]
    if not stranded:
        return 0
    found = await queue.find(redis, [(str(job_id), shop) for job_id, _, shop in stranded])
    requeued = 0
    waiting: set[str] = set()  # shops with a job long waiting in their set
    keyed = [job_id for job_id, job_type, _ in stranded if known[job_type].concurrency_key]
    inputs = await store.inputs_of(database, keyed) if keyed else {}
    for (job_id, job_type, shop), where in zip(stranded, found, strict=True):
        if where == queue.Found.SHOP_SET:
            waiting.add(shop)
        elif where == queue.Found.MISSING:
            await queue.drop_leftover(redis, str(job_id))
            # Queued again with its type's priority (an enqueue's own is not kept) and key.
            entry = queue_entry(known[job_type], job_id, shop, inputs.get(job_id, {}), Source.APP)
            if (await queue.enqueue_many(redis, [entry]))[0]:
                requeued += 1
    if requeued:
        logger.warning("reconciler: re-queued %d stranded job(s)", requeued)
    misplaced = await queue.place_shops(redis, waiting, shop_cap)
    if misplaced:
        logger.warning(
            "reconciler: %d shop(s) with waiting jobs were out of the rotation", misplaced
        )
    return requeued


async def cancel_bulk_operations(runtime: Runtime, job_id: UUID | None = None) -> int:
    """Cancel on Shopify the bulk operations of cancelled jobs that were waiting for them (no
    run of theirs was going to); each is taken by one worker only. How many."""
    taken = await store.take_cancelled_bulk_waits(runtime.database, job_id)
    for cancelled, shop, operation_id in taken:
        try:
            admin = runtime.resources.admin.admin_for(shop)
            await admin.graphql(bulk.CANCEL, {"id": operation_id}, cost=bulk.MUTATION_COST)
            for kind in ("QUERY", "MUTATION"):
                await bulk_slots.release(runtime.redis, shop, kind, str(cancelled))
            logger.info("job %s cancelled: bulk operation %s cancelled", cancelled, operation_id)
        except Exception as exc:  # it ends on its own; the job is cancelled either way
            logger.warning("bulk operation %s not cancelled (%r)", operation_id, exc)
    return len(taken)


async def delete_expired(database: Database, settings: Settings) -> int:
    deleted = await store.delete_old_jobs(
        database,
        JobStatus.COMPLETED,
        settings.completed_retention_seconds,
        settings.completed_retention_count,
        settings.idempotency_window_seconds,
    )
    deleted += await store.delete_old_jobs(
        database,
        JobStatus.FAILED,
        settings.failed_retention_seconds,
        settings.failed_retention_count,
        settings.idempotency_window_seconds,
    )
    if deleted:
        logger.info("retention: deleted %d old job(s)", deleted)
    return deleted


async def reconcile(ctx: dict[str, Any]) -> int:
    runtime = ctx["runtime"]
    # Batches whose last child ended where no one looked (its worker died just after) end here.
    await end_batches(runtime, None)
    try:  # paused shops Redis forgot (a restart without persistence, a FLUSHALL): paused again
        paused = set(await store.paused_shops(runtime.database))
        for shop in paused - await queue.paused_shops(runtime.redis):
            await queue.pause_shop(runtime.redis, shop)
            logger.warning("reconciler: shop %s paused again in the queue", shop)
    except Exception as exc:
        logger.warning("paused shops not looked at: %s", exc)
    try:  # cancelled while waiting for a bulk operation, with no worker told (Redis was down)
        await cancel_bulk_operations(runtime)
    except Exception as exc:
        logger.warning("bulk operations of cancelled jobs not looked at: %s", exc)
    settings = runtime.settings
    try:
        wrong = await queue.repair(
            runtime.redis,
            settings.shop_concurrency_limit,
            type_caps(runtime.types),
            key_caps(runtime.types),
        )
        if wrong:
            logger.warning("reconciler: repaired the running counts of %d shop(s)", wrong)
        return await requeue_stranded(
            runtime.database,
            runtime.redis,
            settings.reconcile_after_seconds,
            runtime.types,
            settings.shop_concurrency_limit,
        )
    except Exception as exc:  # a dependency is down: the next tick will try again
        logger.warning("reconciler skipped: %s", exc)
        return 0


async def retention(ctx: dict[str, Any]) -> int:
    runtime = ctx["runtime"]
    try:
        await store.prune_webhook_events(runtime.database, WEBHOOK_EVENT_RETENTION_SECONDS)
        # An event is looked for by jobs created before it was sent: none outlives this.
        await store.prune_events(runtime.database, runtime.settings.job_max_age_seconds)
        return await delete_expired(runtime.database, runtime.settings)
    except Exception as exc:
        logger.warning("retention skipped: %s", exc)
        return 0
