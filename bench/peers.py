"""The Python peers beside arq and SAQ (issue 27): Celery 5, Procrastinate 3 and streaq.

Each runs the same no-op jobs at the same concurrencies, queued up front and timed by the same
`throughput.watch` loop from the system's own record of unfinished jobs:

- Celery: Redis broker, no result backend, `acks_late` (bench/celery_worker.py), the threads
  pool at `-c CONCURRENCY` (no-op jobs do no CPU work that processes would spread), gossip,
  mingle and heartbeat off. Unfinished = the queue's list + the broker's `unacked` hash (with
  `acks_late` a delivered job stays there until it has run).
- Procrastinate: its own schema on the benchmark's Postgres (bench/procrastinate_worker.py);
  unfinished = rows `todo` or `doing`.
- streaq: Redis streams (bench/streaq_worker.py); unfinished = the stream's length (a
  finished task's entry is deleted).

A peer that cannot be imported (not installed) or whose worker does not run is reported
`available: false` with the reason, never as a failure of the benchmark.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from bench.stack import Proc, Stack
from bench.throughput import Progress, Run, watch

PEERS = ("celery", "procrastinate", "streaq")
CELERY_QUEUE = "bench-celery"
STREAQ_QUEUE = "bench-streaq"
PROCRASTINATE_SCHEMA = "procrastinate"
ENQUEUE_CHUNK = 1000
PROCRASTINATE_POLL_SECONDS = 0.05


def problem(peer: str) -> str | None:
    """None when the peer's package imports, else why not."""
    module = {"celery": "celery", "procrastinate": "procrastinate", "streaq": "streaq"}[peer]
    try:
        importlib.import_module(module)
    except Exception as error:  # any import failure: the peer is unavailable, not broken
        return f"{module} not importable: {error}"
    return None


async def run_peer(
    peer: str, stack: Stack, *, n: int, concurrency: int, timeout: float,
    progress: Progress | None = None,
) -> Run:  # fmt: skip
    runner = {"celery": celery, "procrastinate": procrastinate, "streaq": streaq}[peer]
    return await runner(stack, n=n, concurrency=concurrency, timeout=timeout, progress=progress)


