"""The fair take (service/core/fair.py through jobs/worker/claims.py) against the real Redis:
round-robin by shop, a shop alone filling every slot, the cross-worker cap, delays, lapsed
leases, entries queued the old way, dedup, and a cost that does not grow with the backlog."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix

from jobs.worker.claims import Finish, QueueClaims
from service.core import fair, queue
from service.core.fair import QueueFairness
from service.core.settings import Settings
from service.core.states import QueueFinish

LEASE_MS = 5000
LOOK_AHEAD = 1000
BIG, SMALL, OTHER = "big.myshopify.com", "small.myshopify.com", "other.myshopify.com"


def now_ms(ahead_seconds: float = 0) -> int:
    return int((time.time() + ahead_seconds) * 1000)


@pytest.fixture
def claims(redis: ArqRedis) -> QueueClaims:
    return QueueClaims(redis, queue.QUEUE_NAME)


_order = itertools.count()


async def put(redis: ArqRedis, shop: str | None, n: int = 1, delay: float = 0) -> list[str]:
    """`n` jobs for `shop`, queued as the web does; due now, one millisecond apart in the order
    they were put (so that order is the due order), or `delay` seconds from now."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    if delay:
        for job_id in ids:
            assert await queue.enqueue(redis, "echo", job_id, shop=shop, defer_seconds=delay)
        return ids
    assert all(await queue.enqueue_many(redis, [("echo", job_id, shop) for job_id in ids]))
    base = now_ms(-100)
    await redis.zadd(
        fair.shop_queue(shop), {job_id: base + next(_order) for job_id in ids}, xx=True
    )
    return ids


async def take(claims: QueueClaims, count: int, ahead: float = 0) -> list[str]:
    return [t.job_id for t in await claims.take(count, LEASE_MS, now_ms(ahead), LOOK_AHEAD)]


async def running(redis: ArqRedis, shop: str) -> int:
    return int(await redis.hget(fair.COUNTS, shop) or 0)


async def test_shops_take_turns_whatever_their_backlog(
    redis: ArqRedis, claims: QueueClaims
) -> None:
    big = await put(redis, BIG, 500)
    small = await put(redis, SMALL)
    other = await put(redis, OTHER, 2)
    assert await take(claims, 7) == [big[0], small[0], other[0], big[1], other[1], big[2], big[3]]
    assert await take(claims, 3) == big[4:7]


async def test_a_shop_alone_fills_every_slot(redis: ArqRedis, claims: QueueClaims) -> None:
    ids = await put(redis, BIG, 30)
    assert await take(claims, 25) == ids[:25]
    assert await running(redis, BIG) == 25


async def test_jobs_of_no_shop_take_a_turn_of_their_own(
    redis: ArqRedis, claims: QueueClaims
) -> None:
    big = await put(redis, BIG, 5)
    app = await put(redis, None, 2)
    assert await take(claims, 4) == [big[0], app[0], big[1], app[1]]


async def test_the_cap_holds_across_takers_until_a_job_finishes(
    settings: Settings, redis: ArqRedis
) -> None:
    first = QueueClaims(redis, queue.QUEUE_NAME, shop_cap=2)
    second_client = queue.connect(settings.redis_url)
    second = QueueClaims(second_client, queue.QUEUE_NAME, shop_cap=2)
    try:
        big = await put(redis, BIG, 10)
        small = await put(redis, SMALL, 3)
        assert await take(first, 10) == [big[0], small[0], big[1], small[1]]
        assert await take(second, 10) == []  # both shops at their cap: skipped, not pushed back
        assert await redis.smembers(fair.CAPPED) == {BIG.encode(), SMALL.encode()}
        await first.finish(Finish(small[0], QueueFinish.DONE))
        assert await take(second, 10) == [small[2]]
        await first.finish(Finish(big[0], QueueFinish.DONE))
        assert await take(second, 10) == [big[2]]
        assert await take(first, 10) == []
        assert await running(redis, BIG) == 2
        assert await redis.zcard(fair.shop_queue(BIG)) == 7  # the backlog was left as it was
    finally:
        await second_client.aclose()


async def test_within_a_shop_jobs_run_in_due_order_and_retries_wait(
    redis: ArqRedis, claims: QueueClaims
) -> None:
    ids = await put(redis, BIG, 3)
    assert await take(claims, 1) == ids[:1]
    await claims.finish(Finish(ids[0], QueueFinish.LATER, now_ms(60)))  # a retry, a minute on
    assert await take(claims, 5) == ids[1:]
    assert await take(claims, 5) == []
    assert await redis.zscore(fair.DELAYED, BIG) is not None  # out of the rotation till then
    assert await take(claims, 5, ahead=61) == ids[:1]


