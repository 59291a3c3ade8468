"""The worker's log says what happened to our jobs, not arq's: no line per cron run every few
seconds, and a shutdown summary that counts this process's jobs (arq's counted only its crons
and said "0 failed" after failures)."""

from __future__ import annotations

import asyncio
import signal

import orjson
from arq.connections import ArqRedis
from databases import Database

from tests.support.jobs import add_job, make_shop, wait_for_status
from tests.support.processes import start_worker


async def test_no_cron_lines_and_a_true_shutdown_summary(
    env: dict[str, str], spawn, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database, "noise-shop.myshopify.com")
    worker = start_worker(spawn, env)
    ok = await add_job(database, redis, shop, {"message": "fine"})
    bad = await add_job(database, redis, shop, {"message": "x", "fail_permanently": True})
    await wait_for_status(database, ok, {"completed"})
    await wait_for_status(database, bad, {"failed"})
    await asyncio.sleep(6)  # the schedules' cron has run at least twice (every 5 s)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    lines = [orjson.loads(line) for line in worker.output.splitlines()]
    messages = [entry["message"] for entry in lines]
    runs = [m for m in messages if "cron:" in m and ("→" in m or "←" in m)]
    assert not runs, runs[:3]
    assert not [m for m in messages if "◆" in m]  # arq's summary, counting its crons only
    [summary] = [m for m in messages if m.startswith("SIGTERM received")]
    assert "this process ran 1 completed, 1 failed, 0 retried" in summary
