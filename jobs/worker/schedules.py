"""Running the job types' schedules (JobType.schedule), on the worker's arq cron.

Every SCHEDULE_SECONDS, whichever worker gets the cron tick looks at each scheduled type: if
its latest cron tick has no runs yet, they are written (service/store/schedules.py decides,
once, in Postgres, however many workers look) and queued, each due at the tick plus its
shop's offset in the interval (service/core/schedule_times.py). A worker that dies between
writing and queueing leaves pending rows the reconciler queues once they are due.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from arq.connections import ArqRedis
from databases import Database
from pydantic import ValidationError

from jobs.types import JobType
from service import queue, store
from service.core.schedule_times import CronSimError, latest_tick, next_tick
from service.intake import Source, concurrency_key, queue_priority

logger = logging.getLogger("shopjobs.worker")

SCHEDULE_SECONDS = 5  # how often the schedules are looked at (a divisor of 60)
QUEUE_CHUNK = 200  # queue entries put concurrently


async def run_schedules(
    database: Database,
    redis: ArqRedis,
    types: dict[str, JobType],
    now: datetime | None = None,
) -> int:
    """Write and queue the runs of every scheduled type's latest tick at `now` (default: the
    clock) that has none yet; how many runs were created."""
    now = now or datetime.now(UTC)
    created = 0
    for job_type in types.values():
        schedule = job_type.schedule
        if schedule is None:
            continue
        try:
            tick = latest_tick(schedule, now)
            interval = (next_tick(schedule, tick) - tick).total_seconds()
            job_input = job_type.input_model.model_validate(schedule.input).model_dump(
                mode="json", exclude_unset=True
            )
        except (CronSimError, ValidationError) as exc:
            # The type's own mistake: it must not stop the types after it (nor pass for an
            # outage, as the caller's warning would say).
            logger.error("schedule %s: not run: %s", job_type.name, exc)
            continue
        runs = await store.create_tick_jobs(
            database,
            job_type.name,
            tick,
            per_shop=schedule.per_shop,
            input_json=orjson.dumps(job_input).decode(),
            interval_seconds=interval,
        )
        if not runs:
            continue
        for start in range(0, len(runs), QUEUE_CHUNK):
            await asyncio.gather(
                *(
                    queue.enqueue(
                        redis,
                        job_type.name,
                        str(run.id),
                        shop=run.shop,
                        defer_seconds=max(0.0, run.run_at.timestamp() - time.time() + 0.002),
                        priority=queue_priority(job_type, Source.SCHEDULE),
                        key=concurrency_key(job_type, job_input),
                    )
                    for run in runs[start : start + QUEUE_CHUNK]
                )
            )
        logger.info(
            "schedule %s: %d run(s) of tick %s queued", job_type.name, len(runs), tick.isoformat()
        )
        created += len(runs)
    return created


async def schedules(ctx: dict[str, Any]) -> int:
    """The arq cron job."""
    runtime = ctx["runtime"]
    try:
        return await run_schedules(runtime.database, runtime.redis, runtime.types)
    except Exception as exc:  # a dependency is down: the next look tries again
        logger.warning("schedules skipped: %s", exc)
        return 0
