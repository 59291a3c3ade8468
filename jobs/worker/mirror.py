"""Status mirroring into Postgres that never gives up on a status while Postgres is away.

A final or retry status must not be lost because Postgres blinked (a restart, a failover):
a write that fails because Postgres is unavailable (service/core/db.py UNAVAILABLE_ERRORS) is
retried with capped backoff until it lands. Any other error is the write's own (a value the
statement refuses): retrying cannot help, so it is raised to the runner, which fails the job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from service.core.db import UNAVAILABLE_ERRORS

logger = logging.getLogger("shopjobs.worker")

T = TypeVar("T")
FIRST_DELAY_SECONDS = 0.1
MAX_DELAY_SECONDS = 5.0


async def persist(what: str, write: Callable[[], Awaitable[T]]) -> T:
    """Run `write` until it succeeds or fails for a reason other than Postgres being
    unavailable, logging each failure. Cancellation still applies."""
    delay = FIRST_DELAY_SECONDS
    failures = 0
    while True:
        try:
            return await write()
        except UNAVAILABLE_ERRORS as exc:
            failures += 1
            log = logger.warning if failures < 3 else logger.error
            log(
                "%s: database write failed (%s: %s), retrying in %.1fs",
                what,
                exc.__class__.__name__,
                exc,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_SECONDS)


async def persist_shielded(what: str, write: Callable[[], Awaitable[T]]) -> T:
    """`persist`, shielded from cancellation: for the write that follows a cancellation."""
    return await asyncio.shield(persist(what, write))
