"""Test-only job types that wait, registered beside the product's when a worker is started
through this module (`python -m tests.support.wait_jobs arq jobs.WorkerSettings`, see
`wait_jobs_command`), as tests/support/batch_jobs.py does:

- `napper`: `await ctx.sleep("nap", seconds)`, written as an app developer would;
- `listener`: `await ctx.wait_for_event(name, timeout=...)`, returns the payload;
- `capped` (at most two at once across workers) and `per_product` (one per product and shop at
  once): a handler that holds its slot for `ms` milliseconds;
- `three_steps`: three `ctx.step`s, each appending its name and the run to a log file (so a
  test counts how often each ran); with `stall_after_second`, its first run stops for ever
  between the second and the third step (for a test to kill its worker there).
"""

from __future__ import annotations

import asyncio
import runpy
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import jobs.registry
from jobs.types import JobContext, JobType
from service.core.settings import Settings


class NapInput(BaseModel):
    seconds: float


async def napper(ctx: JobContext, data: NapInput) -> dict[str, Any]:
    try:
        await ctx.sleep("nap", data.seconds)
    except Exception:  # as careless handlers do: a wait must not be swallowed by this
        raise
    return {"slept": data.seconds, "run": ctx.run}


class ListenInput(BaseModel):
    name: str
    timeout: float


async def listener(ctx: JobContext, data: ListenInput) -> dict[str, Any]:
    payload = await ctx.wait_for_event(data.name, timeout=data.timeout)
    return {"payload": payload}


class StepsInput(BaseModel):
    log: str
    stall_after_second: bool = False


async def three_steps(ctx: JobContext, data: StepsInput) -> dict[str, Any]:
    log = Path(data.log)

    def mark(step: str) -> str:
        with log.open("a") as out:
            out.write(f"{step} {ctx.run}\n")
        return step.upper()

    first = await ctx.step("one", lambda: mark("one"))
    second = await ctx.step("two", lambda: mark("two"))
    if data.stall_after_second and ctx.run == 1:
        await asyncio.Event().wait()  # never set: until the worker is killed
    third = await ctx.step("three", lambda: mark("three"))
    return {"steps": [first, second, third]}


class BusyInput(BaseModel):
    ms: int
    product: str = "p"


async def busy(ctx: JobContext, data: BusyInput) -> dict[str, Any]:
    await asyncio.sleep(data.ms / 1000)  # holds its slot: running, not waiting
    return {"product": data.product}


NAPPER = JobType(name="napper", input_model=NapInput, handler=napper)
# At most two run at once across every worker (JobType.concurrency).
CAPPED = JobType(name="capped", input_model=BusyInput, handler=busy, concurrency=2)
# At most one per product and shop at once (JobType.concurrency_key).
PER_PRODUCT = JobType(
    name="per_product",
    input_model=BusyInput,
    handler=busy,
    concurrency_key=lambda data: data.product,
)
LISTENER = JobType(name="listener", input_model=ListenInput, handler=listener)
THREE_STEPS = JobType(name="three_steps", input_model=StepsInput, handler=three_steps)

_product_job_types = jobs.registry.job_types


def job_types(settings: Settings) -> dict[str, JobType]:
    """The deployment's job types, plus the waiting ones above."""
    return {
        **_product_job_types(settings),
        "napper": NAPPER,
        "listener": LISTENER,
        "three_steps": THREE_STEPS,
        "capped": CAPPED,
        "per_product": PER_PRODUCT,
    }


def wait_jobs_command(command: list[str]) -> list[str]:
    """A `python -m <module> ...` command, run with these types registered."""
    python, flag, *rest = command
    assert flag == "-m", command
    return [python, "-m", "tests.support.wait_jobs", *rest]


if __name__ == "__main__":
    jobs.registry.job_types = job_types
    module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
