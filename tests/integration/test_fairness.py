"""Fair scheduling across shops with real worker processes, Postgres and Redis.

What ran when is read back from Postgres (each job's `created_at`, `started_at` and
`finished_at`, all on Postgres' clock), and the assertions are on order and overlap, never on
how long anything took: a slower machine runs the same order.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import orjson
from arq.connections import ArqRedis
from databases import Database

from jobs.builtin.echo import JOB_TYPE as ECHO
from jobs.worker import maintenance
from service import queue, store
from service.queue import Taker, keys
from tests.support.jobs import add_job, make_shop, wait_all, wait_for_status
from tests.support.processes import start_worker
from tests.support.queue_entries import put_on_arq_queue, queue_entries


async def add_jobs(
    database: Database,
    redis: ArqRedis,
    shop: store.Shop,
    n: int,
    sleep_ms: int,
    *,
    old_way: bool = False,
) -> list[uuid.UUID]:
    """`n` echo jobs of `shop` (rows, then queue entries in one pipeline per thousand); with
    `old_way`, on arq's one queue, as a release before per-shop queues put them."""
    job_input = orjson.dumps({"message": "x", "sleep_ms": sleep_ms}).decode()
    rows = await database.fetch_all(
        """INSERT INTO jobs (id, shop_id, type, input)
           SELECT gen_random_uuid(), :shop, 'echo', CAST(:input AS jsonb)
             FROM generate_series(1, :n) RETURNING id""",
        {"shop": shop.id, "input": job_input, "n": n},
    )
    ids = [row["id"] for row in rows]
    if old_way:
        for job_id in ids:
            await put_on_arq_queue(redis, "echo", str(job_id), shop.domain, int(time.time() * 1000))
        return ids
    for start in range(0, n, 1000):
        chunk = [("echo", str(job_id), shop.domain) for job_id in ids[start : start + 1000]]
        assert all(await queue.enqueue_many(redis, chunk))
    return ids


async def count(database: Database, sql: str, **values: object) -> int:
    return int(await database.fetch_val(sql, values))


async def most_at_once(database: Database, ids: list[uuid.UUID]) -> int:
    """The most of these jobs that were running at the same moment (start..finish in Postgres)."""
    return await count(
        database,
        """SELECT coalesce(max(n), 0) FROM (
               SELECT (SELECT count(*) FROM jobs AS other
                        WHERE other.id = ANY(:ids)
                          AND other.started_at <= j.started_at
                          AND other.finished_at > j.started_at) AS n
                 FROM jobs AS j WHERE j.id = ANY(:ids)) AS spans""",
        ids=ids,
    )


async def test_other_shops_run_within_a_round_of_a_big_backlog(
    env, spawn, database: Database, redis: ArqRedis
) -> None:
    concurrency = 4
    big = await make_shop(database, "big.myshopify.com")
    small = [await make_shop(database, f"small-{n}.myshopify.com") for n in range(10)]
    backlog = await add_jobs(database, redis, big, 3000, sleep_ms=20)
    start_worker(spawn, env, worker_concurrency=concurrency)
    # The backlog is draining: then one job for each small shop arrives.
    deadline = time.monotonic() + 60
    while await count(database, "SELECT count(*) FROM jobs WHERE status = 'completed'") < 50:
        assert time.monotonic() < deadline, "the backlog never started draining"
        await asyncio.sleep(0.05)
    arrivals = [(await add_jobs(database, redis, shop, 1, sleep_ms=0))[0] for shop in small]
    big_started_before = await count(
        database,
        "SELECT count(*) FROM jobs WHERE shop_id = :big AND started_at IS NOT NULL",
        big=big.id,
    )
    await wait_all(database, arrivals, timeout=60)
    started_meanwhile = await count(
        database,
        """SELECT count(*) FROM jobs WHERE shop_id = :big
              AND started_at <= (SELECT max(started_at) FROM jobs WHERE id = ANY(:arrivals))""",
        big=big.id,
        arrivals=arrivals,
    )
    # Within a round: the big shop got no more than its turns while eleven shops took theirs
    # (plus the slots already being filled when the small jobs arrived). In arrival order,
    # each would have waited for the rest of the backlog: thousands of jobs.
    assert started_meanwhile - big_started_before <= 3 * concurrency
    assert started_meanwhile < len(backlog) / 2


async def test_a_shop_alone_uses_every_slot(env, spawn, database: Database, redis) -> None:
    shop = await make_shop(database)
    ids = await add_jobs(database, redis, shop, 10, sleep_ms=2000)
    start_worker(spawn, env, worker_concurrency=5)
    await wait_all(database, ids, timeout=60)
    assert await most_at_once(database, ids) == 5


