"""The worker class that `arq jobs.WorkerSettings` runs (its settings: jobs/worker/startup.py).

arq's CLI instantiates `arq.worker.Worker`; `install()` points that name at `ShopjobsWorker`,
a small subclass that closes arq's gaps we cannot close from hooks. This is the one module that
touches arq's private API (`_poll_iteration`, `_sleep_until_tasks_complete`, `_pool`,
`_handle_signals`, `_job_completion_wait`, `job_counter`, `tasks`), written against
ARQ_VERSION: `install()` refuses any other, and tests/unit/test_patched_internals.py names
this module when the pinned version or those attributes move.

- jobs are taken by the queue's own script (service/queue/take.py), shop by shop, a batch per
  poll, instead of arq's four round trips per job;

- claims are leases: arq's in-progress key lasts JOB_LEASE_SECONDS (renewed while a job runs,
  see jobs/worker/lease.py), not the largest job_timeout + 10 s;
- more than WORKER_MAX_ABANDONED_RUNS abandoned runs stop the worker as SIGTERM does, and it
  exits with EXIT_WEDGED (3) for the platform to restart it;
- a signal first turns the health endpoint to `shutting_down`, then stops taking jobs, waits
  WORKER_SHUTDOWN_GRACE_SECONDS for running ones and gives the rest back (jobs/worker/runner.py);
- the Redis client retries forever with capped backoff, so a Redis restart pauses the worker
  instead of ending it.

Status mirroring happens inside the job function (jobs/worker/runner.py), not in arq's
on_job_start/on_job_end hooks: those get no outcome, run after a decision is made, and kill the
worker if they raise. One function that claims, runs and records, in order, cannot get out of
step with itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from signal import Signals
from typing import Any
from uuid import UUID

import arq.worker
from arq.connections import create_pool
from arq.utils import timestamp_ms
from arq.version import VERSION as INSTALLED_ARQ_VERSION

from jobs.worker import health, maintenance, metrics
from jobs.worker.runner import start_runs
from jobs.worker.runtime import Incoming, Runtime
from service import queue
from service.core import cancel
from service.queue import Taken, done, later

logger = logging.getLogger("shopjobs.worker")

# The arq release whose private worker internals ShopjobsWorker overrides (pinned in
# pyproject.toml); any other is refused at start.
ARQ_VERSION = "0.28.0"
# What ShopjobsWorker overrides or reads of arq's Worker beyond its documented settings.
ARQ_PRIVATE_API = (
    "_poll_iteration",
    "_sleep_until_tasks_complete",
    "_pool",
    "_handle_signals",
    "_job_completion_wait",
    "job_counter",
    "tasks",
    "run_job",
    "heart_beat",
    "handle_sig",
    "handle_sig_wait_for_completion",
)
STARTUP_RETRY_SECONDS = 1.0
# How long the steps of shutdown that need Redis or Postgres may take, all together, before
# what is left is skipped.
CLOSE_SECONDS = 5.0
# The exit code of a worker that ended itself for too many abandoned runs (Fly restarts it).
EXIT_WEDGED = 3
# arq names the runs of cron functions (our maintenance) "cron:NAME:TIMESTAMP".
CRON_PREFIX = "cron:"


class ShopjobsWorker(arq.worker.Worker):
    # No __init__ here: arq's CLI filters WorkerSettings by the signature of `Worker.__init__`.

    async def main(self) -> None:
        """The poll loop in a task of its own: arq stops the worker by cancelling this one,
        and a cancellation lost inside a Redis retry must not keep the loop (and the process)
        going, so it is sent again until the loop ends."""
        loop = asyncio.ensure_future(self._poll_loop())
        try:
            await asyncio.shield(loop)
        except asyncio.CancelledError:
            await _cancel_until_done(loop, CLOSE_SECONDS)
            raise

    async def _poll_loop(self) -> None:
        """arq's main loop, with our way of taking jobs and waking up.

        arq sleeps `poll_delay` between polls and starts at most the free slots on each; here
        a freed slot, or a job enqueued anywhere (a Redis pub/sub wake-up), polls at once.
        """
        self._wake = asyncio.Event()
        self._chores: set[asyncio.Task[Any]] = set()
        if self._pool is None:
            self._pool = await create_pool(
                self.redis_settings,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        logger.info("starting worker for %s", ", ".join(self.functions))
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)  # builds the Runtime (build_worker_settings)
        runtime: Runtime = self.ctx["runtime"]
        self.in_progress_timeout_s = runtime.settings.job_lease_seconds
        listener = asyncio.create_task(self._listen_for_wake_ups())
        wedged = asyncio.create_task(self._stop_when_wedged(runtime))
        try:
            while True:
                await self._poll_iteration()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_delay_s)
                self._wake.clear()
        finally:
            listener.cancel()
            wedged.cancel()

    async def _stop_when_wedged(self, runtime: Runtime) -> None:
        """Too many abandoned runs (jobs/worker/abandon.py): stop as SIGTERM stops, running jobs
        given their grace; `run` then exits with EXIT_WEDGED. A 503 alone restarts nothing:
        Fly Machines are not restarted for failing checks, but a process that exits is."""
        await runtime.wedged.wait()
        if self.allow_pick_jobs:  # not already stopping
            self.handle_sig_wait_for_completion(signal.SIGTERM)

    async def _listen_for_wake_ups(self) -> None:
        """Poll as soon as a job is enqueued (service/queue/enqueue.py publishes on every enqueue),
        and stop the handler of a job cancelled while it runs here (service/core/cancel.py)."""
        runtime: Runtime = self.ctx["runtime"]
        while True:
            try:
                async with self.pool.pubsub() as pubsub:
                    await pubsub.subscribe(queue.WAKE_CHANNEL, cancel.CANCEL_CHANNEL)
                    async for message in pubsub.listen():
                        if message["type"] != "message":
                            continue
                        if _text(message["channel"]) == cancel.CANCEL_CHANNEL:
                            self._cancelled(runtime, _text(message["data"]))
                        else:
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarting: polling goes on meanwhile
                logger.debug("wake-up listener: %s", exc)
                await asyncio.sleep(1)

    async def _poll_iteration(self) -> None:
        runtime: Runtime = self.ctx["runtime"]
        free = self.max_jobs - self.job_counter
        if self.allow_pick_jobs and free > 0:
            taken = await self._take(runtime, free)
            # Cron ticks run beside the slots (_spawn_beside): fill the places they took now,
            # so that this batch is not split in two.
            ticks = sum(t.job_id.startswith(CRON_PREFIX) for t in taken)
            while ticks:
                more = await self._take(runtime, ticks)
                taken += more
                ticks = sum(t.job_id.startswith(CRON_PREFIX) for t in more)
            if taken:
                await self._start(runtime, taken)
        for job_id, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[job_id]
                task.result()
        await self.heart_beat()

    async def _take(self, runtime: Runtime, count: int) -> list[Taken]:
        return await runtime.queue.take(
            count, int(runtime.settings.job_lease_seconds * 1000), timestamp_ms(),
            self.queue_read_limit,
        )  # fmt: skip

    async def _start(self, runtime: Runtime, taken: list[Taken]) -> None:
        ours: list[Incoming] = []
        for item in taken:
            if item.job_id in self.tasks and not self.tasks[item.job_id].done():
                # Still running here: its in-progress key was lost (a Redis restart) while its
                # outcome waits for Postgres. A second run beside the first would repeat the
                # job's effects, and its Postgres lease has lapsed, so the claim would allow it.
                continue
            decoded = _decode(item)
            if decoded is None:
                await runtime.queue.finish(done(item.job_id))
            elif decoded in runtime.types:
                ours.append(Incoming(item, runtime.types[decoded]))
            elif decoded in self.functions:  # cron jobs: arq's own run_job (already claimed)
                self._spawn_beside(item.job_id, self.run_job(item.job_id, item.score))
            else:
                await _fail_unknown(runtime, item.job_id, decoded)
        if not ours:
            return
        runs = await start_runs(runtime, ours)
        for job_id, run in runs:
            self._spawn(job_id, run)

    def _spawn(self, job_id: str, run: Any) -> None:
        self.job_counter += 1
        task = self.loop.create_task(_until_cancelled(run))
        task.add_done_callback(self._slot_freed)
        self.tasks[job_id] = task

    def _spawn_beside(self, job_id: str, run: Any) -> None:
        """Run a cron tick beside the job slots, not in one.

        A tick (the reconciler, say) takes its own time; in a slot it would free that slot
        apart from the batch it was taken with, and the slots, once split, go on being taken,
        claimed and finished in two smaller batches: more round trips per job for as long as
        the worker runs.
        """
        self.tasks[job_id] = self.loop.create_task(_until_cancelled(run))

    def _cancelled(self, runtime: Runtime, job_id: str) -> None:
        """A job was cancelled: stop its handler if it runs here; if it was waiting for a bulk
        operation, cancel that on Shopify (one worker does: service/store/waits.py)."""
        if runtime.request_stop(job_id):
            logger.info("job %s cancelled: stopping its handler", job_id)
            return
        try:
            cancelled = UUID(job_id)
        except ValueError:
            return
        self._beside(maintenance.cancel_bulk_operations(runtime, cancelled))

    def _beside(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run a short chore beside the poll loop (kept referenced until it ends; its failure
        is logged, never raised)."""
        task = asyncio.ensure_future(work)
        self._chores.add(task)
        task.add_done_callback(_chore_done(self._chores))

    def _slot_freed(self, _: asyncio.Task[Any]) -> None:
        self.job_counter -= 1
        self._wake.set()

    def _begin_shutdown(self, signum: Signals) -> None:
        state: health.HealthState | None = self.ctx.get("health_state")
        if state is not None:
            state.shutting_down = True
        # arq's own summary ("◆ 0 failed") counts only its cron runs: ours replaces it.
        runtime: Runtime | None = self.ctx.get("runtime")
        totals = metrics.run_totals(runtime.metrics) if runtime is not None else {}
        logger.info(
            "%s received: no new jobs; running ones get %ss to finish; this process ran "
            "%d completed, %d failed, %d retried",
            Signals(signum).name,
            self._job_completion_wait,
            totals.get("completed", 0),
            totals.get("failed", 0),
            totals.get("retried", 0),
        )

    async def close(self) -> None:
        """arq's close, with every step that needs Redis (or Postgres) bounded in time.

        The Redis client retries without end, so that a Redis restart only pauses the worker;
        with Redis down at shutdown, arq's close would wait for it forever (the jobs giving
        themselves back, deleting the health key), and a worker told to stop never stopped.
        What cannot be done in time is left: a job not given back runs again after its lease.
        """
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        deadline = asyncio.get_running_loop().time() + CLOSE_SECONDS
        await _bounded("running jobs", asyncio.gather(*self.tasks.values()), deadline)
        await _bounded("health key", self.pool.delete(self.health_check_key), deadline)
        if self.on_shutdown:  # a connection held by an abandoned run would stall the pool's close
            await _bounded("closing connections", self.on_shutdown(self.ctx), deadline)
        await _bounded("Redis connections", self.pool.close(close_connection_pool=True), deadline)
        self._pool = None

    async def _sleep_until_tasks_complete(self) -> None:
        """Until every run has ended. arq counts the runs not yet swept from `tasks`, which the
        poll loop does; with Redis down that loop waits on Redis, and a worker with nothing left
        to run waited out the whole shutdown grace."""
        # Maintenance runs are left out: cancelled at the signal, arq's run_job catches that
        # cancellation and then records the run in Redis under `asyncio.shield`, which with
        # Redis down never ends; arq cancels them again after this wait, which ends them.
        running = [
            task
            for job_id, task in self.tasks.items()
            if not task.done() and not job_id.startswith(CRON_PREFIX)
        ]
        if running:  # none start now: allow_pick_jobs is off
            await asyncio.wait(running)

    def run(self) -> None:
        """arq's run; then, if abandoned runs are still going, the process ends without them.

        Python waits for its tasks and threads at exit; a handler that ignores cancellation,
        or blocks in a thread, would keep a worker told to stop from ever stopping.
        """
        super().run()
        runtime: Runtime | None = self.ctx.get("runtime")
        if runtime is not None and runtime.wedged.is_set():
            logger.critical(
                "exiting with code %d: too many abandoned runs (%d still going)",
                EXIT_WEDGED,
                len(runtime.abandoned),
            )
            logging.shutdown()
            os._exit(EXIT_WEDGED)
        if runtime is not None and runtime.abandoned:
            logger.warning("exiting with %d abandoned run(s) still going", len(runtime.abandoned))
            logging.shutdown()
            os._exit(0)

    def handle_sig(self, signum: Signals) -> None:
        self._begin_shutdown(signum)
        super().handle_sig(signum)

    def handle_sig_wait_for_completion(self, signum: Signals) -> None:
        self._begin_shutdown(signum)
        super().handle_sig_wait_for_completion(signum)
        # Maintenance (reconcile, retention, schedules) is idempotent and runs again on the next
        # worker: it is stopped at once, not given the jobs' grace (with Redis down it would
        # wait for Redis until the grace ran out).
        for job_id, task in self.tasks.items():
            if job_id.startswith(CRON_PREFIX) and not task.done():
                task.cancel()


