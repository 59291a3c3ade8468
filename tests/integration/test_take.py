"""The take (service/queue/take.py) against the real Redis: round-robin by shop, a shop alone
filling every slot, the cross-worker cap, delays, lapsed leases, entries queued the old way,
dedup, two takers never taking one job, and a cost that does not grow with the backlog."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix

from service import queue
from service.core.settings import Settings
from service.core.states import QueueFinish
from service.queue import Taker, keys
from tests.support.queue_entries import put_on_arq_queue

LEASE_MS = 5000
LOOK_AHEAD = 1000
BIG, SMALL, OTHER = "big.myshopify.com", "small.myshopify.com", "other.myshopify.com"


def now_ms(ahead_seconds: float = 0) -> int:
    return int((time.time() + ahead_seconds) * 1000)


@pytest.fixture
def taker(redis: ArqRedis) -> Taker:
    return Taker(redis)


_order = itertools.count()


async def put(
    redis: ArqRedis,
    shop: str | None,
    n: int = 1,
    delay: float = 0,
    *,
    priority: int = 0,
    job_type: str = "echo",
    key: str | None = None,
) -> list[str]:
    """`n` jobs for `shop`, queued as the web does; due now, one millisecond apart in the order
    they were put (so that order is the due order within a priority), or `delay` seconds from
    now."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    if delay:
        for job_id in ids:
            assert await queue.enqueue(
                redis, job_type, job_id, shop=shop, defer_seconds=delay, priority=priority, key=key
            )
        return ids
    entries = [queue.Entry(job_type, job_id, shop, priority, key) for job_id in ids]
    assert all(await queue.enqueue_many(redis, entries))
    base = now_ms(-100) - priority * keys.RANK_BAND
    await redis.zadd(
        keys.shop_queue(shop), {job_id: base + next(_order) for job_id in ids}, xx=True
    )
    return ids


async def take(taker: Taker, count: int, ahead: float = 0) -> list[str]:
    return [t.job_id for t in await taker.take(count, LEASE_MS, now_ms(ahead), LOOK_AHEAD)]


async def running(redis: ArqRedis, shop: str) -> int:
    return int(await redis.hget(keys.COUNTS, shop) or 0)


async def test_shops_take_turns_whatever_their_backlog(redis: ArqRedis, taker: Taker) -> None:
    big = await put(redis, BIG, 500)
    small = await put(redis, SMALL)
    other = await put(redis, OTHER, 2)
    assert await take(taker, 7) == [big[0], small[0], other[0], big[1], other[1], big[2], big[3]]
    assert await take(taker, 3) == big[4:7]


async def test_a_shop_alone_fills_every_slot(redis: ArqRedis, taker: Taker) -> None:
    ids = await put(redis, BIG, 30)
    assert await take(taker, 25) == ids[:25]
    assert await running(redis, BIG) == 25


async def test_jobs_of_no_shop_take_a_turn_of_their_own(redis: ArqRedis, taker: Taker) -> None:
    big = await put(redis, BIG, 5)
    app = await put(redis, None, 2)
    assert await take(taker, 4) == [big[0], app[0], big[1], app[1]]


async def test_the_cap_holds_across_takers_until_a_job_finishes(
    settings: Settings, redis: ArqRedis
) -> None:
    first = Taker(redis, shop_cap=2)
    second_client = queue.connect(settings.redis_url)
    second = Taker(second_client, shop_cap=2)
    try:
        big = await put(redis, BIG, 10)
        small = await put(redis, SMALL, 3)
        assert await take(first, 10) == [big[0], small[0], big[1], small[1]]
        assert await take(second, 10) == []  # both shops at their cap: skipped, not pushed back
        assert await redis.smembers(keys.CAPPED) == {BIG.encode(), SMALL.encode()}
        await first.finish(queue.done(small[0]))
        assert await take(second, 10) == [small[2]]
        await first.finish(queue.done(big[0]))
        assert await take(second, 10) == [big[2]]
        assert await take(first, 10) == []
        assert await running(redis, BIG) == 2
        assert await redis.zcard(keys.shop_queue(BIG)) == 7  # the backlog was left as it was
    finally:
        await second_client.aclose()


