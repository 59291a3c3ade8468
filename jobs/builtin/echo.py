"""The diagnostic `echo` job: exercises retries, failures, timeouts, progress and batches end
to end.

Enabled only with ENABLE_DIAGNOSTIC_JOBS (on in `make dev` and the tests, off in production).
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from jobs.types import (
    BulkAction,
    FlowAction,
    FlowTrigger,
    JobContext,
    JobType,
    NonRetryableError,
)

PROGRESS_STEPS = 10


class EchoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(max_length=10_000)
    sleep_ms: int = Field(default=0, ge=0, le=3_600_000)
    fail_times: int = Field(default=0, ge=0, le=1_000)
    fail_permanently: bool = False
    # Fan out this many child echo jobs as one batch (docs/starting-jobs.md): each echoes
    # "{message} #{n}" and sleeps `sleep_ms`; this job ends when they all have.
    children: int = Field(default=0, ge=0, le=1_000)


async def echo(ctx: JobContext, data: EchoInput) -> dict[str, str]:
    if data.fail_permanently:
        raise NonRetryableError("echo: asked to fail permanently")
    if ctx.attempt <= data.fail_times:
        raise RuntimeError(f"echo: planned failure {ctx.attempt} of {data.fail_times}")
    if data.children:
        inputs = [
            {"message": f"{data.message} #{n}", "sleep_ms": data.sleep_ms}
            for n in range(1, data.children + 1)
        ]
        await ctx.enqueue_batch("echo", inputs)
        return {"message": data.message}
    if data.sleep_ms:
        step = data.sleep_ms / 1000 / PROGRESS_STEPS
        for done in range(1, PROGRESS_STEPS + 1):
            await asyncio.sleep(step)
            await ctx.report_progress(done * 100 // PROGRESS_STEPS)
    return {"message": data.message}


# Offered to the storefront (the theme block's diagnostic, the end-to-end tests) and in the
# embedded app; only ever registered when ENABLE_DIAGNOSTIC_JOBS is on. It calls no Admin API.
# Shopify Flow's action `echo` (fields message and sleep_ms: extensions/echo/) and the
# admin's bulk action on products and orders (each child echoes one selected id).
JOB_TYPE = JobType(
    name="echo",
    input_model=EchoInput,
    handler=echo,
    proxy=True,
    admin=True,
    flow_action=FlowAction(
        handle="echo",
        name="Run echo job",
        description="Starts the diagnostic echo job of shopjobs",
        fields=("message", "sleep_ms"),
    ),
    bulk_action=BulkAction(field="message", resources=("product", "order")),
)


class EchoNotifyInput(BaseModel):
    """What Flow's action fields offer: the message, and how long to take."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(max_length=10_000)
    sleep_ms: int = Field(default=0, ge=0, le=3_600_000)
    fail_permanently: bool = False


async def echo_notify(ctx: JobContext, data: EchoNotifyInput) -> dict[str, str]:
    return await echo(ctx, EchoInput(**data.model_dump()))


# The diagnostic Flow trigger: a finished `echo_notify` job (completed or failed) starts the
# merchant's workflows that begin with "Echo job finished" (extensions/echo-finished/).
NOTIFY_JOB_TYPE = JobType(
    name="echo_notify",
    input_model=EchoNotifyInput,
    handler=echo_notify,
    admin=True,
    max_attempts=1,
    flow_trigger=FlowTrigger(
        handle="echo-finished",
        name="Echo job finished",
        description="A shopjobs echo_notify job completed or failed",
        fields={"message": "single_line_text_field"},
        on_failure=True,
    ),
)