async def _fail_unknown(runtime: Runtime, job_id: str, job_type: str) -> None:
    """A job of a type this worker does not know (renamed or removed in a deploy): arq would
    drop its entry, and the reconciler would queue it again every tick, for ever. It fails."""
    try:
        failed = await maintenance.fail_unknown_type(runtime.database, job_id, job_type)
    except ValueError:  # not a job id either (enqueued by hand): nothing to record
        logger.warning("queue entry %.80r of unknown function %.80r dropped", job_id, job_type)
        failed = False
    except Exception as exc:  # Postgres down: look again shortly, as a claim would
        logger.warning("job %s: unknown type %.80r not recorded (%s)", job_id, job_type, exc)
        await runtime.queue.finish(later(job_id, STARTUP_RETRY_SECONDS))
        return
    if failed:
        logger.error("job %s failed: Unknown job type %.80s", job_id, job_type)
    await runtime.queue.finish(done(job_id))


async def _bounded(what: str, step: Awaitable[Any], deadline: float) -> None:
    """Await a shutdown step until `deadline` (loop time); past it, the step is skipped.

    Not `wait_for`: it waits for the step to end once cancelled, and a Redis command retrying
    a dead server can lose its cancellation (redis-py's connect timeout), so the worker hung.
    """
    left = max(0.1, deadline - asyncio.get_running_loop().time())
    task = asyncio.ensure_future(step)
    await asyncio.wait({task}, timeout=left)
    if task.done():
        task.result()
        return
    task.cancel()
    logger.warning(
        "shutdown: %s skipped, %gs of shutdown spent (Redis or Postgres down)", what, CLOSE_SECONDS
    )