async def test_within_a_shop_jobs_run_in_due_order_and_retries_wait(
    redis: ArqRedis, taker: Taker
) -> None:
    ids = await put(redis, BIG, 3)
    assert await take(taker, 1) == ids[:1]
    await taker.finish(queue.Finish(ids[0], QueueFinish.LATER, now_ms(60)))  # a retry, a minute on
    assert await take(taker, 5) == ids[1:]
    assert await take(taker, 5) == []
    assert await redis.zscore(keys.DELAYED, BIG) is not None  # out of the rotation till then
    assert await take(taker, 5, ahead=61) == ids[:1]


async def test_a_shop_whose_jobs_are_all_later_waits_then_joins(
    redis: ArqRedis, taker: Taker
) -> None:
    later = await put(redis, SMALL, 1, delay=30)
    due = await put(redis, BIG, 2)
    assert await redis.zscore(keys.DELAYED, SMALL) is not None
    assert await take(taker, 5) == due
    assert await take(taker, 5, ahead=31) == later


async def test_a_given_back_job_keeps_its_place(redis: ArqRedis, taker: Taker) -> None:
    ids = await put(redis, BIG, 3)
    assert await take(taker, 2) == ids[:2]
    await taker.finish(queue.give_back(ids[0]))
    assert await running(redis, BIG) == 1
    assert await take(taker, 5) == [ids[0], ids[2]]


async def test_a_lapsed_lease_puts_the_job_back_and_fixes_the_count(
    redis: ArqRedis, taker: Taker
) -> None:
    """Its worker died: the in-progress key lapsed and no finish ever came."""
    dead, alive = await put(redis, BIG, 2)
    assert await take(taker, 2) == [dead, alive]
    await redis.delete(in_progress_key_prefix + dead)  # what the lapse of its lease leaves
    assert await take(taker, 5) == []  # the lease deadline has not passed
    retaken = await take(taker, 5, ahead=LEASE_MS / 1000 + 1)
    assert retaken == [dead]  # alive's lease is still held (its key lives): not taken
    assert await running(redis, BIG) == 2


async def test_entries_queued_the_old_way_still_run(redis: ArqRedis, taker: Taker) -> None:
    """After an upgrade, arq's queue still holds what the previous version queued."""
    old = str(uuid.uuid4())
    await put_on_arq_queue(redis, "echo", old, BIG, now_ms(-1))
    new = await put(redis, BIG)
    assert await take(taker, 5) == [old, *new]
    await taker.finish(queue.done(old))
    assert await redis.zcard(queue.QUEUE_NAME) == 0
    assert not await redis.exists(job_key_prefix + old)


async def test_a_job_is_queued_once_while_it_waits_and_runs(redis: ArqRedis, taker: Taker) -> None:
    (job_id,) = await put(redis, BIG)
    assert not await queue.enqueue(redis, "echo", job_id, shop=BIG)
    assert await take(taker, 5) == [job_id]
    assert not await queue.enqueue(redis, "echo", job_id, shop=BIG)
    await taker.finish(queue.done(job_id))
    assert await queue.enqueue(redis, "echo", job_id, shop=BIG)


async def test_the_depth_counts_every_shops_jobs(redis: ArqRedis, taker: Taker) -> None:
    await put(redis, BIG, 4)
    await put(redis, SMALL, 2, delay=60)
    await take(taker, 1)
    assert await queue.depth(redis) == (6, 4)  # the running one is counted, as arq's queue does


async def test_repair_rebuilds_wrong_counts_and_frees_a_capped_shop(
    redis: ArqRedis,
) -> None:
    taker = Taker(redis, shop_cap=1)
    ids = await put(redis, BIG, 3)
    assert await take(taker, 5) == ids[:1]
    await redis.hset(keys.COUNTS, mapping={BIG: 5, SMALL: 2})  # as if finishes were lost
    assert await queue.repair(redis, 2) == 2
    assert await redis.hgetall(keys.COUNTS) == {BIG.encode(): b"1"}
    assert not await redis.sismember(keys.CAPPED, BIG)
    taker.shop_cap = 2
    assert await take(taker, 5) == ids[1:2]


async def commands(redis: ArqRedis) -> int:
    stats = await redis.info("commandstats")
    return sum(
        int(value["calls"])
        for name, value in stats.items()
        if name not in ("cmdstat_info", "cmdstat_config|resetstat", "cmdstat_config")
    )


