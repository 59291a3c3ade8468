"""The FIFO take script (jobs/worker/claims.py, QUEUE_FAIRNESS=fifo) against the real Redis:
what it takes, in what order, what it leaves, and that two takers never take the same job.
The fair take has its own tests (test_fair_take.py)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix

from jobs.worker.claims import SHOP_BUSY_PUSH_BACK_MS, Finish, QueueClaims
from service.core import queue
from service.core.fair import QueueFairness
from service.core.settings import Settings
from service.core.states import QueueFinish

NOW_MS = 1_000_000_000  # the take's clock is an argument: scores are set relative to it
LEASE_MS = 3000
LOOK_AHEAD = 1000


@pytest.fixture
def claims(redis: ArqRedis) -> QueueClaims:
    return QueueClaims(redis, queue.QUEUE_NAME, fairness=QueueFairness.FIFO)


async def put(redis: ArqRedis, score: int, shop: str = "claims-shop.myshopify.com") -> str:
    """A queue entry as the web writes it (arq's payload and key), due at `score` (ms)."""
    job_id = str(uuid.uuid4())
    assert await queue.enqueue(redis, "echo", job_id, shop=shop, fairness=QueueFairness.FIFO)
    await redis.zadd(queue.QUEUE_NAME, {job_id: score}, xx=True)
    return job_id


async def test_due_jobs_are_taken_in_score_order_and_later_ones_left(
    redis: ArqRedis, claims: QueueClaims
) -> None:
    third = await put(redis, NOW_MS - 1000)
    first = await put(redis, NOW_MS - 3000)
    later = await put(redis, NOW_MS + 1)
    second = await put(redis, NOW_MS - 2000)
    taken = await claims.take(10, LEASE_MS, NOW_MS, LOOK_AHEAD)
    assert [t.job_id for t in taken] == [first, second, third]
    assert [t.score for t in taken] == [NOW_MS - 3000, NOW_MS - 2000, NOW_MS - 1000]
    for t in taken:
        assert t.payload == await redis.get(job_key_prefix + t.job_id)
        assert queue.deserialize(t.payload or b"")["f"] == "echo"
    assert not await redis.exists(in_progress_key_prefix + later)
    # Taken entries stay queued (their finish removes them); only the in-progress key changed.
    assert await redis.zcard(queue.QUEUE_NAME) == 4


async def test_a_batch_takes_no_more_than_asked(redis: ArqRedis, claims: QueueClaims) -> None:
    ids = [await put(redis, NOW_MS - 100 * (5 - i)) for i in range(5)]
    taken = await claims.take(2, LEASE_MS, NOW_MS, LOOK_AHEAD)
    assert [t.job_id for t in taken] == ids[:2]
    for job_id in ids[2:]:
        assert not await redis.exists(in_progress_key_prefix + job_id)
    rest = await claims.take(10, LEASE_MS, NOW_MS, LOOK_AHEAD)
    assert [t.job_id for t in rest] == ids[2:]


async def test_a_taken_job_is_held_for_one_lease(redis: ArqRedis, claims: QueueClaims) -> None:
    job_id = await put(redis, NOW_MS - 1)
    await claims.take(1, LEASE_MS, NOW_MS, LOOK_AHEAD)
    ttl = await redis.pttl(in_progress_key_prefix + job_id)
    assert LEASE_MS - 500 < ttl <= LEASE_MS


async def test_a_job_in_progress_is_not_taken_twice(redis: ArqRedis, claims: QueueClaims) -> None:
    job_id = await put(redis, NOW_MS - 1)
    assert [t.job_id for t in await claims.take(5, LEASE_MS, NOW_MS, LOOK_AHEAD)] == [job_id]
    assert await claims.take(5, LEASE_MS, NOW_MS, LOOK_AHEAD) == []
    await claims.finish(
        Finish(job_id, QueueFinish.GIVE_BACK)
    )  # its in-progress key dropped: takeable
    assert [t.job_id for t in await claims.take(5, LEASE_MS, NOW_MS, LOOK_AHEAD)] == [job_id]


async def test_a_job_held_by_an_arq_worker_is_not_taken(
    redis: ArqRedis, claims: QueueClaims
) -> None:
    """The in-progress key is arq's own: a job arq's run_job holds is left alone too."""
    held = await put(redis, NOW_MS - 2)
    free = await put(redis, NOW_MS - 1)
    await redis.set(in_progress_key_prefix + held, b"1", px=LEASE_MS)
    assert [t.job_id for t in await claims.take(5, LEASE_MS, NOW_MS, LOOK_AHEAD)] == [free]


async def test_a_shop_at_its_cap_is_pushed_back_not_taken(
    redis: ArqRedis, claims: QueueClaims
) -> None:
    pushed: list[str] = []
    claims.on_push_back = pushed.append
    busy = await put(redis, NOW_MS - 2, shop="busy.myshopify.com")
    other = await put(redis, NOW_MS - 1, shop="calm.myshopify.com")
    claims.shop_cap = 2
    taken = await claims.take(
        5, LEASE_MS, NOW_MS, LOOK_AHEAD, running_by_shop={"busy.myshopify.com": 2}
    )
    assert [t.job_id for t in taken] == [other]
    assert pushed == ["echo"]
    assert await redis.zscore(queue.QUEUE_NAME, busy) == NOW_MS + SHOP_BUSY_PUSH_BACK_MS
    assert not await redis.exists(in_progress_key_prefix + busy)


async def test_two_takers_racing_never_take_the_same_job(
    settings: Settings, redis: ArqRedis
) -> None:
    ids = {await put(redis, NOW_MS - i) for i in range(60)}
    clients = [queue.connect(settings.redis_url) for _ in range(2)]
    takers = [
        QueueClaims(client, queue.QUEUE_NAME, fairness=QueueFairness.FIFO) for client in clients
    ]
    taken: list[list[str]] = [[], []]

    async def take_all(index: int) -> None:
        while True:
            batch = await takers[index].take(3, LEASE_MS, NOW_MS, LOOK_AHEAD)
            if not batch:
                return
            taken[index] += [t.job_id for t in batch]
            await asyncio.sleep(0)

    try:
        await asyncio.gather(*(take_all(i) for i in (0, 1, 0, 1)))
    finally:
        for client in clients:
            await client.aclose()
    assert taken[0] and taken[1]
    assert len(taken[0]) + len(taken[1]) == len(ids)
    assert set(taken[0]) | set(taken[1]) == ids
