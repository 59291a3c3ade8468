"""The diagnostic `echo` job: exercises retries, failures, timeouts and progress end to end.

Enabled only with ENABLE_DIAGNOSTIC_JOBS (on in `make dev` and the tests, off in production).

`record_effect` makes it leave a side effect the fault suite can count (table echo_effects),
after its sleep, as its last act before returning:

- `with_completion`: written through `ctx.on_completion`, in the transaction that marks the
  job completed, so it happens exactly once per completed job and never for one that is not;
- `before_completion`: written on its own at once, as a call to another system (the Admin
  API) would be. At least once: a run killed after the effect and before its completion is
  recorded runs again and repeats it.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from jobs.types import JobContext, JobType, NonRetryableError
from service import store

PROGRESS_STEPS = 10


class EchoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(max_length=10_000)
    sleep_ms: int = Field(default=0, ge=0, le=3_600_000)
    fail_times: int = Field(default=0, ge=0, le=1_000)
    fail_permanently: bool = False
    record_effect: Literal["with_completion", "before_completion"] | None = None


async def echo(ctx: JobContext, data: EchoInput) -> dict[str, str]:
    if data.fail_permanently:
        raise NonRetryableError("echo: asked to fail permanently")
    if ctx.attempt <= data.fail_times:
        raise RuntimeError(f"echo: planned failure {ctx.attempt} of {data.fail_times}")
    if data.sleep_ms:
        step = data.sleep_ms / 1000 / PROGRESS_STEPS
        for done in range(1, PROGRESS_STEPS + 1):
            await asyncio.sleep(step)
            await ctx.report_progress(done * 100 // PROGRESS_STEPS)
    if data.record_effect == "with_completion":
        ctx.on_completion(
            functools.partial(
                store.insert_echo_effect,
                job_id=UUID(ctx.job_id),
                run=ctx.run,
                mode=data.record_effect,
            )
        )
    elif data.record_effect == "before_completion":
        await store.record_echo_effect(ctx.database, UUID(ctx.job_id), ctx.run, data.record_effect)
    return {"message": data.message}


JOB_TYPE = JobType(name="echo", input_model=EchoInput, handler=echo)
