"""An app author's own package, outside jobs/ and service/ (docs/your-app.md): two job types on
the `products/update` webhook (beside shopjobs' own example on it), a route that starts a job
through JobsClient, and a scheduled type. Loaded with SHOPJOBS_APP=jobs.builtin,tests.support.myapp.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jobs import App, JobContext, JobType, Schedule, WebhookJob
from service.web.state import web_state

logger = logging.getLogger("myapp")


class ProductInput(BaseModel):
    product_id: str


class NightlyInput(BaseModel):
    note: str = "nightly"


async def tag_product(ctx: JobContext, job_input: ProductInput) -> dict[str, Any]:
    logger.info("myapp tagging %s", job_input.product_id)
    return {"tagged": job_input.product_id}


async def note_product(ctx: JobContext, job_input: ProductInput) -> dict[str, Any]:
    logging.getLogger("myapp.notes").info("myapp noting %s", job_input.product_id)
    return {"noted": job_input.product_id}


async def nightly(ctx: JobContext, job_input: NightlyInput) -> dict[str, Any]:
    logger.info("myapp nightly run: %s", job_input.note)
    return {"note": job_input.note}


TAG = JobType(name="myapp_tag", input_model=ProductInput, handler=tag_product)
NOTE = JobType(name="myapp_note", input_model=ProductInput, handler=note_product)
NIGHTLY = JobType(
    name="myapp_nightly",
    input_model=NightlyInput,
    handler=nightly,
    schedule=Schedule(cron="*/2 * * * * *", per_shop=True),  # every 2 s: seen in a test
)


def product_input(payload: dict[str, Any]) -> dict[str, Any]:
    return {"product_id": payload["admin_graphql_api_id"]}


async def start_tag(request: Request) -> JSONResponse:
    body = await request.json()
    job = await web_state(request).jobs.enqueue(
        "myapp_tag", shop=body["shop"], input={"product_id": body["product_id"]}
    )
    return JSONResponse({"jobId": str(job.id)})


shopjobs_app = App(
    job_types=[TAG, NOTE, NIGHTLY],
    webhooks={"products/update": [WebhookJob(TAG, product_input), WebhookJob(NOTE, product_input)]},
    routes=[Route("/myapp/tag", start_tag, methods=["POST"])],
    # This package is `tests.support.myapp` (logged already); its lines use "myapp".
    loggers=["myapp"],
)
