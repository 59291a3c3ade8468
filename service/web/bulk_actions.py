"""The admin's bulk action: the merchant's selection in the product or order list, as a batch.

The app's admin link extension (extensions/shopjobs-bulk-action/) puts "Run a background job"
on the selection of the admin's product and order lists; Shopify opens the embedded page at
`/app/bulk/products` (or `/orders`) with the selected ids (`ids[]=...`). The page lists the
types that take such an id (`JobType.bulk_action`) and starts one batch: a `bulk_action` job
whose children are one job of the chosen type per id (jobs/builtin/bulk_action.py). Merchant
API (session tokens, as service/web/merchant_api.py):

- GET  /api/bulk-actions?resource=product   {"types": [{"name", "field"}]}
- POST /api/bulk-actions {"type", "resource", "ids"} (+ Idempotency-Key): 201 the batch's job
- GET  /api/bulk-actions/{id}                the batch's job with `children` counted by status
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobs.builtin import bulk_action
from jobs.types import BULK_RESOURCES, JobType
from service import job_views, store
from service.intake import InvalidJobInput, Source, validate_input
from service.web.errors import ApiError
from service.web.merchant_api import (
    MERCHANT_KEY_PREFIX,
    NO_STORE,
    authenticate,
    job_json,
    parse_job_id_or_400,
)
from service.web.parsing import MAX_BODY_BYTES, announced_length, idempotency_key, read_body
from service.web.state import web_state

logger = logging.getLogger("shopjobs.web")

_NUMERIC = re.compile(r"^[0-9]{1,20}$")


def bulk_types(types: dict[str, JobType], resource: str) -> dict[str, JobType]:
    """The enabled types offered on `resource`'s list."""
    return {
        name: t
        for name, t in types.items()
        if t.bulk_action is not None and resource in t.bulk_action.resources
    }


def _resource(value: Any) -> str:
    if value not in BULK_RESOURCES:
        raise ApiError(400, f"resource must be one of {', '.join(sorted(BULK_RESOURCES))}")
    return str(value)


def as_gid(resource: str, value: Any) -> str | None:
    """A selected id as Shopify's GID: the admin link passes numeric ids, the admin action's
    API GIDs; None for anything else."""
    kind = BULK_RESOURCES[resource]
    text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    prefix = f"gid://shopify/{kind}/"
    if text.startswith(prefix):
        text = text[len(prefix) :]
    return prefix + text if _NUMERIC.match(text) else None


async def offered(request: Request) -> Response:
    await authenticate(request)
    resource = _resource(request.query_params.get("resource"))
    types = bulk_types(web_state(request).job_types, resource)
    listed = [
        {"name": name, "field": t.bulk_action.field}
        for name, t in sorted(types.items())
        if t.bulk_action is not None
    ]
    return JSONResponse({"resource": resource, "types": listed}, headers=NO_STORE)


async def start(request: Request) -> Response:
    state = web_state(request)
    shop, session = await authenticate(request)
    announced_length(request)
    key = idempotency_key(request, MERCHANT_KEY_PREFIX + "bulk:")
    try:
        payload = orjson.loads(await read_body(request, MAX_BODY_BYTES))
    except orjson.JSONDecodeError:
        raise ApiError(400, "Body must be JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, 'Body must be a JSON object {"type", "resource", "ids"}')
    resource = _resource(payload.get("resource"))
    job_type = bulk_types(state.job_types, resource).get(str(payload.get("type")))
    if job_type is None or job_type.bulk_action is None:
        details = [{"field": "type", "message": f"no job type runs on selected {resource}s"}]
        raise ApiError(400, "Unknown job type", details)
    ids = payload.get("ids")
    if not isinstance(ids, list) or not 0 < len(ids) <= bulk_action.MAX_SELECTED:
        message = f"select 1 to {bulk_action.MAX_SELECTED} {resource}s"
        raise ApiError(400, "Invalid ids", [{"field": "ids", "message": message}])
    gids = [as_gid(resource, value) for value in ids]
    bad = [i for i, gid in enumerate(gids) if gid is None]
    if bad:
        details = [{"field": f"ids[{i}]", "message": f"not a {resource} id"} for i in bad[:20]]
        raise ApiError(400, "Invalid ids", details)
    selected = list(dict.fromkeys(g for g in gids if g is not None))  # each once, in order
    parent_type = state.job_types[bulk_action.TYPE_NAME]
    raw = {"job_type": job_type.name, "field": job_type.bulk_action.field, "ids": selected}
    try:
        parent_input = validate_input(parent_type, raw)
        for child in bulk_action.BulkActionInput.model_validate(parent_input).children():
            validate_input(job_type, child)  # a child the type refuses fails here, not later
    except InvalidJobInput as exc:
        details = [{"field": ".".join(p.path), "message": p.message} for p in exc.problems]
        raise ApiError(400, f"{job_type.name} does not take these ids", details) from None
    submitted = await state.intake.submit(
        parent_type,
        shop=shop,
        job_input=parent_input,
        source=Source.MERCHANT,
        idempotency_key=key,
        staff_user_id=session.user,
    )
    logger.info(
        "bulk action %s on %d %s(s) of %s by staff user %s: job %s",
        job_type.name, len(selected), resource, shop.domain, session.user, submitted.job_id,
    )  # fmt: skip
    return JSONResponse(
        {"jobId": str(submitted.job_id), "type": job_type.name, "selected": len(selected)},
        status_code=200 if submitted.existing is not None else 201,
        headers=NO_STORE,
    )


async def read(request: Request) -> Response:
    state = web_state(request)
    shop, _ = await authenticate(request)
    job_id = parse_job_id_or_400(str(request.path_params["job_id"]))
    job = await store.get_job_for_shop(state.database, shop.id, job_id)
    if job is None or job.type != bulk_action.TYPE_NAME:
        raise ApiError(404, "Job not found")
    shown = await job_views.show(state.database, state.redis, job, shop.domain)
    body = job_json(job, False, shown)
    body["children"] = await store.batch_counts(state.database, job.id)
    return JSONResponse(body, headers=NO_STORE)


routes = [
    Route("/api/bulk-actions", offered, methods=["GET"]),
    Route("/api/bulk-actions", start, methods=["POST"]),
    Route("/api/bulk-actions/{job_id}", read, methods=["GET"]),
]
