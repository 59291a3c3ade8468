"""Handlers as app developers write them, against a real worker process
(`arq tests.support.hostile_worker.WorkerSettings`), Postgres and Redis: none of them may stall it.

Before: a Decimal result and a NUL in an error text made outcome writes that were retried for
ever (and failed their group commit's neighbours), a handler swallowing CancelledError held its
slot for good, the echo job behind them never ran, /healthz said 200 and SIGTERM did nothing.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import httpx
from arq.connections import ArqRedis
from databases import Database

from service.jobs_client import JobsClient
from tests.support.faults import record
from tests.support.jobs import add_job, make_shop, wait_for_status
from tests.support.net import wait_for_http

SHUTDOWN_GRACE = 1.0
ABANDON_GRACE = 0.5
# What SIGTERM may take beyond WORKER_SHUTDOWN_GRACE_SECONDS and the abandon grace: the bounded
# shutdown steps (jobs/worker/process.py CLOSE_SECONDS in all). A deadline, not a speed goal:
# before, the process never exited.
EXIT_BOUND = 20.0


def hostile_worker(spawn, env: dict[str, str], **overrides: object):
    values = {
        **env,
        "WORKER_CONCURRENCY": "3",
        "WORKER_SHUTDOWN_GRACE_SECONDS": str(SHUTDOWN_GRACE),
        "JOB_ABANDON_GRACE_SECONDS": str(ABANDON_GRACE),
        **{k.upper(): str(v) for k, v in overrides.items()},
    }
    command = [sys.executable, "-m", "arq", "tests.support.hostile_worker.WorkerSettings"]
    proc = spawn(command, values, "hostile-worker")
    wait_for_http(f"http://127.0.0.1:{values['WORKER_HEALTH_PORT']}/healthz", timeout=30)
    return proc


def _sigterm_exit_seconds(proc) -> float:
    sent = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(SHUTDOWN_GRACE + ABANDON_GRACE + EXIT_BOUND) == 0
    return time.monotonic() - sent


async def test_hostile_handlers_end_final_while_the_job_behind_them_runs(
    env, spawn, database: Database, redis: ArqRedis
) -> None:
    # One abandoned run is within the limit (more end the worker: test_health_actions.py).
    proc = hostile_worker(spawn, env, worker_max_abandoned_runs=1)
    port = env["WORKER_HEALTH_PORT"]
    shop = await make_shop(database)
    begun = time.monotonic()
    decimal = await add_job(database, redis, shop, {}, job_type="decimal_price")
    nul = await add_job(database, redis, shop, {}, job_type="nul_error")
    stuck = await add_job(database, redis, shop, {}, job_type="swallows_cancel")
    a_set = await add_job(database, redis, shop, {}, job_type="returns_a_set")
    gone = await add_job(database, redis, shop, {}, job_type="renamed_away")
    behind = await add_job(database, redis, shop, {"message": "behind"})

    job = await wait_for_status(database, decimal, {"completed", "failed"})
    assert (job.status, job.result) == ("completed", {"price": "19.90"})
    job = await wait_for_status(database, nul, {"failed", "retrying"})
    assert (job.status, job.error_message) == ("failed", "upstream said: bad\ufffdbyte")
    assert job.shown_error == "The job failed"  # an unexpected exception: the dashboard's only
    job = await wait_for_status(database, a_set, {"completed", "failed"})
    assert (job.status, job.error_message) == ("failed", 'result["items"][3]: cannot store a set')
    assert job.shown_error == "The job failed"  # the developer's bug, not the storefront's
    job = await wait_for_status(database, gone, {"completed", "failed"})
    assert (job.status, job.error_message) == ("failed", "Unknown job type renamed_away")
    assert job.error_public
    job = await wait_for_status(database, stuck, {"completed", "failed"})
    assert job.status == "failed"
    assert job.error_message == (
        f"Timed out after 1s and did not stop within {ABANDON_GRACE:g}s of being cancelled: "
        "abandoned"
    )
    job = await wait_for_status(database, behind, {"completed", "failed"})
    assert (job.status, job.result) == ("completed", {"message": "behind"})
    all_final = time.monotonic() - begun

    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{port}/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'shopjobs_runs_abandoned_total{type="swallows_cancel"} 1.0' in metrics
    assert "shopjobs_abandoned_runs_running 1.0" in metrics
    assert "shopjobs_event_loop_lag_seconds" in metrics
    assert "run abandoned" in proc.output

    exit_seconds = _sigterm_exit_seconds(proc)
    record(
        "hostile handlers",
        jobs=6,
        concurrency=3,
        all_final_seconds=round(all_final, 2),
        sigterm_exit_seconds=round(exit_seconds, 2),
    )


async def test_sigterm_ends_a_worker_whose_handler_ignores_cancellation(
    env, spawn, database: Database, redis: ArqRedis
) -> None:
    proc = hostile_worker(spawn, env)
    shop = await make_shop(database)
    stuck = await add_job(database, redis, shop, {}, job_type="swallows_cancel_slowly")
    await wait_for_status(database, stuck, {"processing"})
    exit_seconds = _sigterm_exit_seconds(proc)
    job = await wait_for_status(database, stuck, {"retrying"})
    # Given back for the next worker; a graceful give-back does not count as a start, so
    # deploys cannot add up to the "Abandoned: started N times" rule.
    assert (job.attempts, job.retry_count, job.lease_owner) == (0, 0, None)
    record(
        "hostile handlers",
        sigterm_exit_with_a_stuck_run_seconds=round(exit_seconds, 2),
        grace_seconds=SHUTDOWN_GRACE + ABANDON_GRACE,
    )


async def test_a_handler_blocking_the_loop_is_reported(
    env, spawn, database: Database, redis: ArqRedis
) -> None:
    """A blocked loop delays lease renewals: the lag is measured and logged (jobs/worker/looplag.py)."""
    proc = hostile_worker(spawn, env, job_lease_seconds=1.5)
    shop = await make_shop(database)
    job_id = await add_job(database, redis, shop, {}, job_type="blocks_loop")
    job = await wait_for_status(database, job_id, {"completed", "failed"})
    assert job.status == "completed"
    for _ in range(100):
        if "event loop blocked for" in proc.output:
            break
        await asyncio.sleep(0.1)
    assert "event loop blocked for" in proc.output


POISON = [
    """CREATE OR REPLACE FUNCTION hostile_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           IF NEW.input->>'message' = 'poison' THEN RAISE EXCEPTION 'poisoned result'; END IF;
           RETURN NEW;
       END $$""",
    """CREATE TRIGGER hostile_poison BEFORE UPDATE ON jobs FOR EACH ROW
           WHEN (NEW.status = 'completed' AND OLD.status = 'processing')
           EXECUTE FUNCTION hostile_poison()""",
]


async def test_a_completion_postgres_refuses_fails_that_job_alone(
    env, spawn, database: Database, redis: ArqRedis
) -> None:
    """Not unavailable, refused: retrying cannot help, so the job fails at once; and its
    neighbours in the same group commit complete (before, all were retried for ever)."""
    for statement in POISON:
        await database.execute(statement)
    try:
        hostile_worker(spawn, env, worker_concurrency=8)
        shop = await make_shop(database)
        messages = ["poison", *(f"fine-{i}" for i in range(7))]
        ids = [await add_job(database, redis, shop, {"message": m}) for m in messages]
        finals = [await wait_for_status(database, i, {"completed", "failed"}) for i in ids]
    finally:
        await database.execute("DROP TRIGGER IF EXISTS hostile_poison ON jobs")
        await database.execute("DROP FUNCTION IF EXISTS hostile_poison()")
    assert (finals[0].status, finals[0].error_message) == (
        "failed",
        "Result could not be recorded: poisoned result",
    )
    assert [(j.status, j.result) for j in finals[1:]] == [
        ("completed", {"message": m}) for m in messages[1:]
    ]
    record(
        "refused outcome",
        jobs=len(finals),
        failed=sum(j.status == "failed" for j in finals),
        completed=sum(j.status == "completed" for j in finals),
    )


async def test_a_handler_raising_system_exit_fails_its_job_not_the_worker(
    env, spawn, database: Database, redis: ArqRedis
) -> None:
    """SystemExit and KeyboardInterrupt raised in a task stop asyncio's loop: before, a handler
    that called sys.exit() ended the worker process, and its job, left `processing`, took down
    the next worker after its lease, and the next, until "Abandoned"."""
    proc = hostile_worker(spawn, env)
    shop = await make_shop(database)
    exits = await add_job(database, redis, shop, {}, job_type="exits")
    interrupts = await add_job(database, redis, shop, {}, job_type="interrupts")
    behind = await add_job(database, redis, shop, {"message": "behind"})
    job = await wait_for_status(database, exits, {"completed", "failed"})
    assert (job.status, job.error_message) == ("failed", "The handler raised SystemExit: 3")
    assert job.shown_error == "The job failed"
    job = await wait_for_status(database, interrupts, {"completed", "failed"})
    assert (job.status, job.error_message) == (
        "failed",
        "The handler raised KeyboardInterrupt",
    )
    job = await wait_for_status(database, behind, {"completed", "failed"})
    assert (job.status, job.result) == ("completed", {"message": "behind"})
    assert proc.popen.poll() is None  # still running
    _sigterm_exit_seconds(proc)  # and it stops as usual


async def test_a_cancelled_handler_cleaning_up_gets_its_grace_whatever_else_stops_the_run(
    env, spawn, database: Database, redis: ArqRedis
) -> None:
    """Before: a job cancelled while it ran was stopped twice, by the cancel message and by
    its next lease renewal (which finds the row no longer its own). The second stop broke off
    the first one's wait for the handler: a handler cleaning up for less than its grace was
    reported abandoned at once ("did not stop within 30s", counted, /healthz 503 with
    WORKER_MAX_ABANDONED_RUNS=0) while it was still cleaning up."""
    # Lease renewals every 0.5 s: several fall within the handler's cleanup (CLEANUP_SECONDS).
    proc = hostile_worker(
        spawn, env, job_lease_seconds=1.5, job_abandon_grace_seconds=30, worker_max_abandoned_runs=0
    )
    shop = await make_shop(database)
    job_id = await add_job(database, redis, shop, {}, job_type="cleans_up_slowly")
    await wait_for_status(database, job_id, {"processing"})
    assert await JobsClient(database, redis, {}).cancel(job_id)
    deadline = time.monotonic() + 60
    while f"job {job_id} " not in proc.output or not any(
        end in proc.output for end in ("failed after", "interrupted after")
    ):
        assert time.monotonic() < deadline, proc.output
        await asyncio.sleep(0.1)
    assert "run abandoned" not in proc.output, proc.output
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{env['WORKER_HEALTH_PORT']}/metrics")).text
    assert "shopjobs_runs_abandoned_total{" not in metrics
    job = await wait_for_status(database, job_id, {"failed"})
    assert job.error_message == "Cancelled"