async def measure(
    stack: Stack, concurrencies: tuple[int, ...], n: int, timeout: float,
    step: Callable[[str], Progress], done: Callable[[], None],
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Every peer at every concurrency: {peer: {"available", "reason", "runs"}}."""
    systems: dict[str, dict[str, Any]] = {}
    for peer in PEERS:
        reason = problem(peer)
        entry: dict[str, Any] = {"available": reason is None, "reason": reason, "runs": []}
        systems[peer] = entry
        for concurrency in concurrencies:
            progress = step(f"{peer} c={concurrency}")
            if entry["available"]:
                try:
                    run = await run_peer(
                        peer, stack, n=n, concurrency=concurrency, timeout=timeout,
                        progress=progress,
                    )  # fmt: skip
                    entry["runs"].append(run.as_dict())
                except Exception as error:  # the peer could not run here: say so, go on
                    entry.update(available=False, runs=[], reason=_reason(error))
            done()
    return systems


def _reason(error: Exception) -> str:
    text = "".join(traceback.format_exception_only(error)).strip()
    return text[-600:]


async def _run(
    stack: Stack, run: Run, proc: Proc, unfinished: Callable[[], Awaitable[int]],
    timeout: float, progress: Progress | None,
) -> Run:  # fmt: skip
    async def count_done() -> int:
        return run.n - await unfinished()

    try:
        return await watch(stack, run, count_done, [proc], timeout, progress)
    finally:
        proc.stop()


# -- Celery ---------------------------------------------------------------------------------


async def celery(
    stack: Stack, *, n: int, concurrency: int, timeout: float, progress: Progress | None = None
) -> Run:
    assert stack.redis is not None
    redis = stack.redis
    await stack.reset()
    env = stack.env(bench_celery_queue=CELERY_QUEUE)
    await asyncio.to_thread(_celery_enqueue, stack.redis_url, n)
    if int(await redis.llen(CELERY_QUEUE)) != n:
        raise RuntimeError("celery: the jobs were not all queued")
    run = Run(
        "celery", concurrency, n,
        settings={"pool": "threads", "acks_late": True, "result_backend": None,
                  "prefetch_multiplier": 16},
    )  # fmt: skip
    args = [
        sys.executable, "-m", "celery", "-A", "bench.celery_worker", "worker", "-Q", CELERY_QUEUE,
        "--pool", "threads", "-c", str(concurrency), "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    proc = stack.spawn(args, env, "celery")

    async def unfinished() -> int:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.llen(CELERY_QUEUE)
            pipe.hlen("unacked")
            queued, unacked = await pipe.execute()
        return int(queued) + int(unacked)

    return await _run(stack, run, proc, unfinished, timeout, progress)


def _celery_enqueue(redis_url: str, n: int) -> None:
    """`send_task` n times on one connection (the producer pool's), as an app would."""
    from celery import Celery

    app = Celery("bench-enqueue", broker=redis_url)
    app.conf.update(task_ignore_result=True, result_backend=None)
    try:
        with app.producer_or_acquire() as producer:
            for _ in range(n):
                app.send_task("noop", queue=CELERY_QUEUE, producer=producer)
    finally:
        app.close()


# -- Procrastinate --------------------------------------------------------------------------


async def procrastinate_schema(stack: Stack) -> None:
    """Procrastinate's tables in their own schema, created once; emptied before every run."""
    assert stack.pg is not None
    exists = await stack.pg.fetchval(
        "SELECT to_regclass($1)", f"{PROCRASTINATE_SCHEMA}.procrastinate_jobs"
    )
    if exists is None:
        await stack.pg.execute(f"CREATE SCHEMA IF NOT EXISTS {PROCRASTINATE_SCHEMA}")
        from bench.procrastinate_worker import make_app

        app = make_app(stack.database_url, 2)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
    await stack.pg.execute(
        f"TRUNCATE {PROCRASTINATE_SCHEMA}.procrastinate_jobs RESTART IDENTITY CASCADE"
    )


async def procrastinate_defer(stack: Stack, n: int, task: str, kwargs: dict[str, Any]) -> None:
    """n jobs deferred in batches (`batch_defer_async`: one statement per batch)."""
    from bench.procrastinate_worker import make_app

    app = make_app(stack.database_url, 2)
    async with app.open_async():
        deferrer = app.configure_task(task, queue="bench")
        for start in range(0, n, ENQUEUE_CHUNK):
            await deferrer.batch_defer_async(*([kwargs] * min(ENQUEUE_CHUNK, n - start)))


async def procrastinate_unfinished(stack: Stack) -> int:
    assert stack.pg is not None
    return int(
        await stack.pg.fetchval(
            f"SELECT count(*) FROM {PROCRASTINATE_SCHEMA}.procrastinate_jobs "
            "WHERE status IN ('todo', 'doing')"
        )
    )


def procrastinate_worker(stack: Stack, concurrency: int) -> Proc:
    env = stack.env(bench_procrastinate_concurrency=concurrency)
    args = [sys.executable, "-m", "bench.procrastinate_worker"]
    return stack.spawn(args, env, "procrastinate")


async def procrastinate(
    stack: Stack, *, n: int, concurrency: int, timeout: float, progress: Progress | None = None
) -> Run:
    await stack.reset()
    await procrastinate_schema(stack)
    await procrastinate_defer(stack, n, "noop", {})
    run = Run(
        "procrastinate", concurrency, n,
        settings={"schema": PROCRASTINATE_SCHEMA, "listen_notify": True,
                  "pool_max_size": concurrency + 2},
    )  # fmt: skip
    proc = procrastinate_worker(stack, concurrency)
    # The count is a query on the same Postgres: asked every 5 ms (the harness's poll) it would
    # take a good part of a core from Procrastinate itself, so it is asked every 50 ms.
    last: list[float] = [0.0, float(n)]

    async def unfinished() -> int:
        now = time.monotonic()
        if now - last[0] >= PROCRASTINATE_POLL_SECONDS:
            last[:] = [now, float(await procrastinate_unfinished(stack))]
        return int(last[1])

    return await _run(stack, run, proc, unfinished, timeout, progress)


# -- streaq ---------------------------------------------------------------------------------


async def streaq(
    stack: Stack, *, n: int, concurrency: int, timeout: float, progress: Progress | None = None
) -> Run:
    assert stack.redis is not None
    redis = stack.redis
    await stack.reset()
    env = stack.env(bench_streaq_queue=STREAQ_QUEUE, bench_streaq_concurrency=concurrency)
    # Queued by a process of its own: streaq's client is configured at import, from the
    # environment, like its worker.
    enqueue = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _STREAQ_ENQUEUE, str(n), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await enqueue.communicate()
    if enqueue.returncode != 0:
        raise RuntimeError(f"streaq enqueue failed: {output.decode()[-1500:]}")
    streams = [key async for key in redis.scan_iter(match="*", _type="stream", count=1000)]
    if not streams:
        raise RuntimeError("streaq: no stream after queueing")
    run = Run("streaq", concurrency, n, settings={"ttl": 0, "silent": True})
    args = [sys.executable, "-m", "bench.streaq_worker"]
    proc = stack.spawn(args, env, "streaq")

    async def unfinished() -> int:
        async with redis.pipeline(transaction=False) as pipe:
            for key in streams:
                pipe.xlen(key)
            return sum(int(x) for x in await pipe.execute())

    return await _run(stack, run, proc, unfinished, timeout, progress)


_STREAQ_ENQUEUE = """
import sys, anyio
from bench.streaq_worker import noop, worker

async def main(n):
    async with worker:
        for start in range(0, n, 1000):
            await worker.enqueue_many([noop.enqueue() for _ in range(min(1000, n - start))])

anyio.run(main, int(sys.argv[1]))
"""
