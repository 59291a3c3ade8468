import asyncio

from arq.connections import ArqRedis

from jobs.worker.ratelimit import RateLimiter


async def test_admits_max_then_says_how_long_to_wait(redis: ArqRedis) -> None:
    limiter = RateLimiter(redis, limit=3, window_seconds=0.5)
    assert [await limiter.acquire() for _ in range(3)] == [0, 0, 0]
    wait = await limiter.acquire()
    assert 0 < wait <= 0.5
    await asyncio.sleep(wait + 0.02)
    assert await limiter.acquire() == 0


async def test_is_shared_across_clients_and_scoped(redis: ArqRedis, settings) -> None:
    from service import queue

    other = queue.connect(settings.redis_url)
    a, b = RateLimiter(redis, 2, 5), RateLimiter(other, 2, 5)
    assert await a.acquire() == 0 and await b.acquire() == 0
    assert await a.acquire() > 0 and await b.acquire() > 0
    assert await a.acquire("echo") == 0  # another scope has its own budget
    await other.aclose()


async def test_zero_turns_it_off(redis: ArqRedis) -> None:
    limiter = RateLimiter(redis, limit=0, window_seconds=60)
    assert all([await limiter.acquire() == 0 for _ in range(50)])
