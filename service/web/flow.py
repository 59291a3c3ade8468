"""POST /flow/actions/{handle}: Shopify Flow runs a workflow step of the app's Flow action.

A job type that declares `flow_action=FlowAction(handle=...)` is served here
(docs/shopify-flow.md). Flow sends, as for webhooks, `X-Shopify-Hmac-SHA256`: the base64
HMAC-SHA256 of the raw body with the app's secret, checked in constant time before anything is
parsed (401 otherwise). The body names the shop (`shopify_domain`, covered by the signature,
unlike a header), the run (`action_run_id`), the action (`handle`) and the merchant's field
values (`properties`), which must fit the type's input model (400 naming each field, under
`properties.`).

The job's idempotency key is `flow:{action_run_id}`: Flow resends a step with the same id until
it gets a 200, and every resend answers the job the first one created. The answer is 200 only
once the job is in Postgres and on the queue; when it cannot be queued (Redis down) its row is
deleted again and the answer is 503, which Flow retries. A shop that is not installed is 404.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobs.types import JobType
from service import store
from service.intake import MAX_IDEMPOTENCY_KEY_LENGTH, InvalidJobInput, Source, validate_input
from service.shopify import shop_domain
from service.shopify.signatures import verify_webhook
from service.web.errors import ApiError
from service.web.parsing import MAX_BODY_BYTES, announced_length, read_body
from service.web.state import web_state

logger = logging.getLogger("shopjobs.web")

KEY_PREFIX = "flow:"
NO_STORE = {"Cache-Control": "no-store"}


def flow_actions(types: dict[str, JobType]) -> dict[str, JobType]:
    """The enabled job types that are Flow actions, by handle."""
    return {t.flow_action.handle: t for t in types.values() if t.flow_action is not None}


def _text(payload: dict[str, Any], name: str, limit: int) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= limit or not value.isprintable():
        raise ApiError(400, f"Missing or invalid {name}")
    return value


async def run_action(request: Request) -> Response:
    state = web_state(request)
    handle = str(request.path_params["handle"])
    job_type = flow_actions(state.job_types).get(handle)
    announced_length(request)
    body = await read_body(request, MAX_BODY_BYTES)
    secret = state.settings.shopify_api_secret.get_secret_value()
    if not verify_webhook(body, request.headers.get("x-shopify-hmac-sha256"), secret):
        state.metrics.rejected_signature("flow")
        raise ApiError(401, "Invalid HMAC")
    if job_type is None:
        raise ApiError(404, f"Unknown Flow action {handle[:40]!r}")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "Body must be JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "Body must be a JSON object")
    if payload.get("handle", handle) != handle:
        raise ApiError(400, "Body handle does not match the action's URL")
    run_id = _text(payload, "action_run_id", MAX_IDEMPOTENCY_KEY_LENGTH - len(KEY_PREFIX))
    try:
        domain = shop_domain.normalize(_text(payload, "shopify_domain", 255))
    except ValueError:
        raise ApiError(400, "Invalid shopify_domain: expected NAME.myshopify.com") from None
    properties = payload.get("properties", {})
    if not isinstance(properties, dict):
        raise ApiError(400, "properties must be an object")
    offered = job_type.flow_action.fields if job_type.flow_action is not None else None
    unknown = [key for key in properties if offered is not None and key not in offered]
    if unknown:
        details = [{"field": f"properties.{k[:100]}", "message": "not a field of this action"}
                   for k in unknown[:20]]  # fmt: skip
        raise ApiError(400, f"Invalid properties: {', '.join(d['field'] for d in details)}",
                       details)  # fmt: skip
    try:
        job_input = validate_input(job_type, properties)
    except InvalidJobInput as exc:
        details = [
            {"field": ".".join(("properties", *p.path[1:])), "message": p.message}
            for p in exc.problems
        ]
        fields = ", ".join(d["field"] for d in details)
        raise ApiError(400, f"Invalid properties: {fields}", details) from None
    shop = await store.get_shop(state.database, domain)
    if shop is None or not shop.installed:
        raise ApiError(404, f"Shop {domain} has not installed the app")
    submitted = await state.intake.submit(  # NotQueued: 503, the row deleted (errors.py)
        job_type,
        shop=shop,
        job_input=job_input,
        source=Source.FLOW,
        idempotency_key=KEY_PREFIX + run_id,
    )
    existing = submitted.existing
    if existing is None:
        logger.info("Flow action %s for %s queued job %s", handle, domain, submitted.job_id)
    answer = {
        "jobId": str(submitted.job_id),
        "status": existing.status if existing is not None else "pending",
        "created": existing is None,
    }
    return JSONResponse(answer, headers=NO_STORE)


routes = [Route("/flow/actions/{handle}", run_action, methods=["POST"])]
