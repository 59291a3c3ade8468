"""The streaq baseline: a no-op task on a Redis-streams worker at the given concurrency.

`python -m bench.streaq_worker REDIS_URL QUEUE CONCURRENCY`; streaq's defaults otherwise,
except that the task keeps no result (`ttl=0`, as arq's baseline has `keep_result=0`) and
logs no line per task (`silent=True`; the other workers log at warning level).
"""

from __future__ import annotations

import logging
import os
import sys

from streaq import Worker

worker = Worker(
    redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"),
    queue_name=os.environ.get("BENCH_STREAQ_QUEUE", "bench-streaq"),
    concurrency=int(os.environ.get("BENCH_STREAQ_CONCURRENCY", "16")),
)


@worker.task(ttl=0, silent=True)
async def noop() -> None:
    return None


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    if len(sys.argv) > 1:
        sys.exit("configure through REDIS_URL, BENCH_STREAQ_QUEUE, BENCH_STREAQ_CONCURRENCY")
    worker.run_sync()
