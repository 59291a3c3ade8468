"""The merchant API under /api: the merchant's own jobs, for the embedded app inside Shopify.

Every request carries an App Bridge session token (`Authorization: Bearer <JWT>`,
service/shopify/session_tokens.py); its shop is the only shop the request can see. A token
that fails any check is answered `401` with `X-Shopify-Retry-Invalid-Session-Request: 1`, so
App Bridge fetches a fresh one and retries. A shop without a usable offline token (just
installed by Shopify, or installed again) gets one by token exchange on its first request
(service/shopify/token_exchange.py); a shop Shopify refuses it for (the app is not installed
there) is refused the same way as a bad token.

- GET  /api/job-types            the types offered here, with their input's JSON schema
- POST /api/jobs                 {"type", "input"} (+ optional Idempotency-Key): 201 the job
- GET  /api/jobs                 newest first, ?status=&type=&limit=&cursor=:
                                 {"jobs", "nextCursor"}
- GET  /api/jobs/{id}            one job
- POST /api/jobs/{id}/cancel     a pending or retrying job becomes failed "Cancelled" (else 409)
- POST /api/jobs/{id}/retry      a failed job starts over (else 409)

Another shop's job is `404 {"error": "Job not found"}`, exactly like a job that never existed.
"""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobs.types import JobType
from service import job_views, store
from service.core.states import CANCELLED_MESSAGE, FINAL_STATUSES, JobStatus
from service.intake import Source
from service.shopify import oauth, session_tokens, token_exchange
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

RETRY_HEADER = "X-Shopify-Retry-Invalid-Session-Request"
DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100
MAX_FILTER_LENGTH = 100
NO_STORE = {"Cache-Control": "no-store"}
# The merchant's Idempotency-Keys live apart from the storefront's (`proxy:`) and the app's
# own. The value is stored in jobs.idempotency_key: kept as it was when this API was "admin".
MERCHANT_KEY_PREFIX = "admin:"


# -- who is asking -------------------------------------------------------------------------


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={RETRY_HEADER: "1"})


async def authenticate(request: Request) -> tuple[store.Shop, session_tokens.SessionToken]:
    """The installed shop and the session of a request's bearer token (exchanging the token
    for an offline one first when the shop has none that works)."""
    state = web_state(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("Missing bearer session token")
    settings = state.settings
    try:
        session = session_tokens.verify(
            token.strip(),
            api_key=settings.shopify_api_key,
            secret=settings.shopify_api_secret.get_secret_value(),
        )
    except session_tokens.InvalidSessionToken as exc:
        state.metrics.rejected_signature("session_token")
        raise _unauthorized(str(exc)) from None
    shop = await state.shops.get(session.shop)
    if token_exchange.usable(shop):
        assert shop is not None
        return shop, session
    try:
        shop = await token_exchange.ensure_offline_token(
            state.database, state.redis, state.http, settings, session.shop, session.raw
        )
    except oauth.OAuthError as exc:
        logger.warning("token exchange for %s refused: %s", session.shop, exc)
        if exc.status == 400:
            message = "Shopify refused the token exchange: is the app installed?"
            raise _unauthorized(message) from None
        raise ApiError(503, str(exc)) from None
    except RedisError as exc:  # the exchange lock: nothing was exchanged, the caller may retry
        logger.warning("token exchange for %s not attempted: %r", session.shop, exc)
        raise ApiError(503, "Token exchange unavailable, try again") from None
    state.shops.forget(session.shop)
    logger.info("shop %s installed by token exchange (scopes: %s)", shop.domain, shop.scopes)
    return shop, session


# -- answers -------------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def job_json(
    job: store.Job, merchants: bool, shown: job_views.Shown, paused: bool = False
) -> dict[str, Any]:
    """The job as the merchant API shows it; `merchants`: of a type the merchant may start
    (JobType.admin=True), so theirs to cancel and retry too (not a compliance redaction, say).
    `shown`: its progress, batch counts and wait, as every reader shows them."""
    body: dict[str, Any] = {
        "jobId": str(job.id),
        "type": job.type,
        "status": job.status,
        "progress": shown.progress,
        "progressMessage": job.progress_message,
        "waiting": shown.waiting,
        "paused": paused,  # not final, its shop's work paused (JobsClient.pause_shop)
        "batch": shown.batch,
        "parentId": None if job.parent_id is None else str(job.parent_id),
        "input": job.input,
        "attempts": job.attempts,
        "retryCount": job.retry_count,
        "source": job.source,
        "startedBy": job.staff_user_id,
        "createdAt": _iso(job.created_at),
        "startedAt": _iso(job.started_at),
        "finishedAt": _iso(job.finished_at),
        "cancellable": merchants and job.status not in FINAL_STATUSES,
        "retryable": merchants and job.status == JobStatus.FAILED,
    }
    if job.status == JobStatus.COMPLETED:
        body["result"] = job.result
    # The merchant is not the app's developer: an unexpected exception's text (which may name
    # hosts, or another customer's data) stays in the dashboard; they see the generic message.
    elif job.status == JobStatus.FAILED:
        body["error"] = job.shown_error
        body["cancelled"] = job.error_message == CANCELLED_MESSAGE
    elif job.status == JobStatus.RETRYING:
        body["error"] = job.shown_error  # the last attempt's failure
    return body


