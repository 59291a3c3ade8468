"""The app-proxy endpoints theme JavaScript calls through Shopify: create a job, poll its status.

`POST /proxy/process` turns a signed request into a `pending` row and then a queue entry, in
that order: a row that cannot be queued is deleted again and the caller gets 503, so nothing is
left in Postgres that no worker will ever see. `GET /proxy/status` reads the row back, only for
the shop (and the logged-in customer) that created it. The contract is docs/app-proxy.md.

Every refusal is an ApiError, answered as JSON `{"error": ...}` (service/web/errors.py); a
database that is down gives 503, never 500.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobs.types import JobType
from service import store
from service.core.states import FINAL_STATUSES, JobStatus
from service.intake import Source
from service.shopify.shop_domain import is_shop_domain
from service.shopify.signatures import ProxySignatureError, verify_app_proxy
from service.web.body import read_body
from service.web.errors import ApiError
from service.web.state import web_state

logger = logging.getLogger("shopjobs.web")

MAX_BODY_BYTES = 64 * 1024
# Deeper than any sensible job input, and well inside what orjson can write back (254 levels).
MAX_JSON_DEPTH = 64
MAX_IDEMPOTENCY_KEY_LENGTH = 255
CLIENT_KEY_PREFIX = "proxy:"
MAX_CUSTOMER_ID_LENGTH = 255
MAX_ERROR_DETAILS = 20
MAX_DETAIL_TEXT = 200
# The longest text UUID() takes: "urn:uuid:{...}" is 47 characters.
MAX_UUID_TEXT = 64


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


def check_length_header(request: Request) -> None:
    length = request.headers.get("content-length")
    if length is None:
        return
    if not (len(length) <= 20 and length.isascii() and length.isdigit()):
        raise ApiError(400, "Invalid Content-Length")
    if int(length) > MAX_BODY_BYTES:
        raise ApiError(413, "Request body too large", {"limit": MAX_BODY_BYTES})


def _json_depth(value: Any) -> int:
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return deepest


def _clip(text: str, limit: int = MAX_DETAIL_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field_errors(exc: ValidationError, prefix: str) -> list[dict[str, str]]:
    """Pydantic's errors as `{field, message, type}`, without the input they complain about."""
    details = []
    for item in exc.errors(include_url=False, include_input=False, include_context=False):
        field = ".".join(_clip(str(part), 64) for part in (prefix, *item["loc"]))
        details.append({"field": field, "message": _clip(item["msg"]), "type": item["type"]})
        if len(details) == MAX_ERROR_DETAILS:
            break
    return details


def _for_proxy(job_type: JobType) -> bool:
    return job_type.proxy


def _field_error(field: str, message: str) -> list[dict[str, str]]:
    return [{"field": field, "message": message}]


