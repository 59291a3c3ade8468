"""A test-only scheduled job type, `every_5s` (cron "*/5 * * * * *", one run per shop), added
to the product's types in a worker started through this module
(`python -m tests.support.scheduled_jobs arq jobs.WorkerSettings`, see `scheduled_jobs_command`).
"""

from __future__ import annotations

import runpy
import sys

from pydantic import BaseModel

import jobs.registry
from jobs.types import JobContext, JobType, Schedule
from service.core.settings import Settings


class TickInput(BaseModel):
    note: str = ""


async def tick(ctx: JobContext, data: TickInput) -> dict[str, str]:
    return {"shop": ctx.shop, "note": data.note}


EVERY_5S = JobType(
    name="every_5s",
    input_model=TickInput,
    handler=tick,
    schedule=Schedule(cron="*/5 * * * * *", per_shop=True, input={"note": "scheduled"}),
)

_product_job_types = jobs.registry.job_types


def job_types(settings: Settings) -> dict[str, JobType]:
    return {**_product_job_types(settings), EVERY_5S.name: EVERY_5S}


def scheduled_jobs_command(command: list[str]) -> list[str]:
    python, flag, *rest = command
    assert flag == "-m", command
    return [python, "-m", "tests.support.scheduled_jobs", *rest]


if __name__ == "__main__":
    jobs.registry.job_types = job_types
    module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
