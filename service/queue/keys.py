"""Every Redis key and channel of the queue, named once (arq keeps its own in `constants.py`).

arq's own keys (the job payload, the in-progress marker, the retry counter, the result) keep
arq's prefixes, so arq's cron, its tooling and entries queued by earlier releases still work.
The per-shop layout is ours; `service/queue/__init__.py` describes what each key holds.
"""

from __future__ import annotations

from arq.constants import (
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)

# arq's one sorted set: cron ticks, and entries queued by a release before per-shop queues.
QUEUE_NAME = "arq:queue"
JOB = job_key_prefix  # job id -> payload (JSON: function, args, enqueue time)
HELD = in_progress_key_prefix  # job id -> "1" while a worker holds it (expires with its lease)
RETRY = retry_key_prefix  # arq's try counter (arq's run_job: cron)
RESULT = result_key_prefix  # arq's kept result (cron); also blocks a re-enqueue of the id

# The per-shop layout (fair scheduling across shops).
SHOP_QUEUE_PREFIX = "arq:fair:shop:"  # + shop: that shop's jobs, scored by due time (ms)
READY = "arq:fair:ready"  # shops with a due job, scored by turn number
DELAYED = "arq:fair:delayed"  # shops whose first job is due later, scored by when (ms)
CAPPED = "arq:fair:capped"  # shops at SHOP_CONCURRENCY_LIMIT, out of the rotation
COUNTS = "arq:fair:counts"  # shop -> its jobs running, across every worker
RUNNING = "arq:fair:running"  # job id -> lease deadline (ms) of a taken job
TAKEN = "arq:fair:taken"  # job id -> "due shop": where a taken job goes back to
SEQ = "arq:fair:seq"  # the turn counter of READY
PAUSED = "arq:fair:paused"  # shops whose work is paused (JobsClient.pause_shop)
# The bucket of jobs that belong to no shop (the app's own): one more turn in the rotation.
APP_BUCKET = "*app*"

WAKE_CHANNEL = "shopjobs:wake"  # published on every enqueue: idle workers poll at once


def shop_queue(shop: str | None) -> str:
    """The sorted set of a shop's jobs (the app's own bucket for None)."""
    return SHOP_QUEUE_PREFIX + (shop or APP_BUCKET)
