"""A run that waits: record the wait, free the slot, and put the queue entry back for later.

The handler raised `Suspend` (service/core/waits.py). Its row stays `processing` with no lease
and says what it waits for (store.suspend_job); its queue entry goes back to its shop's set,
due when a worker should look again; the slot, the shop's running count and the lease are
freed with the entry. No attempt is used.

What ends a wait may have happened while the run was deciding to wait (an event sent, the
bulk operation's webhook received): its waker found the job running, not waiting, and woke
nothing. So once the wait is recorded, the condition is looked at again, and a wait that is
already over is due at once: no wake-up is lost to that race.
"""

from __future__ import annotations

import logging
import time
from uuid import UUID

from jobs.types import JobType
from jobs.worker.outcomes import record
from jobs.worker.runtime import Runtime
from service import store
from service.core.states import RunOutcome
from service.core.waits import Suspend, WaitFor
from service.queue import Finish, done, later
from service.shopify import bulk_slots

logger = logging.getLogger("shopjobs.worker")


async def _already_over(runtime: Runtime, job_id: UUID, wait: Suspend) -> bool:
    try:
        if wait.wait_for == WaitFor.EVENT:
            found, _ = await store.event_for(runtime.database, job_id, wait.name)
            return found
        if wait.wait_for == WaitFor.BULK_OPERATION:
            return bool(await runtime.redis.exists(bulk_slots.finished_key(wait.name)))
    except Exception as exc:  # the look again is a shortcut: the wait's own time still holds
        logger.warning("job %s: wait not checked again (%r)", job_id, exc)
    return False


async def suspended(
    runtime: Runtime, job_type: JobType, claim: store.Claim, wait: Suspend
) -> tuple[RunOutcome, Finish]:
    job_id = str(claim.id)
    tag = f"job {job_id} type={job_type.name} shop={claim.shop}"
    written = await record(
        runtime,
        job_id,
        f"{tag} suspend",
        lambda: store.suspend_job(
            runtime.database,
            claim.id,
            runtime.owner,
            wait.wait_for,
            wait.name,
            wait.until,
            wait.look_again,
        ),
    )
    if not written:
        logger.warning("%s wanted to wait but its lease was lost; nothing recorded", tag)
        return RunOutcome.LEASE_LOST, done(job_id)
    seconds = max(0.0, wait.look_again.timestamp() - time.time())
    if seconds > 0 and await _already_over(runtime, claim.id, wait):
        seconds = 0.0
    logger.info(
        "%s waiting for %s %r, looking again in %.2fs",
        tag,
        wait.wait_for.value,
        wait.name[:80],
        seconds,
        extra={"wait_for": wait.wait_for.value},
    )
    return RunOutcome.SUSPENDED, later(job_id, seconds)
