"""Fair scheduling across shops (issue 14): small shops beside one shop's big backlog.

1,000 shops send jobs at a steady rate, Zipf-distributed (a few shops send most), while one
shop holds a backlog of 100,000 jobs (fewer at the smaller sizes). Every job sleeps 20 ms. One
scenario is one window of that traffic against real worker processes:

- `idle`: the traffic alone, fair scheduling: the small shops' wait on an idle system;
- `fair`: the traffic beside the backlog, fair scheduling (the default), one and two worker
  processes: the small shops' wait while the backlog drains, and jobs/s;
- `fifo`: the same with every queue entry in one bucket (as a plain FIFO queue, arq's or the
  retired QUEUE_FAIRNESS=fifo, holds them): jobs/s on the same work (work conservation is
  fair's jobs/s over fifo's) and how long the small shops wait behind the backlog there.

A job's wait is its row's `started_at - created_at` (Postgres' clock); jobs/s counts the rows
finished inside the window. The cost of taking jobs is measured apart, with no-op jobs and no
traffic, at backlogs of 1,000, 10,000 and 100,000 (beside a thousand other shops' jobs): Redis
commands per job (INFO commandstats: scripts' own calls included) and Redis CPU per job (INFO
cpu, user + sys) while one worker takes them, the median of five windows.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import itertools
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

import orjson
from redis.asyncio import Redis

from bench.stack import SHOP, Proc, Stack, wait_for_http, worker_command
from bench.throughput import Progress, echo_input
from service import queue
from tools.services import free_port

ZIPF_EXPONENT = 1.0
ENQUEUE_CHUNK = 1000
POLL_SECONDS = 0.02
STEP_TIMEOUT = 120.0
DRAIN_SECONDS = 10.0
WARMUP_SECONDS = 1.0  # after the window: how long the small shops' last jobs may take to start
COST_WARMUP_JOBS = 100
COST_WINDOWS = 5


class QueueFairness(StrEnum):
    """How the bench queues its jobs: on their shops' sets, or all in one bucket (FIFO)."""

    SHOP = "shop"
    FIFO = "fifo"


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 1)


async def small_shops(stack: Stack, n: int) -> list[tuple[int, str]]:
    """(id, domain) of `n` shops besides the bench shop, created once."""
    assert stack.pg is not None
    await stack.pg.execute(
        """INSERT INTO shops (domain, access_token, scopes)
           SELECT 'fair-' || i || '.myshopify.com', 'shpat_bench', 'read_products'
             FROM generate_series(1, $1) AS i ON CONFLICT (domain) DO NOTHING""",
        n,
    )
    rows = await stack.pg.fetch(
        "SELECT id, domain FROM shops WHERE domain LIKE 'fair-%' ORDER BY id LIMIT $1", n
    )
    return [(row["id"], row["domain"]) for row in rows]


async def add_jobs(
    stack: Stack, shops: list[tuple[int, str]], job_input: dict[str, Any], fairness: QueueFairness
) -> list[uuid.UUID]:
    """One `echo` job per entry of `shops` (rows, then queue entries), as the web queues them."""
    assert stack.pg is not None and stack.redis is not None
    ids = [uuid.uuid4() for _ in shops]
    encoded = orjson.dumps(job_input).decode()
    for start in range(0, len(ids), 10 * ENQUEUE_CHUNK):
        part = slice(start, start + 10 * ENQUEUE_CHUNK)
        await stack.pg.execute(
            """INSERT INTO jobs (id, shop_id, type, input)
               SELECT id, shop, 'echo', $3::jsonb
                 FROM unnest($1::uuid[], $2::bigint[]) AS t(id, shop)""",
            ids[part],
            [shop_id for shop_id, _ in shops[part]],
            encoded,
        )
    for start in range(0, len(ids), ENQUEUE_CHUNK):
        # FIFO: entries without a shop share one bucket, taken in due order; the rows keep
        # their shops, and the worker reads a job's shop from its row.
        chunk = [
            ("echo", str(job_id), domain if fairness == QueueFairness.SHOP else None)
            for job_id, (_, domain) in zip(
                ids[start : start + ENQUEUE_CHUNK],
                shops[start : start + ENQUEUE_CHUNK],
                strict=True,
            )
        ]
        await queue.enqueue_many(stack.redis, chunk)
    return ids


