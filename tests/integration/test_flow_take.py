"""Flow control held at the take, with real worker processes, checked in Postgres (issue 28).

Priority within a shop (a merchant's job before the shop's backlog), the per-type cap and
the per-key cap across two workers (never more running than the cap, and the cap reached).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from arq.connections import ArqRedis
from databases import Database

from jobs.builtin.echo import JOB_TYPE as ECHO
from service import queue, store
from service.intake import Source, queue_entry
from tests.support.jobs import make_shop, wait_for_status
from tests.support.processes import start_worker
from tests.support.wait_jobs import CAPPED, PER_PRODUCT, wait_jobs_command


async def add_jobs(
    database: Database,
    redis: ArqRedis,
    shop: store.Shop,
    job_type: Any,
    inputs: list[dict[str, Any]],
    source: Source = Source.APP,
) -> list[uuid.UUID]:
    """Rows, then queue entries as the intake makes them (priority and key included)."""
    ids = [uuid.uuid4() for _ in inputs]
    await database.execute_many(
        "INSERT INTO jobs (id, shop_id, type, input, source) "
        "VALUES (:id, :shop, :type, CAST(:input AS jsonb), :source)",
        [
            {"id": i, "shop": shop.id, "type": job_type.name, "input": orjson.dumps(d).decode(),
             "source": source.value}
            for i, d in zip(ids, inputs, strict=True)
        ],
    )  # fmt: skip
    entries = [
        queue_entry(job_type, i, shop.domain, d, source) for i, d in zip(ids, inputs, strict=True)
    ]
    for start in range(0, len(entries), 500):
        assert all(await queue.enqueue_many(redis, entries[start : start + 500]))
    return ids


async def most_at_once(database: Database, ids: list[uuid.UUID]) -> int:
    """The most of these jobs that were running at the same moment (start..finish)."""
    return int(
        await database.fetch_val(
            """SELECT coalesce(max(n), 0) FROM (
                 SELECT (SELECT count(*) FROM jobs AS o
                          WHERE o.id = ANY(CAST(:ids AS uuid[]))
                            AND o.started_at <= j.started_at AND o.finished_at > j.started_at) AS n
                   FROM jobs AS j WHERE j.id = ANY(CAST(:ids AS uuid[]))) AS spans""",
            {"ids": ids},
        )
    )


async def wait_all(database: Database, ids: list[uuid.UUID], timeout: float = 120) -> None:
    for job_id in ids:
        await wait_for_status(database, job_id, {"completed"}, timeout=timeout)


async def test_a_merchants_job_starts_before_its_shops_backlog(
    env, spawn, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database)
    backlog = await add_jobs(database, redis, shop, ECHO, [{"message": "bg"}] * 1000)
    [pressed] = await add_jobs(
        database, redis, shop, ECHO, [{"message": "button"}], source=Source.MERCHANT
    )
    start_worker(spawn, env, worker_concurrency=1)
    merchant = await wait_for_status(database, pressed, {"completed"}, timeout=60)
    first_background = await database.fetch_val(
        "SELECT min(started_at) FROM jobs WHERE id = ANY(CAST(:ids AS uuid[]))", {"ids": backlog}
    )
    assert merchant.started_at is not None
    assert first_background is None or merchant.started_at < first_background


async def test_a_types_cap_holds_across_two_workers(env, spawn, database, redis) -> None:
    shops = [await make_shop(database, f"capped-{n}.myshopify.com") for n in range(4)]
    ids: list[uuid.UUID] = []
    for shop in shops:
        ids += await add_jobs(database, redis, shop, CAPPED, [{"ms": 400}] * 3)
    others = await add_jobs(database, redis, shops[0], ECHO, [{"message": "free"}] * 4)
    for _ in range(2):
        start_worker(spawn, env, wrap=wait_jobs_command, worker_concurrency=3)
    await wait_all(database, ids + others)
    assert await most_at_once(database, ids) == 2  # reached, never passed


async def test_one_product_runs_one_job_at_a_time(env, spawn, database, redis) -> None:
    shop = await make_shop(database)
    same = await add_jobs(database, redis, shop, PER_PRODUCT, [{"ms": 300, "product": "a"}] * 4)
    other = await add_jobs(database, redis, shop, PER_PRODUCT, [{"ms": 300, "product": "b"}] * 4)
    for _ in range(2):
        start_worker(spawn, env, wrap=wait_jobs_command, worker_concurrency=4)
    await wait_all(database, same + other)
    assert await most_at_once(database, same) == 1
    assert await most_at_once(database, other) == 1
    assert await most_at_once(database, same + other) == 2  # two products side by side
