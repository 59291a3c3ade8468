"""The worker survives Redis and Postgres restarts, and upkeep repairs what they lose."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from arq.connections import ArqRedis
from databases import Database

from jobs.builtin.echo import JOB_TYPE as ECHO
from jobs.worker import maintenance
from service import queue
from service.core.db import create_database
from tests.support.breakable import PostgresControl
from tests.support.jobs import add_job, make_shop, wait_all
from tests.support.net import wait_for_http
from tests.support.processes import start_worker
from tests.support.queue_entries import queue_entries


def health(env: dict[str, str]) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{env['WORKER_HEALTH_PORT']}/healthz", timeout=3)


async def test_worker_survives_a_redis_restart(env, spawn, database: Database, own_redis) -> None:
    env = {
        **env,
        "REDIS_URL": own_redis.url,
        "RECONCILE_AFTER_SECONDS": "1",
        "RECONCILE_INTERVAL_SECONDS": "1",
    }
    worker = start_worker(spawn, env, worker_concurrency=2)
    redis = queue.connect(own_redis.url)
    shop = await make_shop(database)
    ids = [
        await add_job(database, redis, shop, {"message": str(i), "sleep_ms": 300}) for i in range(8)
    ]
    await asyncio.sleep(0.5)
    own_redis.stop()  # no persistence: the queue is gone with it
    await asyncio.sleep(1.5)
    down = await asyncio.to_thread(health, env)
    # Which dependency, in fixed words: the driver's text (host, port) only reaches the log.
    assert down.status_code == 503 and int(down.headers["Retry-After"]) > 0
    assert down.json() == {"status": "error", "failing": "redis", "message": "redis unreachable"}
    assert str(own_redis.port) not in down.text
    assert "healthz: redis failing" in worker.output
    assert worker.popen.poll() is None, worker.output
    own_redis.start()
    await wait_all(database, ids, timeout=40)
    assert worker.popen.poll() is None
    assert (await asyncio.to_thread(health, env)).status_code == 200
    await redis.aclose()


async def test_worker_survives_a_postgres_restart(
    env, spawn, servers, settings, redis: ArqRedis
) -> None:
    database = create_database(settings.database_url)
    await database.connect()
    await database.execute("TRUNCATE shops, jobs RESTART IDENTITY CASCADE")
    worker = start_worker(spawn, env, worker_concurrency=2)
    shop = await make_shop(database)
    ids = [
        await add_job(database, redis, shop, {"message": str(i), "sleep_ms": 400})
        for i in range(10)
    ]
    await database.disconnect()
    await asyncio.sleep(0.6)
    postgres = PostgresControl(servers)
    postgres.stop()
    down = await asyncio.to_thread(health, env)
    assert down.status_code == 503
    assert down.json() == {
        "status": "error",
        "failing": "postgres",
        "message": "postgres unreachable",
    }
    assert str(servers.pg_port) not in down.text
    await asyncio.sleep(1.0)
    postgres.start()
    database = create_database(settings.database_url)
    await database.connect()
    try:
        await wait_all(database, ids, timeout=40)
        assert worker.popen.poll() is None
        wait_for_http(f"http://127.0.0.1:{env['WORKER_HEALTH_PORT']}/healthz", timeout=10)
        stuck = await database.fetch_val("SELECT count(*) FROM jobs WHERE status = 'processing'")
        assert stuck == 0
    finally:
        await database.disconnect()


async def test_reconciler_requeues_stranded_jobs(database: Database, redis: ArqRedis) -> None:
    shop = await make_shop(database)
    lost = await add_job(database, redis, shop, {"message": "lost"}, enqueue=False)
    queued = await add_job(database, redis, shop, {"message": "queued"})
    fresh = await add_job(database, redis, shop, {"message": "fresh"}, enqueue=False)
    dead = await add_job(database, redis, shop, {"message": "dead"}, enqueue=False)
    finished = await add_job(database, redis, shop, {"message": "done"}, enqueue=False)
    old = datetime.now(UTC) - timedelta(minutes=5)
    await database.execute(
        "UPDATE jobs SET updated_at = :t WHERE id <> :fresh", {"t": old, "fresh": fresh}
    )
    await database.execute(
        "UPDATE jobs SET status = 'processing', lease_owner = 'gone', lease_expires_at = :t WHERE id = :id",
        {"t": old, "id": dead},
    )
    await database.execute("UPDATE jobs SET status = 'completed' WHERE id = :id", {"id": finished})
    assert await maintenance.requeue_stranded(database, redis, 30, {"echo": ECHO}) == 2
    members = set(await queue_entries(redis))
    assert members == {str(lost), str(queued), str(dead)}
    assert (
        await maintenance.requeue_stranded(database, redis, 30, {"echo": ECHO}) == 0
    )  # idempotent


async def test_reconciler_fails_rows_of_unknown_types_instead_of_requeueing_them(
    database: Database, redis: ArqRedis
) -> None:
    """Rows of a type removed in a deploy are the oldest stranded rows, every tick: queued,
    they would be dropped and queued again for ever, ahead of real orphans."""
    shop = await make_shop(database)
    gone = [
        await add_job(database, redis, shop, {}, job_type="renamed_away", enqueue=False)
        for _ in range(3)
    ]
    orphan = await add_job(database, redis, shop, {"message": "lost"}, enqueue=False)
    await database.execute(
        "UPDATE jobs SET updated_at = now() - make_interval(mins => CASE WHEN id = :o THEN 5 ELSE 9 END)",
        {"o": orphan},
    )
    assert await maintenance.requeue_stranded(database, redis, 30, {"echo": ECHO}) == 1
    assert set(await queue_entries(redis)) == {str(orphan)}
    rows = await database.fetch_all(
        "SELECT status, error_message FROM jobs WHERE id = ANY(:ids)", {"ids": gone}
    )
    assert [(r["status"], r["error_message"]) for r in rows] == [
        ("failed", "Unknown job type renamed_away")
    ] * 3


async def test_retention_keeps_what_the_settings_say(database: Database, settings) -> None:
    shop = await make_shop(database)
    now = datetime.now(UTC)
    rows = []
    for i in range(12):
        rows.append(("completed", now - timedelta(minutes=i)))
    rows.append(("completed", now - timedelta(days=2)))
    rows += [("failed", now - timedelta(days=8)), ("failed", now - timedelta(days=1))]
    rows.append(("retrying", now - timedelta(days=30)))
    for status, finished in rows:
        await database.execute(
            "INSERT INTO jobs (id, shop_id, type, status, finished_at) "
            "VALUES (gen_random_uuid(), :s, 'echo', :st, :f)",
            {"s": shop.id, "st": status, "f": finished},
        )
    trimmed = settings.model_copy(update={"completed_retention_count": 10})
    assert await maintenance.delete_expired(database, trimmed) == 3 + 1
    counts = {
        r._mapping["status"]: r._mapping["n"]
        for r in await database.fetch_all("SELECT status, count(*) AS n FROM jobs GROUP BY status")
    }
    assert counts == {"completed": 10, "failed": 1, "retrying": 1}
    newest = await database.fetch_val(
        "SELECT max(finished_at) FROM jobs WHERE status = 'completed'"
    )
    assert newest > now - timedelta(minutes=1)
