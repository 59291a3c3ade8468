"""The Redis queue, in one package: the web and the worker both use only what is named here.

Postgres is the source of truth for a job's life; Redis is the transport. A job is queued on
its shop's own sorted set and workers take jobs shop by shop, round-robin, as BullMQ Pro does
with groups, so one shop's bulk run never holds every other shop back. A shop alone in the
rotation comes round again at once and fills every slot (work-conserving).

The layout (key names in `keys.py`, the Lua that keeps it in `scripts.py`):

- `arq:fair:shop:{shop}`: the shop's jobs, scored by when they are due (ms), so within a shop
  jobs run in due order (retries and delays respected). Jobs without a shop share APP_BUCKET.
- `arq:fair:ready`: the shops with a due job, scored by a turn number (`arq:fair:seq`); the
  take pops the lowest and, if the shop still has a due job, puts it back with a new turn: at
  the back of the rotation.
- `arq:fair:delayed`: shops whose first job is due later, scored by when; the take moves the
  ones now due into the rotation.
- `arq:fair:capped`: shops running SHOP_CONCURRENCY_LIMIT jobs already (`arq:fair:counts`,
  across every worker process); out of the rotation until one of their jobs finishes. This is
  the one place the per-shop cap is enforced.
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
`pause_shop` / `resume_shop` (the paused set, pause.py); a
worker's `Taker` with `take` and `finish` (`done`, `later`, `give_back`) (take.py); the
reconciler's `find`, `repair`, `place_shops`, `drop_leftover` and the gauges' `depth`
(upkeep.py).
"""

from service.queue.connection import connect, ping, redis_settings
from service.queue.enqueue import enqueue, enqueue_many, reschedule, wake
from service.queue.keys import QUEUE_NAME, WAKE_CHANNEL
from service.queue.pause import pause_shop, resume_shop
from service.queue.take import Finish, Taken, Taker, done, give_back, later
from service.queue.upkeep import Found, depth, drop_leftover, find, place_shops, repair
from service.queue.wire import deserialize, serialize

__all__ = [
    "QUEUE_NAME",
    "WAKE_CHANNEL",
    "Finish",
    "Found",
    "Taken",
    "Taker",
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
    "ping",
    "place_shops",
    "redis_settings",
    "repair",
    "reschedule",
    "resume_shop",
    "serialize",
    "wake",
]