async def test_the_shop_cap_holds_across_two_workers(
    env, spawn, database: Database, redis: ArqRedis
) -> None:
    busy = await make_shop(database, "busy.myshopify.com")
    calm = await make_shop(database, "calm.myshopify.com")
    busy_ids = await add_jobs(database, redis, busy, 8, sleep_ms=800)
    calm_ids = await add_jobs(database, redis, calm, 4, sleep_ms=800)
    for _ in range(2):
        start_worker(spawn, {**env}, worker_concurrency=3, shop_concurrency_limit=2)
    await wait_all(database, busy_ids + calm_ids, timeout=90)
    assert await most_at_once(database, busy_ids) == 2  # reached, never passed
    assert await most_at_once(database, calm_ids) == 2
    assert await redis.hgetall(keys.COUNTS) == {}
    assert await redis.scard(keys.CAPPED) == 0


async def test_jobs_queued_by_the_previous_version_still_run(
    env, spawn, database: Database, redis: ArqRedis
) -> None:
    """The previous version queued on arq's one queue; the upgraded worker takes those too."""
    shop = await make_shop(database)
    old = await add_jobs(database, redis, shop, 20, sleep_ms=0, old_way=True)
    assert await redis.zcard(queue.QUEUE_NAME) == 20
    new = await add_jobs(database, redis, shop, 5, sleep_ms=0)
    start_worker(spawn, env, worker_concurrency=4)
    await wait_all(database, old + new, timeout=60)
    # Nothing of theirs is left in Redis (arq's cron entries come and go beside them: compared
    # with a second read of arq's queue, one taken in between made this test flaky).
    left = {entry for entry in await queue_entries(redis) if not entry.startswith("cron:")}
    assert left == set()


async def test_a_worker_told_fifo_starts_and_takes_by_shop(
    env, spawn, database: Database, redis
) -> None:
    """QUEUE_FAIRNESS=fifo is retired: a deployment that still sets it keeps running, by shop."""
    shop = await make_shop(database)
    worker = start_worker(spawn, env, queue_fairness="fifo")
    job_id = await add_job(database, redis, shop, {"message": "hi"})
    await wait_for_status(database, job_id, {"completed"})
    assert str(job_id).encode() not in await redis.zrange(queue.QUEUE_NAME, 0, -1)
    assert "QUEUE_FAIRNESS=fifo is retired" in worker.output


async def test_a_killed_workers_job_runs_again_and_its_shop_is_not_left_capped(
    env, spawn, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database)
    ids = await add_jobs(database, redis, shop, 2, sleep_ms=3000)
    doomed = start_worker(spawn, env, shop_concurrency_limit=1, job_lease_seconds=1)
    deadline = time.monotonic() + 30
    while not (running := await database.fetch_all(
        "SELECT id, attempts FROM jobs WHERE status = 'processing'"
    )):  # fmt: skip
        assert time.monotonic() < deadline, "no job started"
        await asyncio.sleep(0.05)
    doomed.signal(signal.SIGKILL)
    doomed.wait(10)
    assert len(running) == 1  # the cap: one at a time
    killed = running[0]["id"]
    assert await redis.hget(keys.COUNTS, shop.domain) == b"1"  # the dead worker's run
    start_worker(spawn, env, shop_concurrency_limit=1, job_lease_seconds=1)
    await wait_all(database, ids, timeout=60)
    rerun = await store.get_job(database, killed)
    assert rerun is not None and rerun.attempts == 2
    assert await redis.hgetall(keys.COUNTS) == {}
    assert await redis.scard(keys.CAPPED) == 0


async def test_the_reconciler_puts_a_shop_left_out_of_the_rotation_back(
    database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database)
    (job_id,) = await add_jobs(database, redis, shop, 1, sleep_ms=0)
    await redis.zrem(keys.READY, shop.domain)  # as a script cut short (out of memory) could
    await database.execute(
        "UPDATE jobs SET updated_at = now() - interval '5 minutes' WHERE id = :id", {"id": job_id}
    )
    taker = Taker(redis)

    async def take() -> list[str]:
        return [t.job_id for t in await taker.take(5, 5000, int(time.time() * 1000), 100)]

    assert await take() == []  # queued, but where no take looks
    assert await maintenance.requeue_stranded(database, redis, 30, {"echo": ECHO}) == 0
    assert await take() == [str(job_id)]