async def start_workers(stack: Stack, processes: int, concurrency: int) -> list[Proc]:
    """Worker processes, once each answers its health check."""
    procs = []
    for _ in range(processes):
        port = free_port()
        env = stack.env(worker_concurrency=concurrency, worker_health_port=port)
        procs.append(stack.spawn(worker_command(), env, "fair-worker"))
        await wait_for_http(f"http://127.0.0.1:{port}/healthz", procs[-1], "worker")
    return procs


async def settle(stack: Stack) -> None:
    """Vacuum and analyze the jobs just written, so autovacuum does not do it mid-measurement
    (on 100,000 fresh rows it would, and the backlog's size would seem to cost)."""
    assert stack.pg is not None
    await stack.pg.execute("VACUUM ANALYZE jobs")


async def pg_now(stack: Stack) -> Any:
    assert stack.pg is not None
    return await stack.pg.fetchval("SELECT clock_timestamp()")


async def completed(stack: Stack) -> int:
    assert stack.pg is not None
    return int(await stack.pg.fetchval("SELECT count(*) FROM jobs WHERE status = 'completed'"))


async def until(
    done: Callable[[], Awaitable[bool]], procs: list[Proc], timeout: float, what: str
) -> bool:
    """Poll `done` until true (True) or `timeout` (False, or raise if `what` is given); a
    worker that died ends the run."""
    deadline = time.monotonic() + timeout
    while not await done():
        for proc in procs:
            proc.check_alive("worker")
        if time.monotonic() > deadline:
            if what:
                raise RuntimeError(f"fairness bench: {what} within {timeout:g}s")
            return False
        await asyncio.sleep(POLL_SECONDS)
    return True


class Zipf:
    """Shops drawn with probability proportional to 1 / rank**s."""

    def __init__(self, shops: list[tuple[int, str]], seed: int = 14) -> None:
        weights = [1 / (rank**ZIPF_EXPONENT) for rank in range(1, len(shops) + 1)]
        self.cumulative = list(itertools.accumulate(weights))
        self.shops = shops
        self.random = random.Random(seed)

    def draw(self) -> tuple[int, str]:
        point = self.random.random() * self.cumulative[-1]
        return self.shops[bisect.bisect_left(self.cumulative, point)]


async def traffic(
    stack: Stack, zipf: Zipf, rate: float, seconds: float, sleep_ms: int, fairness: QueueFairness
) -> list[uuid.UUID]:
    """One job every 1/rate s for `seconds`, each for a shop drawn by Zipf; their ids."""
    ids: list[uuid.UUID] = []
    began = time.perf_counter()
    for tick in itertools.count():
        due = began + tick / rate
        if due - began >= seconds:
            return ids
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        ids += await add_jobs(stack, [zipf.draw()], echo_input(sleep_ms), fairness)
    return ids


async def waits(stack: Stack, ids: list[uuid.UUID]) -> list[float]:
    assert stack.pg is not None
    rows = await stack.pg.fetch(
        """SELECT extract(epoch FROM started_at - created_at) * 1000 AS ms
             FROM jobs WHERE id = ANY($1::uuid[]) AND started_at IS NOT NULL""",
        ids,
    )
    return [float(row["ms"]) for row in rows]


