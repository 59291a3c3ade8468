"""The Celery 5 baseline: a no-op task on a Redis broker, no result backend, `acks_late`.

`celery -A bench.celery_worker worker -Q QUEUE --pool threads -c CONCURRENCY ...` (the harness
adds the flags, bench/peers.py), configured through the environment: REDIS_URL and
BENCH_CELERY_QUEUE. Tuned as Celery's "Optimizing" guide says for many short tasks: results
ignored (no backend), a high prefetch multiplier, and the worker's gossip, mingle and
heartbeat events off (the harness passes those flags).
"""

from __future__ import annotations

import os

from celery import Celery

QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "bench-celery")

app = Celery("bench", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
app.conf.update(
    task_acks_late=True,  # as the issue asks: a job is acknowledged once it has run
    task_ignore_result=True,
    result_backend=None,
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=16,  # "many short tasks: set the multiplier high"
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop() -> None:
    return None
