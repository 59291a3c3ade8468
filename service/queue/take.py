"""The worker's side of the queue: taking due jobs, and finishing them.

arq takes one job in four round trips (WATCH, EXISTS + ZSCORE, MULTI/PSETEX, then GET/INCR),
and every worker process races for the same head of the queue. Here one script (TAKE) takes a
whole batch of due jobs atomically: arq's queue first (cron ticks, entries queued before an
upgrade), then the shops' rotation, one shop per slot. SHOP_CONCURRENCY_LIMIT is held there,
and only there, across every worker process: a shop at its cap sits out the rotation until one
of its jobs finishes; within a shop, the highest priority due job comes first; a job whose
type (JobType.concurrency) or key (JobType.concurrency_key) is at its cap is held back until
one of that cap's jobs ends. "Take" is this Redis step; "claim" is the Postgres one that follows
(service/store/claims.py).

Finishing is group-committed (service/core/group_commit.py): done, due again later, or given
back, many jobs per round trip.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

from service.core.group_commit import GroupCommit
from service.core.states import QueueFinish
from service.queue.keys import QUEUE_NAME
from service.queue.scripts import scripts

# Lapsed leases to look at, and delayed shops to bring into the rotation, per take at most:
# no take's cost grows with what waits.
CHORES_PER_TAKE = 32


@dataclass(frozen=True)
class Taken:
    """A job a worker took off the queue: its id, its payload (None if its key expired) and
    when it was due (ms)."""

    job_id: str
    payload: bytes | None
    score: int


@dataclass(frozen=True)
class Finish:
    job_id: str
    how: QueueFinish
    run_at_ms: int = 0


def done(job_id: str) -> Finish:
    """Finish a queue entry for good."""
    return Finish(job_id, QueueFinish.DONE)


def later(job_id: str, seconds: float) -> Finish:
    """Finish a queue entry by putting it back, due `seconds` from now."""
    return Finish(job_id, QueueFinish.LATER, int((time.time() + seconds) * 1000))


def give_back(job_id: str) -> Finish:
    """Put an unfinished job back where it was, due as it was (a shutdown)."""
    return Finish(job_id, QueueFinish.GIVE_BACK)


def caps_argument(caps: Mapping[str, int]) -> str:
    """Caps as the scripts read them: "name=limit" pairs joined by commas."""
    for name in caps:
        if not name or any(c in name for c in "=,| "):
            raise ValueError(f"job type name {name!r} cannot carry a cap")
    return ",".join(f"{name}={limit}" for name, limit in sorted(caps.items()) if limit > 0)


class Taker:
    """Takes and finishes jobs for one worker process: `shop_cap` is SHOP_CONCURRENCY_LIMIT,
    `type_caps` each type's cap on its running jobs (JobType.concurrency), `key_caps` the cap
    per concurrency key of the types that have one (JobType.key_concurrency)."""

    def __init__(
        self,
        redis: Redis,
        *,
        shop_cap: int = 0,
        type_caps: Mapping[str, int] | None = None,
        key_caps: Mapping[str, int] | None = None,
    ) -> None:
        self.redis = redis
        self.shop_cap = shop_cap
        self.type_caps = caps_argument(type_caps or {})
        self.key_caps = caps_argument(key_caps or {})
        self._scripts = scripts(redis)
        self._finishes: GroupCommit[Finish, None] = GroupCommit(self._finish_group)

    async def take(self, count: int, lease_ms: int, now_ms: int, look_ahead: int) -> list[Taken]:
        """Take up to `count` due jobs, in one round trip, each held for `lease_ms`;
        `look_ahead` bounds how far into arq's own queue one take reads."""
        args = [now_ms, count, lease_ms, look_ahead, self.shop_cap, CHORES_PER_TAKE]
        flat = await self._scripts.take(
            keys=[QUEUE_NAME], args=[*args, self.type_caps, self.key_caps]
        )
        return [
            Taken(job_id=flat[i].decode(), payload=flat[i + 1], score=int(float(flat[i + 2])))
            for i in range(0, len(flat), 3)
        ]

    async def finish(self, finish: Finish) -> None:
        await self._finishes.submit(finish)

    async def _finish_group(self, finishes: list[Finish]) -> list[None]:
        args: list[str | int] = [int(time.time() * 1000), self.shop_cap]
        for f in finishes:
            args += [f.job_id, f.how.value, f.run_at_ms]
        await self._scripts.finish(keys=[QUEUE_NAME], args=args)
        return [None] * len(finishes)
