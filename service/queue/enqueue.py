"""Putting jobs on the queue: one job, or many in one round trip, each on its shop's sets."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from service.queue.keys import APP_BUCKET, JOB, MAX_PRIORITY, RESULT
from service.queue.scripts import scripts
from service.queue.wire import serialize

EXPIRES_EXTRA_MS = 86_400_000  # arq's default: a queued job's key outlives its due time by a day


class Entry(NamedTuple):
    """One job to queue: arq's function (the job type), the job's id and shop, its priority
    (0 to MAX_PRIORITY, higher first within its shop) and its concurrency key, if its type
    has one (JobType.concurrency_key)."""

    job_type: str
    job_id: str
    shop: str | None
    priority: int = 0
    key: str | None = None


def check_priority(priority: int) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError("priority must be an integer")
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be from 0 to {MAX_PRIORITY}")
    return priority


def _call(entry: Entry, defer_seconds: float) -> tuple[list[str], list[str | int | bytes]]:
    """The ENQUEUE script's keys and arguments for one job."""
    now_ms = int(time.time() * 1000)
    defer_ms = int(defer_seconds * 1000) if defer_seconds > 0 else 0
    job_id, shop = entry.job_id, entry.shop
    args = [job_id] if shop is None else [job_id, shop]
    payload = serialize({"t": None, "f": entry.job_type, "a": args, "k": {}, "et": now_ms})
    keys = [JOB + job_id, RESULT + job_id]
    argv: list[str | int | bytes] = [
        job_id, payload, now_ms + defer_ms, defer_ms + EXPIRES_EXTRA_MS, shop or APP_BUCKET,
        now_ms, -check_priority(entry.priority), entry.key or "",
    ]  # fmt: skip
    return keys, argv


async def enqueue(
    redis: Redis,
    job_type: str,
    job_id: str,
    *,
    shop: str | None = None,
    defer_seconds: float = 0,
    priority: int = 0,
    key: str | None = None,
) -> bool:
    """Queue a job for the worker: arq function = the job type; arguments = id and shop.

    The entry goes to its shop's sets, taken round-robin by shop and, within the shop, by
    priority then due time. The shop domain rides along so a worker knows the job's shop
    without asking Postgres. `_job_id` semantics are arq's: the same job is never queued twice
    while it waits or runs; that case returns False.
    """
    keys, args = _call(Entry(job_type, job_id, shop, priority, key), defer_seconds)
    return bool(await scripts(redis).enqueue(keys=keys, args=args))


async def wake(redis: Redis, job_type: str, job_id: str, *, shop: str | None) -> bool:
    """Make a suspended job's entry due now (what it waited for happened); an entry that was
    lost is queued anew. False when neither was needed: a worker holds the job now."""
    now_ms = int(time.time() * 1000)
    woken = await scripts(redis).wake(keys=[], args=[job_id, now_ms, shop or APP_BUCKET])
    if woken:
        return True
    return await enqueue(redis, job_type, job_id, shop=shop)


async def reschedule(
    redis: Redis,
    job_type: str,
    job_id: str,
    *,
    shop: str | None,
    defer_seconds: float,
    priority: int = 0,
    key: str | None = None,
) -> bool:
    """Make a queued job due `defer_seconds` from now (a debounced job pushed later); an entry
    that was lost is queued anew. False when neither was needed: a worker holds the job now."""
    now_ms = int(time.time() * 1000)
    due_ms = now_ms + max(0, int(defer_seconds * 1000))
    moved = await scripts(redis).reschedule(
        keys=[], args=[job_id, due_ms, shop or APP_BUCKET, now_ms]
    )
    if moved:
        return True
    return await enqueue(
        redis, job_type, job_id, shop=shop, defer_seconds=defer_seconds, priority=priority, key=key
    )


async def enqueue_many(
    redis: Redis, jobs: Sequence[Entry | tuple[str, str, str | None]]
) -> list[bool]:
    """`enqueue` for many (job type, job id, shop[, priority, key]), due now, in one round trip
    (a pipeline of EVALSHA).

    The script's text is sent only when Redis does not have it (restarted, or SCRIPT FLUSH):
    then nothing in the pipeline ran, and it is sent again once the script is loaded. (A
    pipeline that registers the script itself asks SCRIPT EXISTS first, on every call: a
    second round trip for each group of the web's enqueues.)"""
    script = scripts(redis).enqueue
    calls = [_call(Entry(*job), 0) for job in jobs]
    for attempt in range(2):
        async with redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            try:
                answers = await pipe.execute()
            except NoScriptError:
                if attempt:
                    raise
                await redis.script_load(script.script)
                continue
        return [bool(answer) for answer in answers]
    raise AssertionError("unreachable")