async def take_cost(redis: ArqRedis, taker: Taker) -> int:
    """Redis commands (scripts' own calls included) of one take of ten jobs."""
    await redis.config_resetstat()
    before = await commands(redis)
    assert len(await take(taker, 10)) == 10
    return await commands(redis) - before


async def test_a_take_costs_the_same_whatever_the_backlog(redis: ArqRedis, taker: Taker) -> None:
    """Ten jobs of ten shops beside one shop's backlog of 100, then of 5,100: the same number
    of Redis commands (no scan of anyone's backlog, no rescoring)."""
    shops = [BIG] + [f"shop-{index}.myshopify.com" for index in range(9)]
    for shop in shops:
        await put(redis, shop, 100)
    await take(taker, 10)  # the script loaded, every shop has had its first turn
    small = await take_cost(redis, taker)
    for _ in range(5):
        await put(redis, BIG, 1000)
    assert await take_cost(redis, taker) == small


async def test_a_job_held_by_an_arq_worker_is_not_taken(redis: ArqRedis, taker: Taker) -> None:
    """The in-progress key is arq's own: an entry of arq's queue that arq's run_job holds (a
    cron tick) is left alone."""
    held, free = str(uuid.uuid4()), str(uuid.uuid4())
    await put_on_arq_queue(redis, "echo", held, BIG, now_ms(-2))
    await put_on_arq_queue(redis, "echo", free, BIG, now_ms(-1))
    await redis.set(keys.HELD + held, b"1", px=LEASE_MS)
    assert await take(taker, 5) == [free]


async def test_two_takers_racing_never_take_the_same_job(
    settings: Settings, redis: ArqRedis
) -> None:
    shops = [f"race-{index}.myshopify.com" for index in range(6)]
    ids = {job_id for shop in shops for job_id in await put(redis, shop, 10)}
    clients = [queue.connect(settings.redis_url) for _ in range(2)]
    takers = [Taker(client) for client in clients]
    taken: list[list[str]] = [[], []]

    async def take_all(index: int) -> None:
        while True:
            got = await take(takers[index], 3)
            if not got:
                return
            taken[index] += got
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(take_all(i) for i in (0, 1, 0, 1)))
    finally:
        for client in clients:
            await client.aclose()
    assert taken[0] and taken[1]
    assert len(taken[0]) + len(taken[1]) == len(ids)
    assert set(taken[0]) | set(taken[1]) == ids


async def test_within_a_shop_higher_priority_goes_first(redis: ArqRedis, taker: Taker) -> None:
    """A merchant's job behind a thousand background jobs of its shop is the next one taken;
    within a priority, due order."""
    background = await put(redis, BIG, 1000)
    merchant = await put(redis, BIG, 2, priority=5)
    urgent = await put(redis, BIG, priority=9)
    assert await take(taker, 4) == [*urgent, *merchant, background[0]]


async def test_priority_does_not_cut_across_shops(redis: ArqRedis, taker: Taker) -> None:
    big = await put(redis, BIG, 3, priority=9)
    small = await put(redis, SMALL, 2)
    assert await take(taker, 4) == [big[0], small[0], big[1], small[1]]


async def test_a_delayed_job_keeps_its_priority_when_it_comes_due(
    redis: ArqRedis, taker: Taker
) -> None:
    later = await put(redis, BIG, delay=1, priority=7)
    now = await put(redis, BIG, 2)
    assert await take(taker, 1) == now[:1]
    assert await take(taker, 5, ahead=2) == [*later, now[1]]


async def test_a_paused_shop_sits_out_until_resumed(redis: ArqRedis, taker: Taker) -> None:
    paused = await put(redis, BIG, 2)
    other = await put(redis, SMALL)
    await queue.pause_shop(redis, BIG)
    more = await put(redis, BIG)  # queued while paused: waits too
    assert await take(taker, 10) == other
    assert await take(taker, 10) == []
    assert await queue.paused_shops(redis) == {BIG}
    assert await queue.depth(redis) == (4, 4)  # a paused shop's 3 are counted, and 1 running
    assert await queue.resume_shop(redis, BIG)
    assert await take(taker, 10) == [*paused, *more]
    assert not await queue.resume_shop(redis, BIG)  # not paused any more


