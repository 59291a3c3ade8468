"""The raw-arq baseline: stock `arq.worker.Worker` running a no-op function, no mirroring.

`arq bench.arq_worker.WorkerSettings`, configured by the harness through the environment:
BENCH_ARQ_QUEUE, BENCH_ARQ_MAX_JOBS (concurrency) and BENCH_ARQ_POLL_DELAY. Everything else is
arq 0.28's default (pickle, queue_read_limit), except keep_result=0: shopjobs keeps no arq
result either, and writing one would only slow the baseline down.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from arq.connections import RedisSettings


async def noop(ctx: dict[str, Any]) -> None:
    return None


class WorkerSettings:
    functions: ClassVar = [noop]
    redis_settings = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    queue_name = os.environ.get("BENCH_ARQ_QUEUE", "bench:arq")
    max_jobs = int(os.environ.get("BENCH_ARQ_MAX_JOBS", "10"))
    poll_delay = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.5"))
    keep_result = 0
