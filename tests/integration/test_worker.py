"""The worker against real Postgres, real Redis and real `arq jobs.WorkerSettings` processes."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import timedelta

import httpx
from arq.connections import ArqRedis
from databases import Database

from tests.support.jobs import add_job, make_shop, wait_all, wait_for_status
from tests.support.net import free_port
from tests.support.processes import start_worker


async def test_retries_with_backoff_then_succeeds(
    env, spawn, database: Database, redis: ArqRedis
) -> None:
    start_worker(spawn, env, job_backoff_seconds=0.3, job_max_attempts=3)
    shop = await make_shop(database)
    begun = time.monotonic()
    job_id = await add_job(database, redis, shop, {"message": "hi", "fail_times": 2})
    job = await wait_for_status(database, job_id, {"completed", "failed"})
    elapsed = time.monotonic() - begun
    assert job.status == "completed" and job.result == {"message": "hi"}
    assert (job.retry_count, job.attempts, job.progress) == (2, 3, 100)
    assert elapsed >= 0.3 + 0.6  # backoff 0.3 s then 0.6 s


async def test_retrying_status_is_visible_between_attempts(env, spawn, database, redis) -> None:
    start_worker(spawn, env, job_backoff_seconds=2, job_max_attempts=2)
    shop = await make_shop(database)
    job_id = await add_job(database, redis, shop, {"message": "x", "fail_times": 1})
    job = await wait_for_status(database, job_id, {"retrying"})
    assert job.retry_count == 1 and "planned failure 1" in (job.error_message or "")
    assert job.run_at is not None and job.lease_owner is None
    job = await wait_for_status(database, job_id, {"completed"})
    assert job.retry_count == 1


async def test_exhausted_attempts_fail_the_job(env, spawn, database, redis) -> None:
    start_worker(spawn, env, job_backoff_seconds=0.05, job_max_attempts=2)
    shop = await make_shop(database)
    job_id = await add_job(database, redis, shop, {"message": "x", "fail_times": 5})
    job = await wait_for_status(database, job_id, {"failed"})
    assert job.retry_count == 2 and job.attempts == 2
    assert job.error_message == "echo: planned failure 2 of 5"
    assert job.finished_at is not None and job.result is None


async def test_non_retryable_error_fails_at_once(env, spawn, database, redis) -> None:
    start_worker(spawn, env, job_max_attempts=5)
    shop = await make_shop(database)
    job_id = await add_job(database, redis, shop, {"message": "x", "fail_permanently": True})
    job = await wait_for_status(database, job_id, {"failed"})
    assert (job.attempts, job.retry_count) == (1, 1)
    assert job.error_message == "echo: asked to fail permanently"


async def test_timeout_counts_as_a_failed_attempt(env, spawn, database, redis) -> None:
    start_worker(spawn, env, job_timeout_seconds=0.5, job_max_attempts=2, job_backoff_seconds=0.05)
    shop = await make_shop(database)
    job_id = await add_job(database, redis, shop, {"message": "slow", "sleep_ms": 5000})
    job = await wait_for_status(database, job_id, {"failed"}, timeout=20)
    assert job.error_message == "Timed out after 0.5s" and job.retry_count == 2


async def test_progress_is_mirrored(env, spawn, database, redis) -> None:
    start_worker(spawn, env)
    shop = await make_shop(database)
    job_id = await add_job(database, redis, shop, {"message": "p", "sleep_ms": 2000})
    seen: set[int] = set()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        job = await wait_for_status(database, job_id, {"processing", "completed"})
        seen.add(job.progress)
        if job.status == "completed":
            break
        await asyncio.sleep(0.05)
    assert any(0 < p < 100 for p in seen), seen
    assert job.status == "completed" and job.progress == 100


async def test_sigkilled_workers_job_is_completed_once_by_another(
    env, spawn, database, redis
) -> None:
    first = start_worker(spawn, env, job_lease_seconds=2)
    shop = await make_shop(database)
    job_id = await add_job(database, redis, shop, {"message": "survivor", "sleep_ms": 3000})
    await wait_for_status(database, job_id, {"processing"})
    first.signal(signal.SIGKILL)
    first.wait(5)
    killed_at = time.monotonic()
    second = start_worker(spawn, env, job_lease_seconds=2)
    job = await wait_for_status(database, job_id, {"completed", "failed"}, timeout=30)
    assert job.status == "completed" and job.attempts == 2
    assert time.monotonic() - killed_at < 2 + 3 + 8  # lease + run + margin, not arq's 5 min
    assert second.output.count(f"job {job_id} type=echo shop={shop.domain} completed") == 1


async def test_sigterm_finishes_within_grace_or_gives_the_job_back(
    env, spawn, database, redis
) -> None:
    proc = start_worker(spawn, env, worker_shutdown_grace_seconds=1.5)
    shop = await make_shop(database)
    quick = await add_job(database, redis, shop, {"message": "quick", "sleep_ms": 500})
    slow = await add_job(database, redis, shop, {"message": "slow", "sleep_ms": 10_000})
    await wait_for_status(database, slow, {"processing"})
    await wait_for_status(database, quick, {"processing", "completed"})
    proc.signal(signal.SIGTERM)
    health = f"http://127.0.0.1:{env['WORKER_HEALTH_PORT']}/healthz"
    for _ in range(20):  # the signal is handled on the worker's next loop turn
        answer = await asyncio.to_thread(httpx.get, health, timeout=2)
        if answer.status_code == 503:
            break
        await asyncio.sleep(0.05)
    assert (answer.status_code, answer.json()) == (503, {"status": "shutting_down"})
    assert proc.wait(15) == 0
    assert (await wait_for_status(database, quick, {"completed"})).status == "completed"
    given_back = await wait_for_status(database, slow, {"retrying"}, timeout=1)
    # A graceful give-back takes its start back: deploys never add up to the "Abandoned" rule.
    assert (given_back.lease_owner, given_back.retry_count, given_back.attempts) == (None, 0, 0)
    start_worker(spawn, env)
    assert (await wait_for_status(database, slow, {"completed"}, timeout=30)).attempts == 1


async def test_rate_limit_spreads_starts_without_using_attempts(
    env, spawn, database, redis
) -> None:
    start_worker(spawn, env, rate_limit_max=10, rate_limit_window_seconds=2, worker_concurrency=10)
    shop = await make_shop(database)
    begun = time.monotonic()
    ids = [await add_job(database, redis, shop, {"message": str(i)}) for i in range(40)]
    await wait_all(database, ids, timeout=40)
    elapsed = time.monotonic() - begun
    # 40 starts at 10 per 2 s need three full windows after the first: at least 6 s however fast
    # the machine (without the limiter they all start within one poll).
    assert elapsed >= 5.5, elapsed
    rows = await database.fetch_all(
        "SELECT attempts, retry_count, started_at FROM jobs WHERE id = ANY(:ids) ORDER BY started_at",
        {"ids": ids},
    )
    assert {(r._mapping["attempts"], r._mapping["retry_count"]) for r in rows} == {(1, 0)}
    starts = [r._mapping["started_at"] for r in rows]
    # Never 11 starts inside one window. `started_at` is the claim, a moment after the limiter's
    # admission, by a delay that grows with the machine's load; half a window leaves room for
    # it, and without the limiter all 40 would start within milliseconds.
    for i in range(len(starts) - 10):
        assert starts[i + 10] - starts[i] >= timedelta(seconds=1), (i, starts[i], starts[i + 10])


async def test_per_shop_cap_lets_other_shops_through(env, spawn, database, redis) -> None:
    shop_a = await make_shop(database, "bulk-a.myshopify.com")
    shop_b = await make_shop(database, "small-b.myshopify.com")
    a_ids = [
        await add_job(database, redis, shop_a, {"message": "a", "sleep_ms": 20}) for _ in range(300)
    ]
    b_ids = [await add_job(database, redis, shop_b, {"message": "b"}) for _ in range(5)]
    start_worker(spawn, env, shop_concurrency_limit=2, worker_concurrency=4, rate_limit_max=0)
    await wait_all(database, b_ids, timeout=60)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        done_a = await database.fetch_val(
            "SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND status = 'completed'",
            {"ids": a_ids},
        )
        if done_a >= 100:
            break
        await asyncio.sleep(0.2)
    a_100th = await database.fetch_val(
        "SELECT finished_at FROM jobs WHERE id = ANY(:ids) AND status = 'completed' "
        "ORDER BY finished_at OFFSET 99 LIMIT 1",
        {"ids": a_ids},
    )
    b_last = await database.fetch_val(
        "SELECT max(finished_at) FROM jobs WHERE id = ANY(:ids)", {"ids": b_ids}
    )
    assert a_100th is not None and b_last < a_100th
    a_done_before_b = await database.fetch_val(
        "SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND finished_at < :t",
        {"ids": a_ids, "t": b_last},
    )
    print(f"A jobs finished before B's last: {a_done_before_b}")


async def test_cap_is_never_exceeded_across_workers(env, spawn, database, redis) -> None:
    shop = await make_shop(database)
    ids = [
        await add_job(database, redis, shop, {"message": "c", "sleep_ms": 200}) for _ in range(12)
    ]
    start_worker(spawn, env, shop_concurrency_limit=1, worker_concurrency=3, rate_limit_max=0)
    start_worker(
        spawn,
        {**env, "WORKER_HEALTH_PORT": str(free_port())},
        shop_concurrency_limit=1,
        worker_concurrency=3,
        rate_limit_max=0,
    )
    most = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = await database.fetch_val(
            "SELECT count(*) FROM jobs WHERE shop_id = :s AND status = 'processing'", {"s": shop.id}
        )
        most = max(most, running)
        done = await database.fetch_val(
            "SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND status = 'completed'", {"ids": ids}
        )
        if done == len(ids):
            break
        await asyncio.sleep(0.02)
    assert done == len(ids) and most == 1