async def window(
    stack: Stack,
    plan: Any,
    shops: list[tuple[int, str]],
    *,
    backlog: int,
    fairness: QueueFairness,
    processes: int,
) -> dict[str, Any]:
    """One scenario: backlog queued, workers started, a window of traffic, then figures."""
    assert stack.pg is not None and stack.redis is not None
    await stack.reset()
    big = (stack.shop_id, SHOP)
    await add_jobs(stack, [big] * backlog, echo_input(plan.fair_sleep_ms), fairness)
    zipf = Zipf(shops)
    await settle(stack)
    procs = await start_workers(stack, processes, plan.fair_concurrency)
    try:
        # Start-up (the first reconcile, scripts loading) is not what is measured.
        await traffic(stack, zipf, plan.fair_rate, WARMUP_SECONDS, plan.fair_sleep_ms, fairness)
        if backlog:  # the backlog is draining before the traffic starts

            async def draining() -> bool:
                return await completed(stack) >= plan.fair_concurrency * processes

            await until(draining, procs, STEP_TIMEOUT, "no backlog job completed")
        began, done_before = await pg_now(stack), await completed(stack)
        ids = await traffic(
            stack, zipf, plan.fair_rate, plan.fair_seconds, plan.fair_sleep_ms, fairness
        )
        ended, done_after = await pg_now(stack), await completed(stack)

        async def all_started() -> bool:
            return len(await waits(stack, ids)) == len(ids)

        await until(all_started, procs, DRAIN_SECONDS, "")  # fifo: they may wait far longer
        waited = await waits(stack, ids)
    finally:
        for proc in procs:
            proc.stop()
    seconds = (ended - began).total_seconds()
    return {
        "backlog": backlog,
        "fairness": fairness.value,
        "processes": processes,
        "concurrency": plan.fair_concurrency,
        "window_seconds": round(seconds, 2),
        "small_jobs": len(ids),
        "small_jobs_started": len(waited),
        "small_wait_p50_ms": percentile(waited, 50),
        "small_wait_p99_ms": percentile(waited, 99),
        "small_wait_max_ms": round(max(waited), 1) if waited else None,
        "jobs_per_second": round((done_after - done_before) / seconds, 1) if seconds else 0.0,
    }


async def redis_counters(redis: Redis) -> tuple[int, float]:
    """(commands run, CPU seconds used) by Redis so far; INFO and CONFIG not counted."""
    stats = await redis.info("commandstats")
    calls = sum(
        int(v["calls"])
        for k, v in stats.items()
        if not k.startswith(("cmdstat_info", "cmdstat_config"))
    )
    cpu = await redis.info("cpu")
    return calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


async def cost(
    stack: Stack, plan: Any, shops: list[tuple[int, str]], backlog: int
) -> dict[str, Any]:
    """Redis commands and CPU per job while one worker takes no-op jobs off one shop's backlog
    of `backlog`, beside two jobs of each of the other shops.

    COST_WINDOWS windows of `plan.fair_cost_jobs` jobs each; before each, as many jobs are
    added back (not counted), so the backlog stays about `backlog`. A window is short, and
    other work on the machine moves Redis' CPU time per command, so the median window counts.
    """
    assert stack.redis is not None
    await stack.reset()
    big = (stack.shop_id, SHOP)
    await add_jobs(stack, [big] * (backlog + COST_WARMUP_JOBS), echo_input(0), QueueFairness.SHOP)
    await add_jobs(stack, shops * 2, echo_input(0), QueueFairness.SHOP)
    await settle(stack)
    procs = await start_workers(stack, 1, plan.fair_concurrency)
    windows: list[dict[str, float]] = []
    try:

        async def done(count: int) -> bool:
            return await completed(stack) >= count

        await until(lambda: done(COST_WARMUP_JOBS), procs, STEP_TIMEOUT, "no warm-up")
        for _ in range(COST_WINDOWS):
            await add_jobs(stack, [big] * plan.fair_cost_jobs, echo_input(0), QueueFairness.SHOP)
            await stack.redis.config_resetstat()
            first = await completed(stack)
            calls_before, cpu_before = await redis_counters(stack.redis)
            began = time.perf_counter()
            await until(
                functools.partial(done, first + plan.fair_cost_jobs), procs, STEP_TIMEOUT,
                "the jobs did not run",
            )  # fmt: skip
            calls_after, cpu_after = await redis_counters(stack.redis)
            jobs = await completed(stack) - first
            windows.append(
                {
                    "commands_per_job": (calls_after - calls_before) / jobs,
                    "redis_cpu_us_per_job": (cpu_after - cpu_before) / jobs * 1e6,
                    "jobs_per_second": jobs / (time.perf_counter() - began),
                }
            )
    finally:
        for proc in procs:
            proc.stop()
    median = {key: round(statistics.median(w[key] for w in windows), 2) for key in windows[0]}
    return {
        "backlog": backlog,
        "jobs_per_window": plan.fair_cost_jobs,
        **median,
        "cpu_us_per_job_windows": [round(w["redis_cpu_us_per_job"], 1) for w in windows],
    }