def _merchant_types(request: Request) -> dict[str, JobType]:
    return {name: t for name, t in web_state(request).job_types.items() if t.admin}


def _encode_cursor(job: store.Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor[:200] + "=" * (-len(cursor) % 4)).decode()
        moment, _, job_id = raw.partition("|")
        created = datetime.fromisoformat(moment)
        if created.tzinfo is None:
            raise ValueError("naive timestamp")
        created.astimezone(UTC)  # OverflowError if out of range in UTC (as Postgres sees it)
        return created, UUID(job_id)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "Invalid cursor") from None


def parse_job_id_or_400(text: str) -> UUID:
    job_id = parse_job_id(text)
    if job_id is None:
        raise ApiError(400, "Malformed job id: expected a UUID")
    return job_id


def _path_job_id(request: Request) -> UUID:
    return parse_job_id_or_400(str(request.path_params["job_id"]))


async def _own_job(request: Request, shop: store.Shop) -> store.Job:
    job = await store.get_job_for_shop(web_state(request).database, shop.id, _path_job_id(request))
    if job is None:
        raise ApiError(404, "Job not found")
    return job


async def _shown(request: Request, job: store.Job, shop: store.Shop) -> dict[str, Any]:
    state = web_state(request)
    shown = await job_views.show(state.database, state.redis, job, shop.domain)
    return job_json(job, job.type in _merchant_types(request), shown)


def _merchants(request: Request, job: store.Job, action: str) -> None:
    """Only jobs of the types a merchant may start are theirs to cancel or retry: the others
    (compliance redactions, webhook work, the app's own) are the app's to run."""
    if job.type not in _merchant_types(request):
        raise ApiError(403, f"Jobs of type {job.type} cannot be {action} from the admin")


# -- endpoints -----------------------------------------------------------------------------


async def job_types(request: Request) -> Response:
    await authenticate(request)
    types = [
        {"name": name, "schema": t.input_model.model_json_schema()}
        for name, t in sorted(_merchant_types(request).items())
    ]
    return JSONResponse({"types": types}, headers=NO_STORE)


async def create(request: Request) -> Response:
    state = web_state(request)
    shop, session = await authenticate(request)
    announced_length(request)
    key = idempotency_key(request, MERCHANT_KEY_PREFIX)
    body = await read_body(request, MAX_BODY_BYTES)
    job_type, job_input = parse_job_request(body, state.job_types, offered=lambda t: t.admin)
    submitted = await state.intake.submit(
        job_type,
        shop=shop,
        job_input=job_input,
        source=Source.MERCHANT,
        idempotency_key=key,
        staff_user_id=session.user,
    )
    if submitted.existing is not None:
        if (submitted.existing.type, submitted.existing.input) != (job_type.name, job_input):
            raise ApiError(422, "Idempotency-Key was already used for a different request")
        return JSONResponse(await _shown(request, submitted.existing, shop), headers=NO_STORE)
    logger.info(
        "job %s (%s) queued for %s by staff user %s",
        submitted.job_id, job_type.name, shop.domain, session.user,
    )  # fmt: skip
    job = await store.get_job_for_shop(state.database, shop.id, submitted.job_id)
    if job is None:  # already finished and pruned: unlikely, but not an error
        return JSONResponse({"jobId": str(submitted.job_id)}, status_code=201, headers=NO_STORE)
    return JSONResponse(await _shown(request, job, shop), status_code=201, headers=NO_STORE)


# Who started a job, as the merchant's list filters it (`startedBy`): jobs.source values.
STARTERS: dict[str, tuple[str, ...]] = {
    "merchant": (Source.MERCHANT,),
    "schedule": (Source.SCHEDULE,),
    "webhook": (Source.WEBHOOK,),
    "app": (Source.APP, Source.JOB, Source.CLI),
    "storefront": (Source.PROXY,),
}


