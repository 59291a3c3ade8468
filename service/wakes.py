"""Waking suspended jobs: a row made due now in Postgres, then its queue entry in Redis.

Postgres first: if Redis loses the entry, or the process dies between the two, the row says
the job is due and the reconciler queues it (jobs/worker/maintenance.py). Used by
`JobsClient.send_event`, the `bulk_operations/finish` webhook and a freed bulk slot.
"""

from __future__ import annotations

import logging

from databases import Database
from redis.asyncio import Redis

from service import queue, store

logger = logging.getLogger("shopjobs.waits")


async def _requeue(redis: Redis, woken: list[store.Woken], why: str) -> int:
    for job in woken:
        try:
            await queue.wake(redis, job.type, str(job.id), shop=job.shop)
        except Exception as exc:  # Redis down: the row is due, the reconciler queues it
            logger.warning("job %s (%s) not woken now: %r", job.id, why, exc)
    return len(woken)


async def wake_event(database: Database, redis: Redis, shop_id: int, name: str) -> int:
    """The shop's jobs waiting for event `name`; how many."""
    woken = await store.wake_event_waiters(database, shop_id, name)
    return await _requeue(redis, woken, f"event {name!r}")


async def wake_bulk_operation(database: Database, redis: Redis, operation_id: str) -> int:
    """The job waiting for this bulk operation to finish; how many (0 or 1)."""
    woken = await store.wake_bulk_waiters(database, operation_id)
    return await _requeue(redis, woken, f"bulk operation {operation_id}")


async def wake_slot(database: Database, redis: Redis, shop: str, kind: str, limit: int) -> int:
    """Up to `limit` of the shop's jobs waiting for a bulk slot of `kind`; how many."""
    woken = await store.wake_slot_waiters(database, shop, kind, limit)
    return await _requeue(redis, woken, f"bulk slot {kind}")
