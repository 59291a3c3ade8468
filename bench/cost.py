"""Cost per job on the shared components (issue 27): what one job costs Postgres and Redis,
for shopjobs and for Procrastinate (the Postgres peer), and the jobs/s one core of each carries.

For each system and each kind of job (no-op; 20 ms in ten steps, shopjobs' `echo` reporting
progress after each, Procrastinate's task just sleeping them, having no progress reports), N
jobs are queued and run by one worker process, and between the moment before they are queued
and the moment the last is done:

- Postgres CPU: user + system time of the postmaster and all its children (backends,
  walwriter, checkpointer, autovacuum...) from /proc;
- WAL bytes: `pg_wal_lsn_diff(pg_current_wal_lsn(), before)`;
- Redis CPU: `INFO cpu` (used_cpu_user + used_cpu_sys) and commands: `INFO commandstats`
  (scripts' own calls included; INFO and CONFIG not counted).

The window includes queueing (one INSERT per thousand jobs for both, the Redis entries for
shopjobs) and the worker's start: the whole life of a job on the shared components. Each
figure is divided by N. The ceilings are 1 / (CPU seconds per job): the jobs/s that would keep
one core of that server busy, everything else (workers, network) scaled out.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench import peers
from bench.cpu import TICKS, children, pid_from_file, process_times
from bench.fairness import redis_counters
from bench.stack import Proc, Stack, worker_command
from bench.throughput import add_shopjobs_jobs, echo_input
from service import queue
from tools.services import free_port

KINDS = ("noop", "sleep_20ms")
# The harness's own polls cost the servers too (one Redis script; one count over
# Procrastinate's partial index of unfinished jobs): a few a second keeps that under 1%.
COST_POLL_SECONDS = 0.05


def pg_cpu_seconds(stack: Stack) -> float:
    """CPU seconds of the postmaster, its live children, and its children that have exited
    (a closed connection's backend: the postmaster's cutime + cstime, once it has reaped it)."""
    postmaster = pid_from_file(stack.pg_pid_file)
    if postmaster is None:
        raise RuntimeError("no postmaster pid: Postgres CPU cannot be read")
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[13]) + int(fields[14])) / TICKS
    for pid in [postmaster, *children(postmaster)]:
        times = process_times(pid)
        if times is not None:
            total += times[0] + times[1]
    return total


class Meter:
    """Postgres CPU, WAL, Redis CPU and commands between start() and stop()."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    async def _read(self) -> tuple[float, Any, int, float]:
        assert self.stack.pg is not None and self.stack.redis is not None
        lsn = await self.stack.pg.fetchval("SELECT pg_current_wal_lsn()")
        calls, redis_cpu = await redis_counters(self.stack.redis)
        return pg_cpu_seconds(self.stack), lsn, calls, redis_cpu

    async def start(self) -> None:
        self.began = time.perf_counter()
        self.before = await self._read()

    async def stop(self, jobs: int) -> dict[str, float]:
        assert self.stack.pg is not None
        seconds = time.perf_counter() - self.began
        pg_cpu, lsn, calls, redis_cpu = await self._read()
        wal = await self.stack.pg.fetchval("SELECT pg_wal_lsn_diff($1, $2)", lsn, self.before[1])
        return {
            "jobs": jobs,
            "seconds": round(seconds, 3),
            "jobs_per_second": round(jobs / seconds, 1),
            "pg_cpu_us_per_job": round((pg_cpu - self.before[0]) / jobs * 1e6, 1),
            "wal_bytes_per_job": round(float(wal) / jobs, 1),
            "redis_cpu_us_per_job": round((redis_cpu - self.before[3]) / jobs * 1e6, 1),
            "redis_commands_per_job": round((calls - self.before[2]) / jobs, 2),
        }


