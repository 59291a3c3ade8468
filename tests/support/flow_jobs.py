"""Test-only job types and webhook routes for flow control (issue 28), registered beside the
product's when a process is started through this module (`flow_command`), as
tests/support/wait_jobs.py does:

- `flow_echo`: returns its input; started by `products/update` with a debounce keyed by the
  product's id (seconds from FLOW_DEBOUNCE_SECONDS, max from FLOW_DEBOUNCE_MAX_SECONDS), and
  by `products/create` with a keep-one-pending key (the product's id);
- `limited`: returns at once; at most 2 starts per 3 s for each shop (RateLimit per_shop).
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

from pydantic import BaseModel

import jobs.registry
from jobs import Debounce, RateLimit
from jobs.types import JobContext, JobType, WebhookJob
from service.core.settings import Settings


class EchoInput(BaseModel):
    product: str
    n: int = 0


async def flow_echo(ctx: JobContext, data: EchoInput) -> dict[str, Any]:
    return {"product": data.product, "n": data.n, "run": ctx.run}


class Nothing(BaseModel):
    n: int = 0


async def limited(ctx: JobContext, data: Nothing) -> int:
    return data.n


FLOW_ECHO = JobType(name="flow_echo", input_model=EchoInput, handler=flow_echo)
LIMITED = JobType(
    name="limited",
    input_model=Nothing,
    handler=limited,
    rate_limit=RateLimit(max=2, per_seconds=3, per_shop=True),
)


def _input(payload: dict[str, Any]) -> dict[str, Any]:
    return {"product": str(payload["id"]), "n": int(payload.get("n", 0))}


_product_job_types = jobs.registry.job_types
_product_webhook_jobs = jobs.registry.webhook_jobs


def job_types(settings: Settings) -> dict[str, JobType]:
    return {**_product_job_types(settings), "flow_echo": FLOW_ECHO, "limited": LIMITED}


def webhook_jobs(settings: Settings) -> dict[str, tuple[WebhookJob, ...]]:
    seconds = float(os.environ.get("FLOW_DEBOUNCE_SECONDS", "2"))
    most = float(os.environ.get("FLOW_DEBOUNCE_MAX_SECONDS", "30"))
    return {
        **_product_webhook_jobs(settings),
        "products/update": (
            WebhookJob(
                FLOW_ECHO,
                _input,
                debounce=Debounce(key=lambda p: str(p["id"]), seconds=seconds, max_seconds=most),
            ),
        ),
        "products/create": (WebhookJob(FLOW_ECHO, _input, unique_key=lambda p: str(p["id"])),),
    }


def flow_command(command: list[str]) -> list[str]:
    """A `python -m <module> ...` command, run with these types and routes registered."""
    python, flag, *rest = command
    assert flag == "-m", command
    return [python, "-m", "tests.support.flow_jobs", *rest]


if __name__ == "__main__":
    jobs.registry.job_types = job_types
    jobs.registry.webhook_jobs = webhook_jobs
    module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