def spread(values: list[float]) -> float | None:
    """(largest - smallest) / smallest: how far apart the figures at each backlog are."""
    if not values or min(values) <= 0:
        return None
    return round((max(values) - min(values)) / min(values), 3)


async def fairness(stack: Stack, plan: Any, progress: Progress | None = None) -> dict[str, Any]:
    """Every scenario of this module; see the module's docstring."""
    shops = await small_shops(stack, plan.fair_shops)
    # Fair and fifo alternate `fair_repeats` times: jobs/s is the best of each (noise on a
    # shared machine only ever lowers it), the small shops' p99 the worst of the fair ones.
    steps = [("idle", 0, QueueFairness.SHOP, 1)]
    for _ in range(plan.fair_repeats):
        steps += [
            ("fair", plan.fair_backlog, QueueFairness.SHOP, 1),
            ("fifo", plan.fair_backlog, QueueFairness.FIFO, 1),
        ]
    steps.append(("fair_two_processes", plan.fair_backlog, QueueFairness.SHOP, 2))
    total = len(steps) + len(plan.fair_cost_backlogs)
    result: dict[str, Any] = {
        "shops": len(shops),
        "zipf_exponent": ZIPF_EXPONENT,
        "rate_per_second": plan.fair_rate,
        "sleep_ms": plan.fair_sleep_ms,
        "backlog": plan.fair_backlog,
        "repeats": plan.fair_repeats,
    }
    runs: dict[str, list[dict[str, Any]]] = {}
    for index, (name, backlog, mode, processes) in enumerate(steps):
        if progress is not None:
            progress(index, total)
        run = await window(stack, plan, shops, backlog=backlog, fairness=mode, processes=processes)
        runs.setdefault(name, []).append(run)
    for name, windows in runs.items():
        result[name] = max(windows, key=lambda run: run["jobs_per_second"])
        result[f"{name}_runs"] = windows
    costs = []
    for index, backlog in enumerate(plan.fair_cost_backlogs):
        if progress is not None:
            progress(len(steps) + index, total)
        costs.append(await cost(stack, plan, shops, backlog))
    result["cost"] = costs
    result["commands_spread"] = spread([c["commands_per_job"] for c in costs])
    result["cpu_spread"] = spread([c["redis_cpu_us_per_job"] for c in costs])
    idle_p99 = result["idle"]["small_wait_p99_ms"]
    fair_p99s = [run["small_wait_p99_ms"] for run in runs["fair"]]
    fair_p99 = None if None in fair_p99s else max(fair_p99s)
    result["fair_p99_worst_ms"] = fair_p99
    result["p99_limit_ms"] = None if idle_p99 is None else round(2 * idle_p99 + 50, 1)
    result["p99_vs_limit"] = (
        None if fair_p99 is None or idle_p99 is None else round(fair_p99 / (2 * idle_p99 + 50), 3)
    )
    fifo_rate = result["fifo"]["jobs_per_second"]
    result["work_conservation"] = (
        round(result["fair"]["jobs_per_second"] / fifo_rate, 3) if fifo_rate else None
    )
    if progress is not None:
        progress(total, total)
    return result