async def test_a_shop_whose_jobs_are_all_later_waits_then_joins(
    redis: ArqRedis, claims: QueueClaims
) -> None:
    later = await put(redis, SMALL, 1, delay=30)
    due = await put(redis, BIG, 2)
    assert await redis.zscore(fair.DELAYED, SMALL) is not None
    assert await take(claims, 5) == due
    assert await take(claims, 5, ahead=31) == later


async def test_a_given_back_job_keeps_its_place(redis: ArqRedis, claims: QueueClaims) -> None:
    ids = await put(redis, BIG, 3)
    assert await take(claims, 2) == ids[:2]
    await claims.finish(Finish(ids[0], QueueFinish.GIVE_BACK))
    assert await running(redis, BIG) == 1
    assert await take(claims, 5) == [ids[0], ids[2]]


async def test_a_lapsed_lease_puts_the_job_back_and_fixes_the_count(
    redis: ArqRedis, claims: QueueClaims
) -> None:
    """Its worker died: the in-progress key lapsed and no finish ever came."""
    dead, alive = await put(redis, BIG, 2)
    assert await take(claims, 2) == [dead, alive]
    await redis.delete(in_progress_key_prefix + dead)  # what the lapse of its lease leaves
    assert await take(claims, 5) == []  # the lease deadline has not passed
    retaken = await take(claims, 5, ahead=LEASE_MS / 1000 + 1)
    assert retaken == [dead]  # alive's lease is still held (its key lives): not taken
    assert await running(redis, BIG) == 2


async def test_entries_queued_the_old_way_still_run(redis: ArqRedis, claims: QueueClaims) -> None:
    """After an upgrade, arq's queue still holds what the previous version queued."""
    old = str(uuid.uuid4())
    assert await queue.enqueue(redis, "echo", old, shop=BIG, fairness=QueueFairness.FIFO)
    new = await put(redis, BIG)
    assert await take(claims, 5) == [old, *new]
    await claims.finish(Finish(old, QueueFinish.DONE))
    assert await redis.zcard(queue.QUEUE_NAME) == 0
    assert not await redis.exists(job_key_prefix + old)


async def test_a_job_is_queued_once_while_it_waits_and_runs(
    redis: ArqRedis, claims: QueueClaims
) -> None:
    (job_id,) = await put(redis, BIG)
    assert not await queue.enqueue(redis, "echo", job_id, shop=BIG)
    assert await take(claims, 5) == [job_id]
    assert not await queue.enqueue(redis, "echo", job_id, shop=BIG)
    await claims.finish(Finish(job_id, QueueFinish.DONE))
    assert await queue.enqueue(redis, "echo", job_id, shop=BIG)


async def test_the_depth_counts_every_shops_jobs(redis: ArqRedis, claims: QueueClaims) -> None:
    await put(redis, BIG, 4)
    await put(redis, SMALL, 2, delay=60)
    await take(claims, 1)
    assert await queue.depth(redis) == (6, 4)  # the running one is counted, as arq's queue does


async def test_repair_rebuilds_wrong_counts_and_frees_a_capped_shop(
    redis: ArqRedis,
) -> None:
    claims = QueueClaims(redis, queue.QUEUE_NAME, shop_cap=1)
    ids = await put(redis, BIG, 3)
    assert await take(claims, 5) == ids[:1]
    await redis.hset(fair.COUNTS, mapping={BIG: 5, SMALL: 2})  # as if finishes were lost
    assert await fair.repair(redis, now_ms(), 2) == 2
    assert await redis.hgetall(fair.COUNTS) == {BIG.encode(): b"1"}
    assert not await redis.sismember(fair.CAPPED, BIG)
    claims.shop_cap = 2
    assert await take(claims, 5) == ids[1:2]


async def commands(redis: ArqRedis) -> int:
    stats = await redis.info("commandstats")
    return sum(
        int(value["calls"])
        for name, value in stats.items()
        if name not in ("cmdstat_info", "cmdstat_config|resetstat", "cmdstat_config")
    )


async def take_cost(redis: ArqRedis, claims: QueueClaims) -> int:
    """Redis commands (scripts' own calls included) of one take of ten jobs."""
    await redis.config_resetstat()
    before = await commands(redis)
    assert len(await take(claims, 10)) == 10
    return await commands(redis) - before


async def test_a_take_costs_the_same_whatever_the_backlog(
    redis: ArqRedis, claims: QueueClaims
) -> None:
    """Ten jobs of ten shops beside one shop's backlog of 100, then of 5,100: the same number
    of Redis commands (no scan of anyone's backlog, no rescoring)."""
    shops = [BIG] + [f"shop-{index}.myshopify.com" for index in range(9)]
    for shop in shops:
        await put(redis, shop, 100)
    await take(claims, 10)  # the script loaded, every shop has had its first turn
    small = await take_cost(redis, claims)
    for _ in range(5):
        await put(redis, BIG, 1000)
    assert await take_cost(redis, claims) == small
