"""Polling running bulk operations for the jobs that wait on them, without running the jobs.

A job whose bulk operation runs on Shopify suspends (service/shopify/bulk.py). When its shop
delivers `bulk_operations/finish`, the webhook wakes it. Otherwise someone must ask Shopify
until the operation ends; if the job itself asked, each poll would run the handler again and
hold a worker slot for that time. So the job schedules a poll (bulk_slots.schedule_poll) and
this loop, one per worker process, asks Shopify (`node(id:)`, 1 cost point) when each poll is
due, with the same backoff (a quarter of the time waited, 1 s to 30 s). When the operation has
ended it signals the finish as the webhook would, and wakes the job (service/wakes.py), which
reads the outcome in its next run. A poll that fails (Shopify down, a token gone) comes back
after the claim's CLAIM_POLL_SECONDS; the job's own look-again (bulk.LOOK_AGAIN_SECONDS) covers
a poll lost with Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time

from service import store, wakes
from service.shopify import bulk, bulk_slots
from service.shopify.admin import AdminClient, ShopAdmin

logger = logging.getLogger("shopjobs.worker")

INTERVAL_SECONDS = 0.5
POLLS_AT_ONCE = 20
SHOPS_KEPT = 1000  # shops' Admin API handles kept (their tokens read once, not once per poll)

_admins: dict[tuple[int, str], ShopAdmin] = {}


def _admin(client: AdminClient, shop: str) -> ShopAdmin:
    key = (id(client), shop)
    if key not in _admins:
        if len(_admins) >= SHOPS_KEPT:
            _admins.clear()
        _admins[key] = client.admin_for(shop)
    return _admins[key]


async def poll(client: AdminClient, shop: str, operation_id: str) -> bool:
    """Ask Shopify about one operation; if it has ended, wake its job. True if it ended."""
    redis = client.redis
    data = await _admin(client, shop).graphql(bulk.NODE, {"id": operation_id}, cost=bulk.NODE_COST)
    node = data.get("node")
    status = str(node.get("status")) if isinstance(node, dict) and node.get("id") else "GONE"
    if status in bulk.RUNNING:
        waited = time.time() - await bulk_slots.waiting_since(redis, operation_id)
        await bulk_slots.schedule_poll(redis, shop, operation_id, bulk.poll_delay(waited))
        return False
    await bulk_slots.signal_finished(redis, operation_id, status)
    woken = await wakes.wake_bulk_operation(client.database, redis, operation_id)
    await bulk_slots.drop_poll(redis, shop, operation_id)
    logger.info(
        "bulk operation %s of %s ended (%s): %d job(s) woken", operation_id, shop, status, woken
    )
    return True


async def poll_due(client: AdminClient, limit: int = POLLS_AT_ONCE) -> int:
    """Poll the operations whose poll is due (at most `limit`); how many were polled."""
    due = await bulk_slots.claim_polls(client.redis, limit)
    outcomes = await asyncio.gather(
        *(poll(client, shop, operation_id) for shop, operation_id in due), return_exceptions=True
    )
    for (shop, operation_id), outcome in zip(due, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            await _failed(client, shop, operation_id, outcome)
    return len(due)


async def _failed(client: AdminClient, shop: str, operation_id: str, error: BaseException) -> None:
    """A poll that failed comes back after its claim, unless no job waits for it any more (the
    job failed, was cancelled, or its shop was uninstalled): then it is dropped."""
    try:
        if not await store.bulk_operation_awaited(client.database, operation_id):
            await bulk_slots.drop_poll(client.redis, shop, operation_id)
            return
    except Exception as exc:
        logger.warning("bulk operation %s of %s: poll not checked (%r)", operation_id, shop, exc)
    logger.warning(
        "bulk operation %s of %s not polled (again in %gs): %r",
        operation_id,
        shop,
        bulk_slots.CLAIM_POLL_SECONDS,
        error,
    )


async def watch(client: AdminClient) -> None:
    """Run for the life of the worker: poll what is due every INTERVAL_SECONDS."""
    while True:
        await asyncio.sleep(INTERVAL_SECONDS)
        try:
            await poll_due(client)
        except Exception as exc:  # Redis down: the next tick tries again
            logger.warning("bulk polls not claimed: %r", exc)