async def _wait(unfinished: Any, proc: Proc, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await unfinished() > 0:
        proc.check_alive(what)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: jobs still unfinished after {timeout:g} s")
        await asyncio.sleep(COST_POLL_SECONDS)


async def shopjobs(stack: Stack, n: int, concurrency: int, sleep_ms: int, timeout: float) -> dict:
    assert stack.redis is not None and stack.pg is not None
    redis, pg = stack.redis, stack.pg
    await stack.reset()
    await pg.execute("CHECKPOINT")
    meter = Meter(stack)
    await meter.start()
    await add_shopjobs_jobs(stack, n, echo_input(sleep_ms))
    proc = stack.spawn(
        worker_command(),
        stack.env(worker_concurrency=concurrency, worker_health_port=free_port()),
        "shopjobs-cost",
    )
    try:

        async def unfinished() -> int:
            return int((await queue.depth(redis))[0])

        await _wait(unfinished, proc, "shopjobs worker", timeout)
        result = await meter.stop(n)
    finally:
        proc.stop()
    rows = await pg.fetchval("SELECT count(*) FROM jobs WHERE status = 'completed'")
    if rows != n:
        raise RuntimeError(f"shopjobs cost run: {rows} of {n} rows completed")
    return result


async def procrastinate(
    stack: Stack, n: int, concurrency: int, sleep_ms: int, timeout: float
) -> dict:
    assert stack.pg is not None
    await stack.reset()
    await peers.procrastinate_schema(stack)
    await stack.pg.execute("CHECKPOINT")
    meter = Meter(stack)
    await meter.start()
    if sleep_ms:
        await peers.procrastinate_defer(stack, n, "sleep", {"sleep_ms": sleep_ms})
    else:
        await peers.procrastinate_defer(stack, n, "noop", {})
    proc = peers.procrastinate_worker(stack, concurrency)
    try:
        await _wait(lambda: peers.procrastinate_unfinished(stack), proc, "procrastinate", timeout)
        result = await meter.stop(n)
    finally:
        proc.stop()
    return result


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def ceilings(entry: dict[str, Any], uses_redis: bool) -> dict[str, float | None]:
    """Jobs/s one core of Postgres and of Redis carries at the measured cost per job (Redis:
    only for a system that uses it; Procrastinate's figure is Redis idling)."""
    pg, redis = entry["pg_cpu_us_per_job"], entry["redis_cpu_us_per_job"]
    return {
        "pg_core_jobs_per_second": round(1e6 / pg) if pg > 0 else None,
        "redis_core_jobs_per_second": round(1e6 / redis) if uses_redis and redis > 0 else None,
    }


async def measure(stack: Stack, plan: Any, step: Any, done: Any) -> dict[str, Any]:
    """Both systems, both kinds of job; see the module's docstring."""
    runs: dict[str, dict[str, Any]] = {}
    sizes = {"noop": (plan.cost_jobs, 50, 0), "sleep_20ms": (plan.cost_sleep_jobs, 10, 20)}
    systems: list[str] = ["shopjobs"]
    reason = peers.problem("procrastinate")
    if reason is None:
        systems.append("procrastinate")
    for system in systems:
        runs[system] = {}
        for kind in KINDS:
            n, concurrency, sleep_ms = sizes[kind]
            step(f"cost per job: {system}, {kind}, {n} jobs")
            runner = shopjobs if system == "shopjobs" else procrastinate
            try:
                entry = await runner(stack, n, concurrency, sleep_ms, plan.run_timeout * 4)
            except Exception as error:
                if system == "shopjobs":
                    raise
                reason = peers._reason(error)
                runs.pop(system, None)
                done()
                break
            ceiling = ceilings(entry, uses_redis=system == "shopjobs")
            runs[system][kind] = {
                "concurrency": concurrency, "sleep_ms": sleep_ms, **entry, **ceiling
            }  # fmt: skip
            done()
    compared: dict[str, Any] = {}
    if "procrastinate" in runs:
        for kind in KINDS:
            ours, theirs = runs["shopjobs"][kind], runs["procrastinate"][kind]
            compared[kind] = {
                "pg_cpu": ratio(ours["pg_cpu_us_per_job"], theirs["pg_cpu_us_per_job"]),
                "wal_bytes": ratio(ours["wal_bytes_per_job"], theirs["wal_bytes_per_job"]),
            }
    return {
        "systems": runs,
        "procrastinate": {"available": "procrastinate" in runs, "reason": reason},
        "vs_procrastinate": compared,
    }
