"""Periodic upkeep, run on arq cron by whichever worker gets each tick first.

- `reconcile`: Postgres is the source of truth. A job that is pending or retrying (and due)
  for longer than RECONCILE_AFTER_SECONDS with no queue entry (Redis lost it: a restart
  without persistence, an enqueue that died half-way), or that is processing under a lease that
  expired that long ago (its worker died after arq dropped it), is queued again. Queuing
  twice is harmless: `_job_id` dedups in Redis and the claim dedups in Postgres. A job goes
  back where QUEUE_FAIRNESS puts new ones: its shop's set, or arq's queue (fifo); with fifo,
  a job left on its shop's set (fairness turned off) is moved to arq's queue.
- `reconcile` also rebuilds the per-shop running counts of fair scheduling from the jobs
  taken (service/core/fair.py), so a count that went wrong cannot keep a shop capped.
  A row whose type no worker knows any more (renamed or removed in a deploy) is failed with
  "Unknown job type NAME" instead: queued, it would only be dropped again, and such rows,
  always the oldest, would fill every tick's batch and starve real orphans.
- `reconcile` also ends batches whose children are all final but whose parent is still
  waiting (the worker that finished the last child died before it looked), and queues their
  follow-ups: see service/store/batches.py.
- `retention`: completed jobs are kept 1 day and at most 1,000, failed ones 7 days and at most
  5,000 (settings), so the table stays the size of what someone may still look at. Recorded
  webhook events are kept a week (Shopify stops retrying an event after 4 hours).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any
from uuid import UUID

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix
from databases import Database

from jobs.worker.outcomes import end_batches
from service import store
from service.core import fair, queue
from service.core.fair import QueueFairness
from service.core.settings import Settings
from service.core.states import JobStatus

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
    known: Collection[str],
    fairness: QueueFairness = QueueFairness.SHOP,
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
    async with redis.pipeline(transaction=False) as pipe:
        for job_id, _, shop in stranded:
            pipe.zscore(queue.QUEUE_NAME, str(job_id))
            pipe.zscore(fair.shop_queue(shop), str(job_id))
            pipe.exists(in_progress_key_prefix + str(job_id))
        answers = await pipe.execute()
    requeued = 0
    waiting: set[str] = set()  # shops with a job long waiting in their set
    for index, (job_id, job_type, shop) in enumerate(stranded):
        queued, fair_queued, running = answers[3 * index : 3 * index + 3]
        if queued is not None or running:
            continue
        if fair_queued is not None:
            if fairness == QueueFairness.SHOP:
                waiting.add(shop)
                continue
            # Queued on its shop's set, where fifo workers never look (fairness was turned
            # off since): it moves to arq's queue.
            await redis.zrem(fair.shop_queue(shop), str(job_id))
        # A job key without a queue entry is a leftover that would block `_job_id` dedup.
        await redis.delete(job_key_prefix + str(job_id))
        if await queue.enqueue(redis, job_type, str(job_id), shop=shop, fairness=fairness):
            requeued += 1
    if requeued:
        logger.warning("reconciler: re-queued %d stranded job(s)", requeued)
    misplaced = await fair.place_shops(redis, waiting, int(time.time() * 1000), shop_cap)
    if misplaced:
        logger.warning(
            "reconciler: %d shop(s) with waiting jobs were out of the rotation", misplaced
        )
    return requeued


async def delete_expired(database: Database, settings: Settings) -> int:
    deleted = await store.delete_old_jobs(
        database,
        JobStatus.COMPLETED,
        settings.completed_retention_seconds,
        settings.completed_retention_count,
    )
    deleted += await store.delete_old_jobs(
        database,
        JobStatus.FAILED,
        settings.failed_retention_seconds,
        settings.failed_retention_count,
    )
    if deleted:
        logger.info("retention: deleted %d old job(s)", deleted)
    return deleted


async def reconcile(ctx: dict[str, Any]) -> int:
    runtime = ctx["runtime"]
    # Batches whose last child ended where no one looked (its worker died just after) end here.
    await end_batches(runtime, None)
    settings = runtime.settings
    try:
        wrong = await fair.repair(
            runtime.redis, int(time.time() * 1000), settings.shop_concurrency_limit
        )
        if wrong:
            logger.warning("reconciler: repaired the running counts of %d shop(s)", wrong)
        return await requeue_stranded(
            runtime.database,
            runtime.redis,
            settings.reconcile_after_seconds,
            runtime.types,
            settings.queue_fairness,
            settings.shop_concurrency_limit,
        )
    except Exception as exc:  # a dependency is down: the next tick will try again
        logger.warning("reconciler skipped: %s", exc)
        return 0


async def retention(ctx: dict[str, Any]) -> int:
    runtime = ctx["runtime"]
    try:
        await store.prune_webhook_events(runtime.database, WEBHOOK_EVENT_RETENTION_SECONDS)
        return await delete_expired(runtime.database, runtime.settings)
    except Exception as exc:
        logger.warning("retention skipped: %s", exc)
        return 0
