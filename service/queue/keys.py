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
SHOP_QUEUE_PREFIX = "arq:fair:shop:"  # + shop: its due jobs, scored by rank (priority, due)
LATER_PREFIX = "arq:fair:later:"  # + shop: its jobs due later, scored by due time (ms)
BAND = "arq:fair:band"  # job id -> its priority band, for a job in a later or blocked set
READY = "arq:fair:ready"  # shops with a due job, scored by turn number
DELAYED = "arq:fair:delayed"  # shops whose first job is due later, scored by when (ms)
CAPPED = "arq:fair:capped"  # shops at SHOP_CONCURRENCY_LIMIT, out of the rotation
PAUSED = "arq:fair:paused"  # shops paused by an operator: out of the rotation until resumed
COUNTS = "arq:fair:counts"  # shop -> its jobs running, across every worker
RUNNING = "arq:fair:running"  # job id -> lease deadline (ms) of a taken job
# job id -> "rank shop type caps[ !]": where a taken job goes back to, the caps it counts
# toward, and " !" when a wake came while it ran (scripts.py `parse_taken`)
TAKEN = "arq:fair:taken"
# Per-type and per-key concurrency (JobType.concurrency, JobType.concurrency_key): running
# counts by cap name ("t:TYPE", "k:SHOP|TYPE|KEY"), the jobs each cap holds back, and the
# caps that hold some back.
CAP_COUNTS = "arq:fair:capcounts"  # cap name -> its jobs running, across every worker
BLOCKED_PREFIX = "arq:fair:blocked:"  # + cap name: the jobs it holds back, scored by rank
BLOCKED_SHOP = "arq:fair:blockedshop"  # job id -> its shop, for a held-back job
BLOCKING = "arq:fair:blocking"  # the cap names holding some job back
JOB_KEY = "arq:fair:jobkey"  # job id -> its concurrency key (types that have one)

SEQ = "arq:fair:seq"  # the turn counter of READY
PAUSED = "arq:fair:paused"  # shops whose work is paused (JobsClient.pause_shop)
# The bucket of jobs that belong to no shop (the app's own): one more turn in the rotation.
APP_BUCKET = "*app*"

WAKE_CHANNEL = "shopjobs:wake"  # published on every enqueue: idle workers poll at once


def shop_queue(shop: str | None) -> str:
    """The sorted set of a shop's due jobs (the app's own bucket for None)."""
    return SHOP_QUEUE_PREFIX + (shop or APP_BUCKET)


def later_queue(shop: str | None) -> str:
    """The sorted set of a shop's jobs due later."""
    return LATER_PREFIX + (shop or APP_BUCKET)


# Priorities run from 0 (the default of background work) to MAX_PRIORITY; a job's rank in its
# shop's set is when it came due (ms) less its priority times RANK_BAND, so higher priority
# first, then due order. A priority-0 job's rank is its due time: the score every earlier
# release wrote and reads, so a previous release's worker still takes what this one queues
# (during a rolling deploy; it takes higher priorities as due at once). Epoch milliseconds stay
# below RANK_BAND until the year 2248, and every rank within 2**53 (exact in Lua doubles).
MAX_PRIORITY = 9
RANK_BAND = 2**43
