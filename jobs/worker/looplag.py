"""Event-loop lag: how late the worker's loop runs a timer, measured all the time.

Every run, lease renewal, health answer and shutdown step of a worker shares one event loop.
A handler that blocks it (CPU work, a synchronous HTTP or database call) stalls them all; one
that blocks it longer than JOB_LEASE_SECONDS lets the leases of this process's jobs lapse, and
another worker may then run the same job beside it. Blocking work belongs in threads
(`asyncio.to_thread`). The lag is the shopjobs_event_loop_lag_seconds metric, and logged when
it is high: a warning past a third of the lease (renewals run late), an error past the lease.
"""

from __future__ import annotations

import asyncio
import logging

from jobs.worker.metrics import WorkerMetrics

logger = logging.getLogger("shopjobs.worker")

INTERVAL_SECONDS = 0.25


async def watch(metrics: WorkerMetrics, lease_seconds: float) -> None:
    """Run for the life of the worker: sleep a short interval, and record how late it woke."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(INTERVAL_SECONDS)
        lag = max(0.0, loop.time() - before - INTERVAL_SECONDS)
        metrics.loop_lag.set(lag)
        if lag >= lease_seconds:
            logger.error(
                "event loop blocked for %.2fs, longer than the %gs lease: another worker may "
                "take this process's jobs; run blocking work in a thread (asyncio.to_thread)",
                lag,
                lease_seconds,
            )
        elif lag >= lease_seconds / 3:
            logger.warning(
                "event loop blocked for %.2fs (lease renewals run every %.2fs): run blocking "
                "work in a thread (asyncio.to_thread)",
                lag,
                lease_seconds / 3,
            )
