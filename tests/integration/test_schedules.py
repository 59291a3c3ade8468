"""Job schedules (JobType.schedule): once per tick per shop however many workers look, spread
over the interval, one catch-up after downtime, none for uninstalled shops. Time is driven by
choosing `now`, not by waiting; one test runs the real cron in two worker processes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from arq.connections import ArqRedis
from databases import Database
from pydantic import BaseModel

from jobs.types import JobContext, JobType, Schedule
from jobs.worker.schedules import run_schedules
from service import store
from service.core.db import create_database
from service.core.schedule_times import latest_tick, next_tick, spread_offset
from service.core.settings import Settings
from tests.support.net import free_port
from tests.support.processes import Spawn, start_worker
from tests.support.queue_entries import queued_score
from tests.support.scheduled_jobs import scheduled_jobs_command


class NightlyInput(BaseModel):
    full: bool = False


async def nightly(ctx: JobContext, data: NightlyInput) -> None:
    return None


HOURLY = JobType(
    name="hourly_sync",
    input_model=NightlyInput,
    handler=nightly,
    schedule=Schedule(cron="0 * * * *", input={"full": True}),
)
ONCE_PER_APP = JobType(
    name="app_report",
    input_model=NightlyInput,
    handler=nightly,
    schedule=Schedule(cron="0 3 * * *", per_shop=False),
)
TYPES = {HOURLY.name: HOURLY, ONCE_PER_APP.name: ONCE_PER_APP}
SHOPS = 200


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def _jobs(database: Database, job_type: str) -> list[dict]:
    rows = await database.fetch_all(
        """SELECT j.idempotency_key, j.run_at, j.input, s.domain FROM jobs j
             JOIN shops s ON s.id = j.shop_id WHERE j.type = :t""",
        {"t": job_type},
    )
    return [dict(r._mapping) for r in rows]


def test_ticks_and_offsets() -> None:
    schedule = Schedule(cron="0 3 * * *")
    assert latest_tick(schedule, at("2030-01-02T03:00:00")) == at("2030-01-02T03:00:00")
    assert latest_tick(schedule, at("2030-01-02T02:59:59")) == at("2030-01-01T03:00:00")
    assert next_tick(schedule, at("2030-01-02T03:00:00")) == at("2030-01-03T03:00:00")
    offsets = {spread_offset("t", f"s{i}.myshopify.com", timedelta(hours=1)) for i in range(100)}
    assert len(offsets) == 100 and all(timedelta(0) <= o < timedelta(hours=1) for o in offsets)


async def test_each_tick_runs_once_per_shop_spread_with_one_catch_up(
    settings: Settings, database: Database, redis: ArqRedis
) -> None:
    for n in range(SHOPS):
        await store.upsert_shop(database, f"shop-{n}.myshopify.com", "shpat_x", "")
    await store.mark_shop_uninstalled(database, "shop-7.myshopify.com")
    # Two workers: each its own pool, looking at the same moment.
    second = create_database(settings.database_url, min_size=1, max_size=2)
    await second.connect()
    try:

        async def both(now: datetime) -> int:
            counts = await asyncio.gather(
                run_schedules(database, redis, TYPES, now), run_schedules(second, redis, TYPES, now)
            )
            return sum(counts)

        # First sight: the schedules start with their next tick.
        assert await both(at("2030-01-01T00:30:00")) == 0
        # The 01:00 tick: one run per installed shop (and one for the app-wide schedule? no:
        # its tick, 03:00, has not come), however many workers look, however often.
        assert await both(at("2030-01-01T01:00:02")) == SHOPS - 1
        assert await both(at("2030-01-01T01:20:00")) == 0
        runs = await _jobs(database, HOURLY.name)
        assert len(runs) == SHOPS - 1
        assert "shop-7.myshopify.com" not in {r["domain"] for r in runs}
        assert {r["idempotency_key"] for r in runs} == {
            f"schedule:hourly_sync:{r['domain']}:2030-01-01T01:00:00+00:00" for r in runs
        }
        # Spread over the hour, each shop at its own offset (the same SQL and Python hash).
        tick = at("2030-01-01T01:00:00")
        for run in runs:
            expected = tick + spread_offset(HOURLY.name, run["domain"], timedelta(hours=1))
            assert abs((run["run_at"] - expected).total_seconds()) < 0.01
        minutes = Counter(int((r["run_at"] - tick).total_seconds() // 60) for r in runs)
        assert len(minutes) >= 50 and max(minutes.values()) <= 12
        # The queue holds each run until its time.
        first = min(runs, key=lambda r: r["run_at"])
        job_id = await database.fetch_val(
            "SELECT id FROM jobs WHERE idempotency_key = :k", {"k": first["idempotency_key"]}
        )
        assert await queued_score(redis, str(job_id)) >= first["run_at"].timestamp() * 1000

        # No worker from 01:20 to 05:10: the ticks of 02:00 to 05:00 were missed; only the
        # latest runs, once (and the app-wide schedule's 03:00, missed too).
        assert await both(at("2030-01-01T05:10:00")) == SHOPS - 1 + 1
        runs = await _jobs(database, HOURLY.name)
        ticks = Counter(r["idempotency_key"].split(":", 3)[3] for r in runs)
        assert ticks == {
            "2030-01-01T01:00:00+00:00": SHOPS - 1,
            "2030-01-01T05:00:00+00:00": SHOPS - 1,
        }

        # The app-wide schedule: one run per tick, not one per shop.
        assert await both(at("2030-01-02T03:00:00")) == 1 + (SHOPS - 1)  # + hourly's 03:00
        app_runs = await _jobs(database, ONCE_PER_APP.name)
        assert sorted(r["idempotency_key"] for r in app_runs) == [
            "schedule:app_report:app:2030-01-01T03:00:00+00:00",
            "schedule:app_report:app:2030-01-02T03:00:00+00:00",
        ]
        assert {r["domain"] for r in app_runs} == {"shop-0.myshopify.com"}
    finally:
        await second.disconnect()


async def test_two_worker_processes_run_each_tick_once_per_shop(
    database: Database, spawn: Spawn, env: dict[str, str]
) -> None:
    shops = [f"tick-{n}.myshopify.com" for n in range(20)]
    for domain in shops:
        await store.upsert_shop(database, domain, "shpat_x", "")
    for _ in range(2):
        start_worker(
            spawn,
            {**env, "WORKER_HEALTH_PORT": str(free_port())},
            wrap=scheduled_jobs_command,
            worker_concurrency=10,
        )
    # Wait for the runs of two ticks to be written and completed (a tick every 5 s).
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        rows = await database.fetch_all(
            "SELECT idempotency_key, status FROM jobs WHERE type = 'every_5s'"
        )
        ticks = Counter(r._mapping["idempotency_key"].split(":", 3)[3] for r in rows)
        done = all(r._mapping["status"] == "completed" for r in rows)
        if len(ticks) >= 2 and done:
            break
        await asyncio.sleep(0.2)
    assert len(ticks) >= 2, ticks
    # Once per tick for each shop: every tick has exactly one run per shop.
    assert set(ticks.values()) == {len(shops)}, ticks
    results = await database.fetch_all(
        "SELECT DISTINCT result->>'note' AS note FROM jobs WHERE type = 'every_5s'"
    )
    assert [r._mapping["note"] for r in results] == ["scheduled"]


async def test_a_broken_schedule_stops_only_its_own_type(
    database: Database, redis: ArqRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a cron cronsim cannot read, or an input the model refuses, raised out of
    run_schedules at that type on every look, so no type after it ever ran ("schedules
    skipped", a warning, as if Postgres were down)."""
    bad_cron = JobType(
        name="bad_cron", input_model=NightlyInput, handler=nightly, schedule=Schedule("0 3 * *")
    )
    bad_input = JobType(
        name="bad_input",
        input_model=NightlyInput,
        handler=nightly,
        schedule=Schedule("0 * * * *", input={"full": "very"}),
    )
    types = {t.name: t for t in (bad_cron, bad_input, HOURLY)}
    await store.upsert_shop(database, "shop-0.myshopify.com", "shpat_x", "")
    assert await run_schedules(database, redis, types, at("2030-01-01T00:30:00")) == 0
    assert await run_schedules(database, redis, types, at("2030-01-01T01:00:02")) == 1
    assert len(await _jobs(database, HOURLY.name)) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(m.startswith("schedule bad_cron: not run: ") for m in errors)
    assert any(m.startswith("schedule bad_input: not run: ") for m in errors)