async def test_a_type_at_its_cap_is_held_back_until_one_of_its_jobs_ends(
    redis: ArqRedis, settings: Settings
) -> None:
    capped = Taker(redis, type_caps={"export": 2})
    exports = await put(redis, BIG, 3, job_type="export")
    exports += await put(redis, SMALL, 2, job_type="export")
    echoes = await put(redis, OTHER, 2)
    got = await take(capped, 10)
    assert got[:2] == [exports[0], exports[3]]  # one per shop's turn, two in all
    assert sorted(got[2:]) == sorted(echoes)  # the cap holds exports back, nothing else
    assert await take(capped, 10) == []
    assert await redis.hget(keys.CAP_COUNTS, "t:export") == b"2"
    await capped.finish(queue.done(exports[0]))
    assert await take(capped, 10) == [exports[1]]  # the one held back longest, with room
    await capped.finish(queue.give_back(exports[1]))  # a give-back frees its place too
    await capped.finish(queue.done(exports[3]))
    assert sorted(await take(capped, 10)) == sorted([exports[1], exports[4]])


async def test_one_key_runs_one_job_at_a_time_per_shop(redis: ArqRedis) -> None:
    keyed = Taker(redis, key_caps={"sync": 1})
    first = await put(redis, BIG, job_type="sync", key="product-1")
    second = await put(redis, BIG, job_type="sync", key="product-1")
    other_product = await put(redis, BIG, job_type="sync", key="product-2")
    other_shop = await put(redis, SMALL, job_type="sync", key="product-1")
    assert sorted(await take(keyed, 10)) == sorted([*first, *other_product, *other_shop])
    assert await take(keyed, 10) == []  # the second of product-1 in BIG waits for the first
    await keyed.finish(queue.done(first[0]))
    assert await take(keyed, 10) == second


async def test_repair_releases_what_a_cap_with_room_holds_back(redis: ArqRedis) -> None:
    capped = Taker(redis, type_caps={"export": 1})
    exports = await put(redis, BIG, 2, job_type="export")
    assert await take(capped, 10) == exports[:1]
    assert await take(capped, 10) == []  # the second is held back
    await redis.hset(keys.CAP_COUNTS, "t:export", 5)  # as if a finish were lost
    assert await queue.repair(redis, 0, {"export": 1}) >= 1
    assert await redis.hget(keys.CAP_COUNTS, "t:export") == b"1"  # rebuilt from the taken
    assert await take(capped, 10) == []
    assert await queue.repair(redis, 0, {"export": 2}) == 0  # a raised cap makes room
    assert await take(Taker(redis, type_caps={"export": 2}), 10) == exports[1:]


async def test_a_wake_during_the_run_that_suspends_is_not_lost(
    redis: ArqRedis, taker: Taker
) -> None:
    (job_id,) = await put(redis, BIG)
    assert await take(taker, 1) == [job_id]
    assert await queue.wake(redis, "echo", job_id, shop=BIG)  # while the run still ends
    await taker.finish(queue.later(job_id, 600))  # it decided to wait ten minutes
    assert await take(taker, 1) == [job_id]  # due now: the wake held


async def test_enqueue_many_loads_the_script_again_when_redis_lost_it(redis: ArqRedis) -> None:
    """One round trip per group: no SCRIPT EXISTS first; a Redis that lost its scripts (a
    restart, SCRIPT FLUSH) gets the text once and every job of the group is queued."""
    await queue.enqueue_many(redis, [("echo", str(uuid.uuid4()), SMALL)])
    await redis.config_resetstat()
    assert await queue.enqueue_many(redis, [("echo", str(uuid.uuid4()), SMALL)]) == [True]
    stats = await redis.info("commandstats")
    assert "cmdstat_script|exists" not in stats and "cmdstat_script" not in stats
    await redis.script_flush()
    ids = [str(uuid.uuid4()) for _ in range(3)]
    assert await queue.enqueue_many(redis, [("echo", i, BIG) for i in ids]) == [True] * 3
    assert await queue.enqueue_many(redis, [("echo", ids[0], BIG)]) == [False]  # deduplicated
    assert await redis.zcard(keys.SHOP_QUEUE_PREFIX + BIG) == 3
