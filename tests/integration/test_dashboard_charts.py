"""The dashboard's charts (/admin/charts): the bucketed queries on real Postgres, and the page.

Rows are written with chosen times, so every bucket's expected count and wait is known.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from arq.connections import ArqRedis
from databases import Database

from service import store
from service.core.settings import Settings
from service.store.sql import connection
from tests.integration.test_dashboard import AUTH, _client, admin_settings  # noqa: F401
from tests.support.jobs import make_shop


async def put_job(
    database: Database,
    shop: store.Shop,
    job_type: str,
    status: str,
    created: datetime,
    wait: float | None,
    run: float = 1.0,
) -> uuid.UUID:
    """A job created at `created`, started `wait` seconds later (None: not yet), finished
    `run` seconds after that when its status is final."""
    job_id = uuid.uuid4()
    started = None if wait is None else created + timedelta(seconds=wait)
    final = status in ("completed", "failed")
    finished = started + timedelta(seconds=run) if (final and started) else None
    async with connection(database) as raw:
        await raw.execute(
            """INSERT INTO jobs (id, shop_id, type, status, created_at, started_at,
                                 finished_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            job_id, shop.id, job_type, status, created, started, finished, finished or created,
        )  # fmt: skip
    return job_id


@pytest.fixture
async def admin(
    admin_settings: Settings,  # noqa: F811
    database: Database,
    redis: ArqRedis,
) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(admin_settings):
        yield client


async def test_buckets_count_finished_jobs_and_waits_by_shop_and_type(database: Database) -> None:
    a = await make_shop(database, "alpha.myshopify.com")
    b = await make_shop(database, "beta.myshopify.com")
    now = datetime(2026, 12, 7, 15, 7, 30, tzinfo=UTC)  # the hour's buckets: 14:10 .. 15:05
    at_1500 = datetime(2026, 12, 7, 15, 0, 10, tzinfo=UTC)
    for wait in (1.0, 2.0, 3.0):
        await put_job(database, a, "echo", "completed", at_1500, wait)
    await put_job(database, a, "echo", "failed", at_1500, 10.0)
    await put_job(database, b, "echo", "completed", at_1500, 100.0)
    await put_job(database, a, "sync", "completed", at_1500 - timedelta(minutes=30), 0.5)
    await put_job(database, a, "echo", "pending", now - timedelta(seconds=5), None)
    # Outside the day: never counted.
    await put_job(database, a, "echo", "completed", now - timedelta(days=2), 1.0)

    hour = await store.job_chart(database, store.JobFilter(), store.Window.HOUR, now)
    assert len(hour.buckets) == 12 and not hour.timed_out
    assert hour.buckets[0].start == datetime(2026, 12, 7, 14, 10, tzinfo=UTC)
    by_start = {b.start: b for b in hour.buckets}
    at_15 = by_start[datetime(2026, 12, 7, 15, 0, tzinfo=UTC)]
    assert (at_15.completed, at_15.failed, at_15.started) == (4, 1, 5)
    assert at_15.wait_p50 == pytest.approx(3.0)
    half_past = by_start[datetime(2026, 12, 7, 14, 30, tzinfo=UTC)]
    assert (half_past.completed, half_past.wait_p50) == (1, pytest.approx(0.5))
    assert sum(b.completed + b.failed for b in hour.buckets) == 6

    one_shop = store.JobFilter(shop="alpha", job_type="echo")
    mine = await store.job_chart(database, one_shop, store.Window.HOUR, now)
    at_15 = {b.start: b for b in mine.buckets}[datetime(2026, 12, 7, 15, 0, tzinfo=UTC)]
    assert (at_15.completed, at_15.failed) == (3, 1)
    assert at_15.wait_p50 == pytest.approx(2.5)
    assert sum(b.completed for b in mine.buckets) == 3  # sync's and beta's left out

    day = await store.job_chart(database, store.JobFilter(), store.Window.DAY, now)
    assert len(day.buckets) == 24
    assert day.buckets[-1].start == datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
    assert sum(b.completed + b.failed for b in day.buckets) == 6  # two days ago: not in


async def test_the_query_is_bounded_by_the_created_at_index(database: Database) -> None:
    """The waits' query reads the window through jobs_created_idx, not the whole table."""
    # With an empty table the planner may still pick a seq scan; force the index question.
    await database.execute("SET enable_seqscan = off")
    try:
        plan = "\n".join(
            r[0]
            for r in await database.fetch_all(
                """EXPLAIN SELECT count(*) FROM jobs AS j
                   WHERE j.created_at >= now() - interval '1 hour'"""
            )
        )
    finally:
        await database.execute("SET enable_seqscan = on")
    assert "jobs_created_idx" in plan


async def test_the_page_draws_svg_charts_for_both_windows(
    admin: httpx.AsyncClient, database: Database
) -> None:
    shop = await make_shop(database, "alpha.myshopify.com")
    now = datetime.now(UTC)
    await put_job(database, shop, "echo", "completed", now - timedelta(minutes=2), 0.25, 0.01)
    await put_job(database, shop, "echo", "failed", now - timedelta(minutes=2), 0.75, 0.01)
    response = await admin.get("/admin/charts?shop=alpha&type=echo", headers=AUTH)
    assert response.status_code == 200
    html = response.text
    assert "<script" not in html
    charts = re.findall(r'data-chart="(\w+)" data-window="(\w+)"', html)
    assert sorted(charts) == sorted(
        (c, w) for c in ("throughput", "failures", "wait") for w in ("hour", "day")
    )
    values = [float(v) for v in re.findall(r'data-value="([0-9.e+-]+)"', html)]
    assert sum(values) > 0
    assert "2 finished, 1 failed" in html
    assert (await admin.get("/admin/charts")).status_code == 401
    listing = await admin.get("/admin/?shop=alpha", headers=AUTH)
    assert 'href="/admin/charts?shop=alpha"' in listing.text
