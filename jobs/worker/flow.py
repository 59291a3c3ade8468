"""Flow triggers from the worker's side: the trigger job of a job whose type declares one.

- completed: `before_completion` adds a write to the completion's transaction that inserts
  the `flow_trigger` job (jobs/builtin/flow_trigger.py), so the job is completed with its
  trigger job or not at all; `after_run` then queues it (if Redis does not take it now, the
  reconciler queues the pending row later);
- failed for good, with `on_failure`: `after_run` creates the trigger job (its idempotency key
  is the failed job's, so a second try creates nothing). A worker that dies between recording
  the failure and this leaves that failure without a trigger.
"""

from __future__ import annotations

import logging

import asyncpg
import orjson

from jobs.builtin import flow_trigger
from jobs.types import JobType
from jobs.worker.context import RunContext
from jobs.worker.runtime import Runtime
from service import queue, store
from service.core.states import JobStatus, RunOutcome
from service.intake import Source, queue_entry
from service.store import flow_triggers as flow_store

logger = logging.getLogger("shopjobs.worker")

FAILED_OUTCOMES = frozenset({RunOutcome.FAILED, RunOutcome.ABANDONED})


def before_completion(
    job_type: JobType, claim: store.Claim, context: RunContext, encoded: str
) -> None:
    """Have the completion of this run write its trigger job, if its type has a trigger."""
    if job_type.flow_trigger is None:
        return
    job_id = str(claim.id)
    data = flow_trigger.trigger_input(job_type, job_id, JobStatus.COMPLETED, orjson.loads(encoded))
    input_json = orjson.dumps(data).decode()

    async def write(raw: asyncpg.Connection) -> None:
        await flow_store.insert_trigger_job(
            raw,
            job_id=flow_trigger.trigger_job_id(job_id),
            of_job=claim.id,
            job_type=flow_trigger.TYPE_NAME,
            input_json=input_json,
            idempotency_key=flow_trigger.idempotency_key(job_id),
        )

    context.on_completion(write)


async def after_run(
    runtime: Runtime, job_type: JobType, claim: store.Claim, outcome: RunOutcome
) -> None:
    """Queue the trigger job of a completed job; create and queue that of a failed one."""
    trigger = job_type.flow_trigger
    sender = runtime.types.get(flow_trigger.TYPE_NAME)
    if trigger is None or sender is None:
        return
    job_id = str(claim.id)
    try:
        if outcome is RunOutcome.COMPLETED:
            entry = queue_entry(
                sender, flow_trigger.trigger_job_id(job_id), claim.shop, {}, Source.JOB
            )
            await queue.enqueue_many(runtime.redis, [entry])
        elif outcome in FAILED_OUTCOMES and trigger.on_failure and runtime.jobs is not None:
            await runtime.jobs.enqueue(
                flow_trigger.TYPE_NAME,
                shop=claim.shop,
                input=flow_trigger.trigger_input(job_type, job_id, JobStatus.FAILED, None),
                idempotency_key=flow_trigger.idempotency_key(job_id),
                source=Source.JOB,
            )
    except Exception as exc:  # the row (if written) is pending: the reconciler queues it
        logger.warning("job %s: Flow trigger %s not queued now: %r", job_id, trigger.handle, exc)