def parse_job_request(
    body: bytes, types: dict[str, JobType], offered: Callable[[JobType], bool] = _for_proxy
) -> tuple[JobType, dict[str, Any]]:
    """Body -> (job type, validated input as JSON-ready data), or a 400 naming the fields.

    Only the types `offered` to this caller exist for it (the storefront's by default; the
    embedded app passes its own test)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "Body must be JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, 'Body must be a JSON object {"type": ..., "input": {...}}')
    if _json_depth(payload) > MAX_JSON_DEPTH:
        raise ApiError(400, "Body is nested too deeply")
    name = payload.get("type")
    if not isinstance(name, str):
        raise ApiError(400, "Invalid request", _field_error("type", "a job type name is required"))
    job_type = types.get(name)
    if job_type is None or not offered(job_type):  # types not offered look like unknown ones
        raise ApiError(400, "Unknown job type", _field_error("type", "no such job type"))
    raw_input = payload.get("input")
    if not isinstance(raw_input, dict):
        raise ApiError(400, "Invalid request", _field_error("input", "must be a JSON object"))
    try:
        validated = job_type.input_model.model_validate(raw_input)
    except ValidationError as exc:
        raise ApiError(400, "Invalid input", _field_errors(exc, "input")) from None
    job_input = validated.model_dump(mode="json")
    if not store.jsonb_safe(job_input):
        raise ApiError(400, "Invalid input", _field_error("input", "contains a NUL character"))
    return job_type, job_input


async def _check_quota(request: Request, shop: str, customer: str | None) -> None:
    retry_after = await web_state(request).proxy_quota.refusal(shop, customer)
    if retry_after is not None:
        raise ApiError(
            429,
            "Too many requests: try again later",
            {"retryAfterSeconds": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


def idempotency_key(request: Request, prefix: str = CLIENT_KEY_PREFIX) -> str | None:
    """The client's Idempotency-Key, stored as `{prefix}KEY` (`proxy:KEY` by default).

    The prefix keeps clients out of the keys the app writes itself (`webhook:EVENT`): a
    visitor who sends `webhook:...` gets a job of their own, never a webhook's.
    """
    values = request.headers.getlist("idempotency-key")
    if not values:
        return None
    key = values[0].strip()
    valid = (
        len(values) == 1
        and 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH
        and key.isascii()
        and key.isprintable()
    )
    if not valid:
        raise ApiError(
            400,
            "Invalid Idempotency-Key",
            _field_error("Idempotency-Key", "one header of 1 to 255 printable ASCII characters"),
        )
    return f"{prefix}{key}"


def parse_job_id(text: str) -> UUID | None:
    """A job id as the storefront, the admin API and the dashboard take it; None if it is not
    a UUID. Too long is refused, not cut: a cut could leave a valid UUID."""
    if len(text) > MAX_UUID_TEXT:
        return None
    try:
        return UUID(text)
    except ValueError:
        return None


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


# -- endpoints -----------------------------------------------------------------------------


async def process(request: Request) -> Response:
    """Create a job: signature, shop, body, type and input checks, then row, then queue."""
    state = web_state(request)
    shop, customer = await _authenticate(request)
    await _check_quota(request, shop.domain, customer)
    check_length_header(request)
    key = idempotency_key(request)
    body = await read_body(request, MAX_BODY_BYTES)
    job_type, job_input = parse_job_request(body, state.job_types)
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
        return JSONResponse({"jobId": str(existing.id), "status": existing.status})
    logger.info("job %s (%s) queued for %s", submitted.job_id, job_type.name, shop.domain)
    return JSONResponse({"jobId": str(submitted.job_id), "status": JobStatus.PENDING})


async def status(request: Request) -> Response:
    """A job's status, progress and outcome, for its own shop and customer only."""
    shop, customer = await _authenticate(request)
    job_id = _job_id(request)
    job = await store.get_job_for_shop(web_state(request).database, shop.id, job_id)
    # A logged-in customer's job is theirs alone; an anonymous job is visible to anyone of the
    # shop who holds its id. Every other case looks exactly like a job that does not exist.
    if job is None or (job.customer_id is not None and job.customer_id != customer):
        raise ApiError(404, "Job not found")
    body: dict[str, Any] = {"jobId": str(job.id), "status": job.status, "progress": job.progress}
    if job.progress_message:
        body["progressMessage"] = job.progress_message
    if job.run_at is not None and job.status == JobStatus.PENDING:
        body["runAt"] = job.run_at.isoformat()  # a delayed job, waiting until then
    if job.batch is not None:  # a batch parent: its children by status, counted in SQL
        counts = await store.batch_counts(web_state(request).database, job.id)
        body["batch"] = counts
        if job.status not in FINAL_STATUSES and counts["total"]:
            done = counts[JobStatus.COMPLETED] + counts[JobStatus.FAILED]
            body["progress"] = done * 100 // counts["total"]
    if job.status == JobStatus.COMPLETED:
        body["result"] = job.result
    elif job.status == JobStatus.FAILED:
        body["error"] = job.shown_error  # a NonRetryableError's message, else a generic one
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


routes = [
    Route("/proxy/process", process, methods=["POST"]),
    Route("/proxy/status", status, methods=["GET"]),
]
