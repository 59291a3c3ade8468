"""Health that the platform acts on, with real processes.

Fly Machines are not restarted for failing checks, and a failing web check takes the Machine
out of routing. Before: a worker wedged by abandoned runs only answered 503, and ran on for
ever; the web's /healthz was 503 while Redis was down, which on Fly cut off the status reads
and webhooks that still worked.
"""

from __future__ import annotations

import asyncio
import sys
import time

import httpx
from arq.connections import ArqRedis
from databases import Database

from jobs.worker.process import EXIT_WEDGED
from service import store
from tests.support.breakable import PostgresControl
from tests.support.jobs import add_job, make_shop, wait_for_status
from tests.support.net import free_port, wait_for_http
from tests.support.processes import start_web
from tests.support.proxy import proxy_url

SHOP = "health-shop.myshopify.com"


async def test_a_wedged_worker_exits_by_itself(env, spawn, database: Database, redis: ArqRedis):
    """Two handlers that ignore cancellation, WORKER_MAX_ABANDONED_RUNS=1: the second abandoned
    run ends the worker, with no signal from anyone, exit code EXIT_WEDGED; the job behind them
    is given back, not lost."""
    health = free_port()
    values = {
        **env,
        "WORKER_HEALTH_PORT": str(health),
        "WORKER_CONCURRENCY": "3",
        "WORKER_MAX_ABANDONED_RUNS": "1",
        "JOB_ABANDON_GRACE_SECONDS": "0.5",
        "WORKER_SHUTDOWN_GRACE_SECONDS": "2",
    }
    command = [sys.executable, "-m", "arq", "tests.support.hostile_worker.WorkerSettings"]
    proc = spawn(command, values, "wedged-worker")
    wait_for_http(f"http://127.0.0.1:{health}/healthz", timeout=30)
    shop = await make_shop(database)
    first = await add_job(database, redis, shop, {}, job_type="swallows_cancel")
    await wait_for_status(database, first, {"failed"})
    # One abandoned run is within the limit: the worker goes on.
    await asyncio.sleep(1)
    assert proc.popen.poll() is None, proc.output
    second = await add_job(database, redis, shop, {}, job_type="swallows_cancel")
    slow = await add_job(database, redis, shop, {"message": "slow", "sleep_ms": 60_000})
    began = time.monotonic()
    code = await asyncio.to_thread(proc.wait, 60)
    assert code == EXIT_WEDGED, proc.output
    assert "over WORKER_MAX_ABANDONED_RUNS=1" in proc.output
    assert (await wait_for_status(database, second, {"failed"})).status == "failed"
    # The run still going when it stopped was given back (as on SIGTERM), for the next worker.
    job = await wait_for_status(database, slow, {"retrying", "pending", "completed"})
    assert job.lease_owner is None
    assert time.monotonic() - began < 30


async def test_the_web_stays_live_and_reads_statuses_while_redis_is_down(
    env, spawn, database: Database, own_redis
) -> None:
    await store.upsert_shop(database, SHOP, "shpat_health", "")
    values = {
        **env,
        "REDIS_URL": own_redis.url,
        # Production's storefront quotas (counted in Redis) are on.
        "PROXY_LIMIT_SHOP_PER_MINUTE": "120",
        "PROXY_LIMIT_CUSTOMER_PER_MINUTE": "20",
    }
    _, base = start_web(spawn, values)
    async with httpx.AsyncClient(timeout=10) as client:
        created = await client.post(
            proxy_url(base, "/proxy/process", shop=SHOP),
            json={"type": "echo", "input": {"message": "before"}},
        )
        assert created.status_code == 200, created.text
        job_id = created.json()["jobId"]

        own_redis.stop()
        live = await client.get(f"{base}/healthz")
        assert (live.status_code, live.json()) == (
            200,
            {"status": "degraded", "degraded": ["redis"]},
        )
        polled = await client.get(proxy_url(base, f"/proxy/status?jobId={job_id}", shop=SHOP))
        assert polled.status_code == 200, polled.text
        assert polled.json()["status"] == "pending"
        # What needs Redis answers a retryable 503, saying when to retry.
        refused = await client.post(
            proxy_url(base, "/proxy/process", shop=SHOP),
            json={"type": "echo", "input": {"message": "during"}},
        )
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) > 0

        own_redis.start()
        assert (await client.get(f"{base}/healthz")).json() == {"status": "ok"}


async def test_web_liveness_fails_with_postgres_and_says_when_to_retry(env, spawn, servers) -> None:
    """Postgres down is the web's 503 (it can answer nothing useful), with Retry-After; so is
    every other 503 it gives."""
    _, base = start_web(spawn, env)
    control = PostgresControl(servers)
    await asyncio.to_thread(control.stop)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            down = await client.get(f"{base}/healthz")
            assert (down.status_code, down.json()) == (
                503,
                {"status": "error", "failing": "postgres"},
            )
            assert int(down.headers["Retry-After"]) > 0
            status = await client.get(
                proxy_url(
                    base, "/proxy/status?jobId=00000000-0000-0000-0000-000000000000", shop=SHOP
                )
            )
            assert status.status_code == 503 and int(status.headers["Retry-After"]) > 0
    finally:
        await asyncio.to_thread(control.start)
