"""One run of one job: rate limit, claim, run the handler, mirror the outcome into Postgres.

This is the function arq calls (one arq function per job type, named after it). arq itself
never sees a handler's exception: every outcome is decided here, by the project's own attempt
count (`retry_count` in Postgres, not arq's `job_try`, which also counts crash re-runs and
deferrals), and arq is only told "done" (return) or "run me again later" (`arq.Retry`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from arq.connections import ArqRedis
from arq.worker import Retry
from databases import Database
from pydantic import ValidationError

from jobs import lease, retry
from jobs.context import RunContext
from jobs.mirror import persist, persist_shielded
from jobs.ratelimit import RateLimiter
from jobs.types import JobType, NonRetryableError
from service import store
from service.settings import Settings

logger = logging.getLogger("shopjobs.worker")

DB_UNAVAILABLE_DEFER_SECONDS = 1.0
SHOP_BUSY_DEFER_SECONDS = 0.5
# A job whose worker keeps dying under it (it crashes the process, say) is failed after this
# many starts beyond its attempts, instead of taking workers down forever.
EXTRA_STARTS_ALLOWED = 3
MAX_ERROR_LENGTH = 2000


@dataclass
class Runtime:
    """What a worker process builds at start-up and every run shares."""

    settings: Settings
    types: dict[str, JobType]
    owner: str
    database: Database | None = None
    redis: ArqRedis | None = None
    limiter: RateLimiter | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    # Jobs of each shop running in this process: a job of a shop already at its cap here is
    # deferred without a trip to Postgres (the claim still enforces the cap across workers).
    running_by_shop: Counter[str] = field(default_factory=Counter)


def _describe(error: BaseException, timeout: float) -> str:
    if isinstance(error, TimeoutError):
        return f"Timed out after {timeout:g}s"
    text = str(error) or error.__class__.__name__
    return text[:MAX_ERROR_LENGTH]


def _jitter(seconds: float) -> float:
    return seconds + random.uniform(0, min(0.2, seconds * 0.1 + 0.01))


async def run_job(
    runtime: Runtime, job_type: JobType, job_id: str, shop: str | None = None
) -> None:
    assert runtime.database is not None and runtime.redis is not None
    assert runtime.limiter is not None
    settings = runtime.settings
    database = runtime.database
    cap = settings.shop_concurrency_limit
    if cap and shop is not None and runtime.running_by_shop[shop] >= cap:
        raise Retry(defer=_jitter(SHOP_BUSY_DEFER_SECONDS))

    wait = await runtime.limiter.acquire()
    if wait:
        logger.debug("job %s type=%s rate limited, deferred %.2fs", job_id, job_type.name, wait)
        raise Retry(defer=_jitter(wait))

    try:
        state, claim = await store.claim_job(
            database,
            UUID(job_id),
            runtime.owner,
            settings.job_lease_seconds,
            settings.shop_concurrency_limit,
        )
    except Exception as exc:  # Postgres unreachable: no attempt used, try again shortly
        logger.warning("job %s type=%s claim failed (%s), deferred", job_id, job_type.name, exc)
        raise Retry(defer=DB_UNAVAILABLE_DEFER_SECONDS) from None
    if state == store.BUSY:
        raise Retry(defer=_jitter(SHOP_BUSY_DEFER_SECONDS))
    if state == store.HELD:
        # Keep the queue entry: if its holder dies, this entry runs it after the lease.
        raise Retry(defer=settings.job_lease_seconds)
    if claim is None:
        logger.info("job %s type=%s skipped: already final or deleted", job_id, job_type.name)
        return

    max_attempts = job_type.max_attempts or settings.job_max_attempts
    backoff = (
        job_type.backoff_seconds
        if job_type.backoff_seconds is not None
        else settings.job_backoff_seconds
    )
    timeout = job_type.timeout_seconds or settings.job_timeout_seconds
    failures = claim.retry_count
    tag = f"job {job_id} type={job_type.name} shop={claim.shop}"

    if claim.attempts > max_attempts + EXTRA_STARTS_ALLOWED:
        message = f"Abandoned: started {claim.attempts - 1} times without finishing"
        await persist(
            f"{tag} fail",
            lambda: store.fail_job(database, claim.id, runtime.owner, failures, message),
        )
        logger.error("%s failed: %s", tag, message)
        return

    runtime.running_by_shop[claim.shop] += 1
    try:
        await _run_claimed(runtime, job_type, claim, tag, max_attempts, backoff, timeout)
    finally:
        runtime.running_by_shop[claim.shop] -= 1
        if runtime.running_by_shop[claim.shop] <= 0:
            del runtime.running_by_shop[claim.shop]


async def _run_claimed(
    runtime: Runtime,
    job_type: JobType,
    claim: store.Claim,
    tag: str,
    max_attempts: int,
    backoff: float,
    timeout: float,
) -> None:
    settings = runtime.settings
    database = runtime.database
    assert database is not None and runtime.redis is not None
    job_id = str(claim.id)
    failures = claim.retry_count
    attempt = failures + 1
    logger.info("%s started attempt=%d", tag, attempt)
    context = RunContext(
        job_id=job_id,
        job_type=job_type.name,
        shop=claim.shop,
        attempt=attempt,
        database=database,
        owner=runtime.owner,
        resources=runtime.resources,
    )
    started = time.monotonic()
    try:
        async with lease.held(
            database, runtime.redis, job_id, runtime.owner, settings.job_lease_seconds
        ):
            async with asyncio.timeout(timeout):
                try:
                    data = job_type.input_model.model_validate(claim.input)
                except ValidationError as exc:
                    raise NonRetryableError(
                        f"Invalid input: {exc.errors(include_url=False)}"
                    ) from exc
                result = await job_type.handler(context, data)
    except asyncio.CancelledError:
        await persist_shielded(
            f"{tag} release", lambda: store.release_job(database, claim.id, runtime.owner)
        )
        logger.info(
            "%s interrupted after %.2fs, given back to the queue", tag, time.monotonic() - started
        )
        raise
    except Exception as exc:
        failures += 1
        message = _describe(exc, timeout)
        decision = retry.decide(exc, failures, max_attempts, backoff, job_type.non_retryable)
        if decision.retry:
            await persist(
                f"{tag} retry",
                lambda: store.schedule_retry(
                    database, claim.id, runtime.owner, failures, message, decision.delay
                ),
            )
            logger.warning(
                "%s attempt %d failed, retry in %.2fs: %s", tag, attempt, decision.delay, message
            )
            raise Retry(defer=decision.delay) from None
        await persist(
            f"{tag} fail",
            lambda: store.fail_job(database, claim.id, runtime.owner, failures, message),
        )
        logger.error("%s failed after %d attempt(s): %s", tag, attempt, message)
        return

    written = await persist(
        f"{tag} complete", lambda: store.complete_job(database, claim.id, runtime.owner, result)
    )
    elapsed = time.monotonic() - started
    if written:
        logger.info("%s completed in %.3fs", tag, elapsed)
    else:
        logger.warning(
            "%s finished in %.3fs but its lease was lost; result not recorded", tag, elapsed
        )
