"""A worker with test-only job types written as app developers write them, hostile or not:
`python -m arq tests.support.hostile_worker.WorkerSettings`, with the usual environment.

The types are added to this worker's registry only (build_worker_settings takes the types),
never to the product's (jobs/registry.py).
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from jobs.registry import job_types
from jobs.types import JobContext, JobType
from jobs.worker.process import install
from jobs.worker.startup import build_worker_settings
from service.core.settings import load_settings


class Empty(BaseModel):
    pass


async def decimal_price(ctx: JobContext, data: Empty) -> dict[str, Any]:
    """Shopify prices are decimals."""
    return {"price": Decimal("19.90")}


async def nul_error(ctx: JobContext, data: Empty) -> None:
    """A third party's message with a NUL byte in it (Postgres text refuses NUL)."""
    raise RuntimeError("upstream said: bad\x00byte")


async def returns_a_set(ctx: JobContext, data: Empty) -> dict[str, Any]:
    return {"items": [1, 2, 3, {4, 5}]}


async def swallows_cancel(ctx: JobContext, data: Empty) -> None:
    """Ignores every cancellation, as a broad `except BaseException: pass` in a loop does."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue


CLEANUP_SECONDS = 2.0


async def cleans_up_slowly(ctx: JobContext, data: Empty) -> None:
    """Stops when cancelled, after a cleanup that takes a while (closing a remote session, say)."""
    try:
        await asyncio.sleep(3600)
    finally:
        await asyncio.sleep(CLEANUP_SECONDS)


async def exits(ctx: JobContext, data: Empty) -> None:
    """A library that calls sys.exit() (a CLI's main, say), run from a handler."""
    raise SystemExit(3)


async def interrupts(ctx: JobContext, data: Empty) -> None:
    raise KeyboardInterrupt


async def blocks_loop(ctx: JobContext, data: Empty) -> dict[str, Any]:
    """Synchronous work on the event loop (a blocking HTTP client, say)."""
    time.sleep(1)  # noqa: ASYNC251 (the point of this handler)
    return {"blocked": 1}


HOSTILE = [
    JobType(name="blocks_loop", input_model=Empty, handler=blocks_loop, max_attempts=1),
    JobType(name="cleans_up_slowly", input_model=Empty, handler=cleans_up_slowly),
    JobType(name="decimal_price", input_model=Empty, handler=decimal_price, max_attempts=1),
    JobType(name="exits", input_model=Empty, handler=exits, max_attempts=1),
    JobType(name="interrupts", input_model=Empty, handler=interrupts, max_attempts=1),
    JobType(name="nul_error", input_model=Empty, handler=nul_error, max_attempts=1),
    JobType(name="returns_a_set", input_model=Empty, handler=returns_a_set, max_attempts=1),
    JobType(
        name="swallows_cancel",
        input_model=Empty,
        handler=swallows_cancel,
        timeout_seconds=1,
        max_attempts=1,
    ),
    # The same, with a timeout no test waits for: it is still running when SIGTERM comes.
    JobType(
        name="swallows_cancel_slowly",
        input_model=Empty,
        handler=swallows_cancel,
        timeout_seconds=3600,
        max_attempts=1,
    ),
]

_settings = load_settings()
install()
WorkerSettings = build_worker_settings(
    _settings, {**job_types(_settings), **{t.name: t for t in HOSTILE}}
)
