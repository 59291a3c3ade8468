"""Calling a handler under its timeout, and leaving behind one that will not stop.

A handler that swallows its cancellation (or keeps awaiting in a `finally`) would otherwise
hold its slot, its lease and its job for ever, and shutdown would wait on it. `call` runs the
handler in a task of its own; at the timeout, at a cancel of the job, and when the run itself
is cancelled (shutdown, lease lost), the handler is cancelled and given
JOB_ABANDON_GRACE_SECONDS to stop; past that it is abandoned: counted in the metrics and the
log, kept in Runtime.abandoned (the health server turns 503 when too many pile up), and the
job's outcome is decided without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from jobs.types import NonRetryableError
from jobs.worker.results import error_text
from jobs.worker.runtime import Runtime
from service.core.states import CANCELLED_MESSAGE
from service.core.waits import Suspend

logger = logging.getLogger("shopjobs.worker")


class JobCancelled(NonRetryableError):
    """The job was cancelled while it ran (dashboard, JobsClient.cancel); its row already
    says failed CANCELLED_MESSAGE."""

    def __init__(self) -> None:
        super().__init__(CANCELLED_MESSAGE)


class RunAbandoned(TimeoutError):
    """A run past its timeout that did not stop when cancelled: it is left behind."""


class HandlerExited(Exception):
    """A handler raised a BaseException that is no Exception (SystemExit, KeyboardInterrupt, a
    subclass of its own), or CancelledError without being cancelled. Raised in its task, the
    first two would stop the worker's event loop (asyncio re-raises them out of the loop), the
    others would pass the runner's `except Exception` (the job left `processing`) or look like
    a shutdown (given back, its start taken back, for ever). They fail the attempt instead."""


async def _contained(handler: Awaitable[Any]) -> Any:
    """`await handler`, with a BaseException that is no Exception turned into HandlerExited
    (but a wait's Suspend, which the runner turns into a suspended job)."""
    try:
        return await handler
    except (asyncio.CancelledError, GeneratorExit, Suspend):
        raise
    except Exception:
        raise
    except BaseException as exc:
        name, text = exc.__class__.__name__, error_text(exc)
        detail = "" if text == name else f": {text}"
        raise HandlerExited(f"The handler raised {name}{detail}") from exc


async def call(
    runtime: Runtime,
    job_id: str,
    job_type: str,
    handler: Awaitable[Any],
    timeout: float,
) -> Any:
    """The handler's return value, run under `timeout` (TimeoutError past it, RunAbandoned if
    it then does not stop). A cancel of the job (Runtime.request_stop) cancels the handler at
    its next await and raises JobCancelled, whether or not the handler stops within the grace.
    """
    task: asyncio.Task[Any] = asyncio.ensure_future(_contained(handler))
    stop = runtime.stop_requests[job_id] = asyncio.get_running_loop().create_future()
    try:
        await asyncio.wait({task, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        await _stop(runtime, job_type, task)
        raise
    finally:
        runtime.stop_requests.pop(job_id, None)
    if stop.done() and not task.done():
        await _stop(runtime, job_type, task)
        raise JobCancelled
    if task.done():
        if task.cancelled():  # nobody cancelled it: the handler raised CancelledError itself
            raise HandlerExited("The handler raised CancelledError without being cancelled")
        return task.result()
    if await _stop(runtime, job_type, task):
        raise TimeoutError
    grace = runtime.settings.job_abandon_grace_seconds
    raise RunAbandoned(
        f"Timed out after {timeout:g}s and did not stop within {grace:g}s of being "
        "cancelled: abandoned"
    )


async def _stop(runtime: Runtime, job_type: str, task: asyncio.Task[Any]) -> bool:
    """Cancel a handler's task; True if it stops within the grace, else it is abandoned."""
    task.cancel()
    grace = runtime.settings.job_abandon_grace_seconds
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    interrupted = False
    try:
        while not task.done() and loop.time() < deadline:
            try:
                await asyncio.wait({task}, timeout=deadline - loop.time())
            except asyncio.CancelledError:
                # A second stop while this one waits (a cancel of the job, then its lease
                # renewal finding the row no longer its own; shutdown): the handler still gets
                # its grace, then the cancellation goes on.
                interrupted = True
    finally:
        if not task.done():
            runtime.abandoned.add(task)
            task.add_done_callback(lambda t: _abandoned_ended(runtime, t))
            runtime.metrics.run_abandoned(job_type, len(runtime.abandoned))
            logger.error(
                "run abandoned: its handler did not stop within %gs of being cancelled "
                "(%d abandoned run(s) still going in this process)",
                grace,
                len(runtime.abandoned),
            )
            limit = runtime.settings.worker_max_abandoned_runs
            if len(runtime.abandoned) > limit and not runtime.wedged.is_set():
                logger.critical(
                    "%d abandoned runs still going, over WORKER_MAX_ABANDONED_RUNS=%d: this "
                    "worker stops (as on SIGTERM) and exits for the platform to restart it",
                    len(runtime.abandoned),
                    limit,
                )
                runtime.wedged.set()
    if task.done() and not task.cancelled():
        task.exception()  # retrieved: the outcome no longer depends on it
    if interrupted:
        raise asyncio.CancelledError
    return task.done()


def _abandoned_ended(runtime: Runtime, task: asyncio.Task[Any]) -> None:
    runtime.abandoned.discard(task)
    runtime.metrics.abandoned_running.set(len(runtime.abandoned))
    if not task.cancelled():
        task.exception()
    logger.warning("an abandoned run ended (%d still going)", len(runtime.abandoned))
