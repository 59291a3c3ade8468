"""Fault suite: Redis restarted mid-run, with and without persistence, loses no job; the web
answers 503 and leaves no row while Redis is down (issue 8). Sizes: tests/support/faults.py."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from databases import Database

from service import queue
from tests.support.breakable import RedisServer
from tests.support.faults import (
    check_effects,
    completed,
    record,
    signed,
    sized,
    start_web,
    start_worker,
    wait_completed,
)
from tests.support.jobs import add_job, make_shop, wait_all
from tests.support.queue_entries import queued_score

ECHO = {"type": "echo", "input": {"message": "hello"}}


def redis_mix(count: int, rng: random.Random) -> list[dict[str, object]]:
    """Quick and slower jobs, some failing once first (so some wait deferred in the queue)."""
    inputs: list[dict[str, object]] = []
    for i in range(count):
        job: dict[str, object] = {"message": f"redis-{i}", "record_effect": "with_completion"}
        if rng.random() < 0.5:
            job["sleep_ms"] = rng.randint(*sized((100, 400), (200, 1500)))
        if rng.random() < 0.2:
            job["fail_times"] = 1
        inputs.append(job)
    return inputs


@pytest.mark.parametrize("appendonly", [True, False], ids=["persistence-on", "persistence-off"])
async def test_redis_restarts_mid_run_lose_no_job(
    appendonly: bool, env, spawn, database: Database, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=appendonly)
    server.start()
    try:
        await _restarts_lose_nothing(appendonly, server, env, spawn, database)
    finally:
        server.stop()


async def _restarts_lose_nothing(
    appendonly: bool, server: RedisServer, env, spawn, database: Database
) -> None:
    count = sized(60, 400)
    restarts = sized(1, 3)
    env = {
        **env,
        "REDIS_URL": server.url,
        "WORKER_CONCURRENCY": str(sized(4, 10)),
        "JOB_BACKOFF_SECONDS": "1",
        # With persistence the queue must survive on its own: the reconciler is kept out of it.
        "RECONCILE_AFTER_SECONDS": "3600" if appendonly else "1",
        "RECONCILE_INTERVAL_SECONDS": "1",
    }
    worker = start_worker(spawn, env)
    redis = queue.connect(server.url)
    shop = await make_shop(database)
    rng = random.Random(3)
    ids: list[uuid.UUID] = []
    for job_input in redis_mix(count, rng):
        ids.append(await add_job(database, redis, shop, job_input))
    await redis.aclose()

    queued_at_restart = []
    begun = time.monotonic()
    for n in range(restarts):
        target = count * (n + 1) // (restarts + 2)
        await wait_completed(database, target)
        queued_at_restart.append(count - await completed(database))
        server.stop()
        await asyncio.sleep(1.0)
        server.start()

    await wait_all(database, ids, timeout=sized(60, 180))
    elapsed = time.monotonic() - begun
    lost = len(ids) - int(
        await database.fetch_val(
            "SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND status = 'completed'", {"ids": ids}
        )
    )
    assert worker.popen.poll() is None, worker.output[-3000:]
    worker.stop()  # while its Redis is still up: a quick, clean exit
    assert min(queued_at_restart) > 0, "Redis was restarted after the work was done"
    await check_effects(database, ids)
    requeued = "reconciler: re-queued" in worker.output
    if appendonly:
        assert not requeued, "with persistence on, the queue itself must keep every job"
    else:
        assert requeued, "the queue was emptied, yet the reconciler re-queued nothing"
    record(
        f"redis restart ({'persistence on' if appendonly else 'persistence off'})",
        jobs=count,
        restarts=restarts,
        unfinished_at_each_restart=queued_at_restart,
        lost=lost,
        seconds=round(elapsed, 1),
    )


async def _job_rows(database: Database) -> int:
    return int(await database.fetch_val("SELECT count(*) FROM jobs"))


async def test_web_while_redis_is_down_is_503_and_leaves_no_row(
    env, spawn, database: Database, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    shop = await make_shop(database, "redis-down.myshopify.com")
    _, base = start_web(spawn, {**env, "REDIS_URL": server.url})
    tries = sized(20, 100)
    async with httpx.AsyncClient(base_url=base, timeout=10) as web:
        made = await web.post(signed("/proxy/process", shop.domain), json=ECHO)
        assert made.status_code == 200, made.text
        job_id = made.json()["jobId"]
        try:
            server.stop()
            answers = []
            refusals = []
            for i in range(tries):
                key = {"Idempotency-Key": "order-1"} if i % 2 else {}
                answer = await web.post(
                    signed("/proxy/process", shop.domain), json=ECHO, headers=key
                )
                answers.append((answer.status_code, answer.json()))
                refusals.append(answer)
            assert set(map(str, answers)) == {str((503, {"error": "Failed to queue job"}))}
            assert await _job_rows(database) == 1, "a refused job left its row behind"
            # Reading a status needs only Postgres.
            status = await web.get(signed(f"/proxy/status?jobId={job_id}", shop.domain))
            assert status.status_code == 200 and status.json()["status"] == "pending"
            # Liveness stays green (the platform keeps routing polls here); Redis is reported.
            live = await web.get("/healthz")
            assert (live.status_code, live.json()["status"]) == (200, "degraded")
            assert all(int(a.headers["Retry-After"]) > 0 for a in refusals)

            server.start()
            server.pause()  # a Redis that hangs instead of refusing
            begun = time.monotonic()
            hung = await web.post(signed("/proxy/process", shop.domain), json=ECHO)
            assert hung.status_code == 503 and time.monotonic() - begun < 5
            assert await _job_rows(database) == 1
        finally:
            server.resume()
        # The refused key was not used up: the same request now makes its job.
        retried = await web.post(
            signed("/proxy/process", shop.domain), json=ECHO, headers={"Idempotency-Key": "order-1"}
        )
        assert retried.status_code == 200, retried.text
    redis = queue.connect(server.url)
    try:
        assert await queued_score(redis, retried.json()["jobId"]) is not None
    finally:
        await redis.aclose()
        server.stop()
    assert await _job_rows(database) == 2
    record("web while Redis is down", requests=tries + 1, answered_503=tries + 1, orphan_rows=0)


async def test_a_worker_exits_on_sigterm_while_redis_is_down(
    env, spawn, database: Database, tmp_path: Path
) -> None:
    """Its Redis client retries without end (a restart only pauses it), but that must not keep
    a worker that was told to stop from stopping: it hung until killed."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        worker = start_worker(spawn, {**env, "REDIS_URL": server.url})
    finally:
        server.stop()
    await asyncio.sleep(0.5)
    worker.signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(worker.wait, 20)
    except subprocess.TimeoutExpired:
        worker.signal(signal.SIGKILL)
        await asyncio.to_thread(worker.wait, 5)
        raise AssertionError("no exit within 20 s of SIGTERM:\n" + worker.output[-4000:]) from None
    assert code == 0, worker.output[-2000:]
