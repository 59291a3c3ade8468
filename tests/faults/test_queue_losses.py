"""Fault suite: the queue loses its data (FLUSHALL, the server up) while jobs run and the web
enqueues, and a delayed job falls due while no worker runs. Postgres holds every job: the
reconciler puts back what Redis lost and each job completes once (its effect committed with its
completion once); a delayed job is run from the queue, once, when a worker is back."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections import Counter
from pathlib import Path

import httpx
from databases import Database

from jobs.registry import job_types
from service import queue
from service.core.settings import Settings
from service.jobs_client import JobsClient
from tests.support.breakable import RedisServer
from tests.support.faults import check_effects, signed, start_web, start_worker, wait_until
from tests.support.jobs import make_shop, wait_all, wait_for_status
from tests.support.net import free_port
from tests.support.processes import Process, Spawn

COMPLETED_LINE = re.compile(r"job ([0-9a-f-]{36}) type=\S+ shop=\S+ completed in")


def _completions(workers: list[Process]) -> Counter[str]:
    return Counter(m.group(1) for w in workers for m in COMPLETED_LINE.finditer(w.output))


async def _running(database: Database) -> bool:
    return bool(await database.fetch_val("SELECT count(*) FROM jobs WHERE status = 'processing'"))


async def test_flushall_while_jobs_run_and_the_web_enqueues_loses_and_repeats_nothing(
    env: dict[str, str], spawn: Spawn, database: Database, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        env = {
            **env,
            "REDIS_URL": server.url,
            "RECONCILE_AFTER_SECONDS": "1",
            "RECONCILE_INTERVAL_SECONDS": "1",
            "WORKER_CONCURRENCY": "6",
        }
        workers = [
            start_worker(spawn, {**env, "WORKER_HEALTH_PORT": str(free_port())}) for _ in range(2)
        ]
        _, base = start_web(spawn, env)
        shop = await make_shop(database)
        redis = queue.connect(server.url)
        rng = random.Random(5)
        ids: list[uuid.UUID] = []
        async with httpx.AsyncClient(base_url=base, timeout=10) as web:

            async def create(i: int) -> None:
                job_input: dict[str, object] = {
                    "message": f"flush-{i}",
                    "sleep_ms": rng.choice([0, 0, 200, 800]),
                    "record_effect": "with_completion",
                }
                if rng.random() < 0.2:
                    job_input["fail_times"] = 1
                job = {"type": "echo", "input": job_input}
                answer = await web.post(signed("/proxy/process", shop.domain), json=job)
                assert answer.status_code == 200, answer.text
                ids.append(uuid.UUID(answer.json()["jobId"]))

            for wave in range(4):
                await asyncio.gather(*(create(wave * 100 + i) for i in range(100)))
                await wait_until(lambda: _running(database), 30, "jobs running")
                await redis.flushall()  # with jobs running, queued, deferred for a retry
        await redis.aclose()
        await wait_all(database, ids, timeout=120)
        await check_effects(database, ids)
        twice = {k: n for k, n in _completions(workers).items() if n > 1}
        assert not twice, twice
        assert all(w.popen.poll() is None for w in workers)
        for w in workers:
            w.stop()
    finally:
        server.stop()


async def test_a_delayed_job_due_while_no_worker_runs_runs_once_when_one_is_back(
    env: dict[str, str], spawn: Spawn, database: Database, settings: Settings, redis
) -> None:
    await make_shop(database)
    client = JobsClient(database, redis, job_types(settings))
    job = await client.enqueue(
        "echo", shop="test-shop.myshopify.com", input={"message": "later"}, delay=1
    )

    async def due() -> bool:
        return bool(
            await database.fetch_val(
                "SELECT run_at < now() - interval '1 second' FROM jobs WHERE id = :id",
                {"id": job.id},
            )
        )

    await wait_until(due, 30, "the delayed job due")
    # Only the queue may run it: the reconciler is held off.
    worker = start_worker(spawn, env, reconcile_after_seconds=3600)
    done = await wait_for_status(database, job.id, {"completed", "failed"}, timeout=30)
    assert (done.status, done.attempts) == ("completed", 1)
    assert _completions([worker])[str(job.id)] == 1