def _list_scope(request: Request, user: str | None) -> dict[str, Any]:
    """The merchant list's own filters: `startedBy` (STARTERS), `top=1` (batch children left
    out: each under its parent), `parent=ID` (that batch's children), `mine=1` / `mine=0`
    (started by this staff user, or not)."""
    query = request.query_params
    scope: dict[str, Any] = {}
    starter = query.get("startedBy") or None
    if starter is not None:
        if starter not in STARTERS:
            raise ApiError(400, "Invalid startedBy", {"allowed": list(STARTERS)})
        scope["sources"] = tuple(str(s) for s in STARTERS[starter])
    if query.get("top") == "1":
        scope["top_level"] = True
    parent = query.get("parent") or None
    if parent is not None:
        parent_id = parse_job_id(parent)
        if parent_id is None:
            raise ApiError(400, "Malformed parent: expected a UUID")
        scope["parent_id"] = parent_id
    mine = query.get("mine") or None
    if mine is not None:
        if mine not in ("0", "1"):
            raise ApiError(400, "mine must be 0 or 1")
        scope["staff_user"] = user
        scope["by_staff_user"] = mine == "1"
    return scope


async def list_jobs(request: Request) -> Response:
    shop, session = await authenticate(request)
    query = request.query_params
    status = query.get("status") or None
    if status is not None and status not in set(JobStatus):
        raise ApiError(400, "Invalid status", {"allowed": [s.value for s in JobStatus]})
    job_type = query.get("type") or None
    if job_type is not None and (len(job_type) > MAX_FILTER_LENGTH or "\x00" in job_type):
        raise ApiError(400, "Invalid type")
    limit_text = query.get("limit", str(DEFAULT_PAGE_SIZE))
    # ASCII and short: int() refuses some of str.isdigit's digits ("²") and 4,301 of them.
    digits = len(limit_text) <= 3 and limit_text.isascii() and limit_text.isdigit()
    if not (digits and 1 <= int(limit_text) <= MAX_PAGE_SIZE):
        raise ApiError(400, f"limit must be 1 to {MAX_PAGE_SIZE}")
    limit = int(limit_text)
    cursor = query.get("cursor")
    filters = store.JobFilter(
        status=JobStatus(status) if status else None,
        job_type=job_type,
        shop_id=shop.id,
        **_list_scope(request, session.user),
    )
    listed = await store.list_jobs(
        web_state(request).database,
        filters,
        limit=limit + 1,
        before=_decode_cursor(cursor) if cursor else None,
    )
    page = listed[:limit]
    jobs = [item.job for item in page]
    next_cursor = _encode_cursor(jobs[-1]) if len(listed) > limit else None
    offered = _merchant_types(request)  # once for the page, not per job
    state = web_state(request)
    shown = await job_views.show_many(
        state.database, state.redis, [(job, shop.domain) for job in jobs]
    )
    return JSONResponse(
        {
            "jobs": [
                job_json(item.job, item.job.type in offered, view, item.paused)
                for item, view in zip(page, shown, strict=True)
            ],
            "nextCursor": next_cursor,
            # Every type the shop's jobs have, for the list's type filter.
            "types": await store.job_types_of_shop(state.database, shop.id),
        },
        headers=NO_STORE,
    )


async def read(request: Request) -> Response:
    shop, _ = await authenticate(request)
    return JSONResponse(
        await _shown(request, await _own_job(request, shop), shop), headers=NO_STORE
    )


async def cancel(request: Request) -> Response:
    shop, session = await authenticate(request)
    job = await _own_job(request, shop)
    _merchants(request, job, "cancelled")
    # A running job too: its handler is stopped (service/jobs_client.py, JobsClient.cancel).
    if not await web_state(request).jobs.cancel(job.id):
        raise ApiError(409, "Only a job that is not final can be cancelled")
    logger.info("job %s cancelled by staff user %s of %s", job.id, session.user, shop.domain)
    return JSONResponse(
        await _shown(request, await _own_job(request, shop), shop), headers=NO_STORE
    )


async def retry(request: Request) -> Response:
    shop, session = await authenticate(request)
    job = await _own_job(request, shop)
    _merchants(request, job, "retried")
    if await web_state(request).jobs.retry(job.id, Source.MERCHANT) is None:
        raise ApiError(409, "Only a failed job can be retried")
    logger.info("job %s retried by staff user %s of %s", job.id, session.user, shop.domain)
    return JSONResponse(
        await _shown(request, await _own_job(request, shop), shop), headers=NO_STORE
    )


routes = [
    Route("/api/job-types", job_types, methods=["GET"]),
    Route("/api/jobs", create, methods=["POST"]),
    Route("/api/jobs", list_jobs, methods=["GET"]),
    Route("/api/jobs/{job_id}", read, methods=["GET"]),
    Route("/api/jobs/{job_id}/cancel", cancel, methods=["POST"]),
    Route("/api/jobs/{job_id}/retry", retry, methods=["POST"]),
]
