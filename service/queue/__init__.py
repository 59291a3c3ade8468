"""The Redis queue, in one package: the web and the worker both use only what is named here.

Postgres is the source of truth for a job's life; Redis is the transport. A job is queued on
its shop's own sorted set and workers take jobs shop by shop, round-robin, as BullMQ Pro does
with groups, so one shop's bulk run never holds every other shop back. A shop alone in the
rotation comes round again at once and fills every slot (work-conserving).

The layout (key names in `keys.py`, the Lua that keeps it in `scripts.py`):

- `arq:fair:shop:{shop}`: the shop's due jobs, scored by rank: priority band first (higher
  priority first), then when they came due (ms). `arq:fair:later:{shop}`: its jobs due later
  (retries, delays, waits), scored by when; a take moves the ones now due into the ranked set
  (their band kept in `arq:fair:band`). Jobs without a shop share APP_BUCKET.
- `arq:fair:ready`: the shops with a due job, scored by a turn number (`arq:fair:seq`); the
  take pops the lowest and, if the shop still has a due job, puts it back with a new turn: at
  the back of the rotation.
- `arq:fair:delayed`: shops whose first job is due later, scored by when; the take moves the
  ones now due into the rotation.
- `arq:fair:capped`: shops running SHOP_CONCURRENCY_LIMIT jobs already (`arq:fair:counts`,
  across every worker process); out of the rotation until one of their jobs finishes. This is
  the one place the per-shop cap is enforced. `arq:fair:paused`: shops an operator paused, out
  of the rotation until resumed (their jobs wait in their sets; running ones finish).
- Per-type and per-key caps (`JobType.concurrency`, `JobType.concurrency_key`): running counts
  by cap in `arq:fair:capcounts`; a job whose cap is full when its turn comes is held back in
  `arq:fair:blocked:{cap}` (out of its shop) until one of that cap's jobs ends, which puts
  the longest held back in its shop again.
- `arq:fair:running` (job id -> lease deadline) and `arq:fair:taken` (job id -> "due shop"): a
  taken job leaves its shop's set; if its worker dies, a later take finds its lease lapsed
  (arq's in-progress key gone) and puts it back where it was.
- `arq:queue`, arq's own sorted set: arq's cron ticks, and entries queued by earlier releases
  (before per-shop queues, or with the retired QUEUE_FAIRNESS=fifo); the take reads it first.

Every step is a sorted-set or hash operation on one shop or one job: taking or finishing a job
costs O(log n), whatever the size of any shop's backlog. A shop is in at most one of ready,
delayed and capped; the scripts keep that, atomically.

The API: `connect` / `ping` (connection.py); `enqueue` / `enqueue_many` / `wake` (a
suspended job due now) / `reschedule` (a debounced job due later) (enqueue.py);
a worker's `Taker` with `take` and `finish` (`done`, `later`, `give_back`) (take.py); the
reconciler's `find`, `repair`, `place_shops`, `drop_leftover`, the operator's `pause_shop` /
`resume_shop` / `paused_shops` and the gauges' `depth` (upkeep.py).
"""

from service.queue.connection import connect, ping, redis_settings
from service.queue.enqueue import (
    Entry,
    check_priority,
    enqueue,
    enqueue_many,
    reschedule,
    wake,
)
from service.queue.keys import MAX_PRIORITY, QUEUE_NAME, WAKE_CHANNEL
from service.queue.take import Finish, Taken, Taker, done, give_back, later
from service.queue.upkeep import (
    Found,
    depth,
    drop_leftover,
    find,
    pause_shop,
    paused_shops,
    place_shops,
    repair,
    resume_shop,
)
from service.queue.wire import deserialize, serialize

__all__ = [
    "MAX_PRIORITY",
    "QUEUE_NAME",
    "WAKE_CHANNEL",
    "Entry",
    "Finish",
    "Found",
    "Taken",
    "Taker",
    "check_priority",
    "connect",
    "depth",
    "deserialize",
    "done",
    "drop_leftover",
    "enqueue",
    "enqueue_many",
    "find",
    "give_back",
    "later",
    "pause_shop",
    "paused_shops",
    "ping",
    "place_shops",
    "redis_settings",
    "repair",
    "reschedule",
    "resume_shop",
    "serialize",
    "wake",
]