async def _cancel_until_done(task: asyncio.Task[Any], bound: float) -> None:
    """Cancel `task` until it ends, for at most `bound` seconds; a cancellation it loses (see
    `_bounded`) is sent again."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    while not task.done() and loop.time() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if not task.done():
        logger.warning("shutdown: the poll loop did not stop within %gs; left behind", bound)


async def _until_cancelled(run: Any) -> None:
    """Run a job; a cancellation (shutdown) ends it quietly, as arq's own run_job does.

    The run has already given its job back by then (jobs/worker/runner.py), and arq's close() awaits
    these tasks: a cancelled one would turn a clean shutdown into a crash.
    """
    with contextlib.suppress(asyncio.CancelledError):
        await run


def _chore_done(chores: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        chores.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("chore failed: %r", task.exception())

    return done


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(taken: Taken) -> str | None:
    """The function a queue entry calls, or None for one that cannot run.

    Payloads are JSON; anything else (a pickle pushed into Redis, say) is dropped unread.
    """
    if taken.payload is None:
        logger.warning("job %s: its payload expired, dropped", taken.job_id)
        return None
    try:
        return str(queue.deserialize(taken.payload)["f"])
    except Exception:
        logger.warning("job %s: payload is not a JSON job, dropped unread", taken.job_id)
        return None


class ArqVersionMismatch(RuntimeError):
    """The installed arq is not the release whose private internals this module overrides."""


# arq's start and end lines for a run of arq's own (run_job), and its shutdown summaries.
_ARQ_RUN_LINES = frozenset({"%6.2fs → %s(%s)%s", "%6.2fs ← %s ● %s"})


class ArqNoise(logging.Filter):
    """arq's lines that say nothing useful of this worker: the start and end of each of its
    cron runs (the schedules every few seconds, reconcile, retention: shown only when arq's
    logger is at DEBUG, `arq --verbose`; a failing one still logs its error), and its shutdown
    summaries, whose counts see only those cron runs (our jobs run outside arq's run_job), so
    they said "0 failed" after failures: ShopjobsWorker logs this process's counts instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        if message.startswith("shutdown on ") and "jobs complete" in message:
            return False
        args = record.args if isinstance(record.args, tuple) else ()
        if message in _ARQ_RUN_LINES and len(args) > 1 and str(args[1]).startswith(CRON_PREFIX):
            return logging.getLogger("arq.worker").isEnabledFor(logging.DEBUG)
        return True


def quiet_arq() -> None:
    arq_logger = logging.getLogger("arq.worker")
    if not any(isinstance(f, ArqNoise) for f in arq_logger.filters):
        arq_logger.addFilter(ArqNoise())


def install() -> None:
    """Make `arq jobs.WorkerSettings` build a ShopjobsWorker instead of arq's stock Worker.

    Only on the arq release it was written against: on another, the private methods it
    overrides may have moved, and the worker would misbehave quietly instead of failing here.
    """
    if INSTALLED_ARQ_VERSION != ARQ_VERSION:
        raise ArqVersionMismatch(
            f"jobs/worker/process.py overrides arq {ARQ_VERSION}'s private worker internals; "
            f"arq {INSTALLED_ARQ_VERSION} is installed: re-check them before changing the pin"
        )
    arq.worker.Worker = ShopjobsWorker  # type: ignore[misc]  # replacing a class is the point
    quiet_arq()
