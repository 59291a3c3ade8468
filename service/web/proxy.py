"""The app-proxy endpoints theme JavaScript calls through Shopify: create a job, poll its status.

`POST /proxy/process` turns a signed request into a `pending` row and then a queue entry, in
that order: a row that cannot be queued is deleted again and the caller gets 503, so nothing is
left in Postgres that no worker will ever see. Only types that opt in (`JobType.proxy`) exist
here, with their storefront bounds (`proxy_input_model`, `proxy_limit_per_minute`): a visitor is
anonymous and spends the merchant's Admin API budget. `GET /proxy/status` reads the row back,
only if the storefront created it (or it is a batch child of such a job), for the shop (and the
logged-in customer) that did. The contract is docs/app-proxy.md.

Every refusal is an ApiError, answered as JSON `{"error": ...}` (service/web/errors.py); a
database that is down gives 503, never 500.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobs.types import JobType
from service import job_views, store
from service.core.states import FINAL_STATUSES, JobStatus
from service.intake import Source
from service.shopify.shop_domain import is_shop_domain
from service.shopify.signatures import ProxySignatureError, verify_app_proxy
from service.web.errors import ApiError
from service.web.parsing import (
    MAX_BODY_BYTES,
    announced_length,
    idempotency_key,
    parse_job_id,
    parse_job_request,
    read_body,
)
from service.web.state import web_state

logger = logging.getLogger("shopjobs.web")

# The storefront's Idempotency-Keys live apart from the merchant's (`admin:`) and the app's own.
PROXY_KEY_PREFIX = "proxy:"
MAX_CUSTOMER_ID_LENGTH = 255


# -- who is asking -------------------------------------------------------------------------


async def _authenticate(request: Request) -> tuple[store.Shop, str | None]:
    """The installed shop and logged-in customer (None: anonymous) of a signed request."""
    state = web_state(request)
    pairs = request.query_params.multi_items()
    secret = state.settings.shopify_api_secret.get_secret_value()
    try:
        domain = verify_app_proxy(pairs, secret, now=time.time())
    except ProxySignatureError as exc:
        state.metrics.rejected_signature("app_proxy")
        raise ApiError(401, str(exc)) from None
    customer = dict(pairs).get("logged_in_customer_id", "")
    if len(customer) > MAX_CUSTOMER_ID_LENGTH or not customer.isprintable():
        raise ApiError(400, "Invalid logged_in_customer_id")
    shop = await state.shops.get(domain) if is_shop_domain(domain) else None
    if shop is None or not shop.installed:
        raise ApiError(404, "Shop not found")
    return shop, customer or None


# -- what is asked -------------------------------------------------------------------------


def _too_many(retry_after: int | None) -> None:
    if retry_after is not None:
        raise ApiError(
            429,
            "Too many requests: try again later",
            {"retryAfterSeconds": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


async def _check_quota(request: Request, shop: str, customer: str | None) -> None:
    _too_many(await web_state(request).proxy_quota.refusal(shop, customer))


async def _check_type_quota(request: Request, shop: str, job_type: JobType) -> None:
    """The type's own storefront limit, once the body has named the type."""
    if job_type.proxy_limit_per_minute is not None:
        quota = web_state(request).proxy_quota
        _too_many(await quota.type_refusal(shop, job_type.name, job_type.proxy_limit_per_minute))


def _job_id(request: Request) -> UUID:
    values = request.query_params.getlist("jobId")
    if not values or not values[0]:
        raise ApiError(400, "Missing jobId")
    if len(values) > 1:
        raise ApiError(400, "Repeated jobId")
    job_id = parse_job_id(values[0])
    if job_id is None:
        raise ApiError(400, "Malformed jobId: expected a UUID")
    return job_id


def _for_proxy(job_type: JobType) -> bool:
    """Offered to the storefront? Opt-in: a type that does not say so is an unknown type."""
    return job_type.proxy


def _storefront_model(job_type: JobType) -> type[BaseModel] | None:
    return job_type.proxy_input_model


def _job_answer(job_id: UUID, status: str) -> Response:
    """`{"jobId": ..., "status": ...}`, the bytes JSONResponse writes, without building a
    json.JSONEncoder for each answer (it does, for its non-default options)."""
    body = orjson.dumps({"jobId": str(job_id), "status": status})
    return Response(body, media_type="application/json")


# -- endpoints -----------------------------------------------------------------------------


async def process(request: Request) -> Response:
    """Create a job: signature, shop, body, type and input checks, then row, then queue."""
    state = web_state(request)
    shop, customer = await _authenticate(request)
    await _check_quota(request, shop.domain, customer)
    announced_length(request)
    key = idempotency_key(request, PROXY_KEY_PREFIX)
    body = await read_body(request, MAX_BODY_BYTES)
    job_type, job_input = parse_job_request(
        body, state.job_types, offered=_for_proxy, model_for=_storefront_model
    )
    await _check_type_quota(request, shop.domain, job_type)
    submitted = await state.intake.submit(
        job_type,
        shop=shop,
        job_input=job_input,
        source=Source.PROXY,
        idempotency_key=key,
        customer_id=customer,
    )
    existing = submitted.existing
    if existing is not None:
        # A retry of the same request gets the same job; anything else reusing the key is a
        # client bug, and must not learn another customer's job id.
        if (existing.type, existing.input, existing.customer_id) != (
            job_type.name,
            job_input,
            customer,
        ):
            raise ApiError(422, "Idempotency-Key was already used for a different request")
        return _job_answer(existing.id, existing.status)
    logger.info("job %s (%s) queued for %s", submitted.job_id, job_type.name, shop.domain)
    return _job_answer(submitted.job_id, JobStatus.PENDING)


async def status(request: Request) -> Response:
    """A storefront job's status, progress and outcome, for its own shop and customer only."""
    shop, customer = await _authenticate(request)
    job_id = _job_id(request)
    # Only the storefront's own jobs (and their batch children): a logged-in customer's are
    # theirs alone, an anonymous one is visible to anyone of the shop who holds its id. A job
    # the app, the merchant, a webhook or a schedule started looks exactly like a missing one.
    job = await store.get_storefront_job(web_state(request).database, shop.id, job_id, customer)
    if job is None:
        raise ApiError(404, "Job not found")
    # The same view as the merchant API's and the dashboard's (service/job_views.py).
    state = web_state(request)
    shown = await job_views.show(state.database, state.redis, job, shop.domain)
    body: dict[str, Any] = {"jobId": str(job.id), "status": job.status, "progress": shown.progress}
    if job.progress_message:
        body["progressMessage"] = job.progress_message
    if shown.waiting is not None:  # what holds it back, and until when
        body["waiting"] = shown.waiting
    if shop.paused and job.status not in FINAL_STATUSES:  # held until the shop is resumed
        body["paused"] = True
    if job.run_at is not None and job.status == JobStatus.PENDING:
        body["runAt"] = job.run_at.isoformat()  # a delayed job, waiting until then
    if shown.batch is not None:  # a batch parent: its children by status, counted in SQL
        body["batch"] = shown.batch
    if job.status == JobStatus.COMPLETED:
        body["result"] = job.result
    elif job.status == JobStatus.FAILED:
        body["error"] = job.shown_error  # a NonRetryableError's message, else a generic one
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


routes = [
    Route("/proxy/process", process, methods=["POST"]),
    Route("/proxy/status", status, methods=["GET"]),
]
