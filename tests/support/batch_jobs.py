"""Test-only job types for batches, registered beside the product's when a worker is started
through this module (`python -m tests.support.batch_jobs arq jobs.WorkerSettings`, see
`batch_jobs_command`), as tests/support/effects.py does for its echo:

- `fan_out`: a parent that fans out `children` echo jobs in `pages` calls of
  ctx.enqueue_batch (the children listed in `fail` fail permanently), with `batch_done` as
  its follow-up (or `follow_up_type`) unless `follow_up` is false; with `stall_after`, its
  first run stops after that many pages and waits for ever (for a test to kill its worker);
- `batch_done`: the follow-up; it returns the input the batch's end gave it;
- `stalling_done`: a follow-up like `batch_done` whose first run waits for ever;
- `spawn_one`: starts one echo job with ctx.enqueue.
"""

from __future__ import annotations

import asyncio
import runpy
import sys
from uuid import UUID

from pydantic import BaseModel, Field

import jobs.registry
from jobs.types import JobContext, JobType
from service.core.settings import Settings


class FanOutInput(BaseModel):
    children: int = Field(ge=0, le=20_000)
    pages: int = Field(default=1, ge=1)
    sleep_ms: int = 0
    fail: list[int] = []
    follow_up: bool = True
    fail_parent: bool = False
    follow_up_type: str = "batch_done"
    stall_after: int | None = None


async def _stall_forever() -> None:
    await asyncio.Event().wait()  # never set: until the worker is killed


async def fan_out(ctx: JobContext, data: FanOutInput) -> dict[str, int]:
    per_page = -(-data.children // data.pages)
    failing = set(data.fail)
    for page, first in enumerate(range(0, data.children, per_page)):
        if ctx.run == 1 and page == data.stall_after:
            await _stall_forever()
        inputs = [
            {"message": f"child {n}", "sleep_ms": data.sleep_ms, "fail_permanently": n in failing}
            for n in range(first, min(first + per_page, data.children))
        ]
        await ctx.enqueue_batch(
            "echo",
            inputs,
            on_complete=data.follow_up_type if data.follow_up else None,
            fail_parent_on_child_failure=data.fail_parent,
        )
    return {"pages": data.pages}


class BatchDoneInput(BaseModel):
    parent_id: UUID
    completed: int
    failed: int


async def batch_done(ctx: JobContext, data: BatchDoneInput) -> dict[str, object]:
    return data.model_dump(mode="json")


async def stalling_done(ctx: JobContext, data: BatchDoneInput) -> dict[str, object]:
    if ctx.run == 1:
        await _stall_forever()
    return data.model_dump(mode="json")


class SpawnInput(BaseModel):
    message: str


async def spawn_one(ctx: JobContext, data: SpawnInput) -> dict[str, str]:
    """Starts one echo job for its own shop, the same one on every run of this job."""
    job = await ctx.enqueue("echo", {"message": data.message}, idempotency_key=f"from:{ctx.job_id}")
    return {"spawned": str(job.id), "status": job.status}


SPAWN_ONE = JobType(name="spawn_one", input_model=SpawnInput, handler=spawn_one)
FAN_OUT = JobType(name="fan_out", input_model=FanOutInput, handler=fan_out)
BATCH_DONE = JobType(name="batch_done", input_model=BatchDoneInput, handler=batch_done)
STALLING_DONE = JobType(name="stalling_done", input_model=BatchDoneInput, handler=stalling_done)

_product_job_types = jobs.registry.job_types


def job_types(settings: Settings) -> dict[str, JobType]:
    """The deployment's job types, plus `fan_out` and `batch_done`."""
    return {
        **_product_job_types(settings),
        "fan_out": FAN_OUT,
        "batch_done": BATCH_DONE,
        "stalling_done": STALLING_DONE,
        "spawn_one": SPAWN_ONE,
    }


def batch_jobs_command(command: list[str]) -> list[str]:
    """A `python -m <module> ...` command, run with these types registered."""
    python, flag, *rest = command
    assert flag == "-m", command
    return [python, "-m", "tests.support.batch_jobs", *rest]


if __name__ == "__main__":
    jobs.registry.job_types = job_types
    module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
