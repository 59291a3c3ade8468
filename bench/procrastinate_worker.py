"""The Procrastinate 3 baseline: async tasks on Postgres, in their own schema `procrastinate`
of the benchmark's Postgres server (beside shopjobs' tables, in the same database).

`python -m bench.procrastinate_worker`, configured through the environment: DATABASE_URL,
BENCH_PROCRASTINATE_CONCURRENCY. Procrastinate's defaults otherwise (LISTEN/NOTIFY on,
finished jobs kept, as shopjobs keeps completed rows), with a connection pool as large as
the concurrency, as its concurrency guide advises for async jobs.
"""

from __future__ import annotations

import asyncio
import logging
import os

from procrastinate import App, PsycopgConnector

SCHEMA = "procrastinate"
QUEUE = "bench"
CONCURRENCY = int(os.environ.get("BENCH_PROCRASTINATE_CONCURRENCY", "10"))
PROGRESS_STEPS = 10  # like the `echo` job's steps; Procrastinate has no progress reports


def make_app(dsn: str, pool_size: int) -> App:
    return App(
        connector=PsycopgConnector(
            conninfo=dsn,
            kwargs={"options": f"-c search_path={SCHEMA}"},
            min_size=1,
            max_size=pool_size,
        )
    )


app = make_app(os.environ.get("DATABASE_URL", "postgresql:///postgres"), CONCURRENCY + 2)


@app.task(name="noop", queue=QUEUE)
async def noop() -> None:
    return None


@app.task(name="sleep", queue=QUEUE)
async def sleep(sleep_ms: int) -> None:
    for _ in range(PROGRESS_STEPS):
        await asyncio.sleep(sleep_ms / 1000 / PROGRESS_STEPS)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    app.run_worker(queues=[QUEUE], concurrency=CONCURRENCY, wait=True)
