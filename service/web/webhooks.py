"""POST /webhooks: every Shopify webhook topic, checked, recorded and queued within 5 s.

The body is read within bounds (service/web/webhook_body.py: size, time, and a budget for
the process), then the HMAC (X-Shopify-Hmac-Sha256: base64 HMAC-SHA256 of the raw body,
compared in constant time) is checked before anything is parsed; a wrong one gets 401.

The HMAC covers the body only: the headers (topic, shop, event id, trigger time) could be
rewritten on a body Shopify signed for something else, or re-sent fresh on a captured body. So:

- a topic whose payload names its shop (`app/uninstalled`: `myshopify_domain`; compliance
  topics: `shop_domain`) is refused with 400 unless the payload names the header's shop, and
  `app/uninstalled` must carry X-Shopify-Triggered-At, as Shopify's always does;
- the event is recorded by X-Shopify-Event-Id (X-Shopify-Webhook-Id when absent) and by the
  SHA-256 of its raw body, per topic and shop (service/store/webhooks.py): Shopify's repeated
  deliveries of an event, and the same body re-sent under a fresh event id, are 200 no-ops
  (`duplicate`, `duplicate body`), so a replayer gets nothing and Shopify stops retrying.

No Shopify work happens here, but for one call:

- `app/uninstalled` is acted on only once Shopify confirms it (service/shopify/uninstalls.py):
  the shop's offline token answers 401 (and its refresh, for an expiring token, is refused).
  Then the shop is marked uninstalled (its proxy calls get 404 from now on), provided it still
  holds the token that was refused. A token that works means the shop is installed (a
  replayed or late uninstall of an earlier install): 200 `not confirmed`, nothing changes. If
  Shopify cannot be asked (timeout, 429, 5xx, network; or it was asked about this shop a
  moment ago, which bounds what replays cost), the event's record is undone and the answer is
  503: Shopify delivers it again later and the check runs again. Its body is recorded but not
  matched (it may read the same at the next uninstall): the check is the dedupe;
- a topic in `jobs.registry.webhook_jobs` becomes a job row per job it starts (source 'webhook',
  idempotency key `webhook:{event id}`, the second and later `webhook:{event id}:{type}`) and
  a queue entry (arq `_job_id` = the job id), recorded in the same transaction as the event,
  then queued through service/intake.py; if it cannot be queued, the event is undone and the
  answer is 503 so Shopify delivers it again. A job with a `debounce` or a `unique_key` whose
  key a pending job of the shop holds adds no job: a debounced event gives that job its input
  and pushes its due time (`debounced`), a unique one leaves it as it is (`already pending`);
  the event is recorded and linked to that job;
- `bulk_operations/finish` wakes the job waiting for that bulk operation: a suspended job
  runs again at once (service/wakes.py), a run waiting in place stops blocking on its Redis
  list (service/shopify/bulk_slots.py); either then reads the operation's final state;
- any other topic is recorded and acknowledged.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobs.types import JobType, WebhookJob
from service import store, wakes
from service.intake import InvalidJobInput, NotQueued, Source, queue_entry, validate_input
from service.shopify import bulk, bulk_slots, uninstalls
from service.shopify.shop_domain import is_shop_domain
from service.shopify.signatures import verify_webhook
from service.web.errors import ApiError
from service.web.state import web_state
from service.web.webhook_body import read_webhook_body

logger = logging.getLogger("shopjobs.web")

UNINSTALLED = "app/uninstalled"
BULK_FINISHED = "bulk_operations/finish"
# Where each topic's payload names its shop, as Shopify sends it.
SHOP_FIELDS = {
    UNINSTALLED: "myshopify_domain",
    "customers/data_request": "shop_domain",
    "customers/redact": "shop_domain",
    "shop/redact": "shop_domain",
}


def _triggered_at(request: Request) -> datetime | None:
    """X-Shopify-Triggered-At as an aware datetime; None when absent, malformed, or out of
    range once in UTC (`0001-01-01T00:00:00+14:00` parses, but Postgres cannot store it)."""
    value = request.headers.get("x-shopify-triggered-at", "")
    try:
        moment = datetime.fromisoformat(value[:64])
        if moment.tzinfo is None:
            return None
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


async def receive(request: Request) -> Response:
    state = web_state(request)
    settings = state.settings
    body = await read_webhook_body(request, state.webhook_bodies, settings)
    secret = settings.shopify_api_secret.get_secret_value()
    if not verify_webhook(body, request.headers.get("x-shopify-hmac-sha256"), secret):
        state.metrics.rejected_signature("webhook")
        raise ApiError(401, "Invalid HMAC")
    headers = request.headers
    topic = headers.get("x-shopify-topic", "")
    shop = headers.get("x-shopify-shop-domain", "")
    event_id = headers.get("x-shopify-event-id") or headers.get("x-shopify-webhook-id") or ""
    if not topic or not is_shop_domain(shop) or not event_id or len(event_id) > 255:
        raise ApiError(400, "Missing or invalid X-Shopify-Topic, -Shop-Domain or -Event-Id")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "Body must be JSON") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "Body must be a JSON object")
    shop_field = SHOP_FIELDS.get(topic)
    if shop_field is not None and payload.get(shop_field) != shop:
        logger.warning("webhook %s for %s: payload names another shop; refused", topic, shop)
        raise ApiError(400, f"Payload {shop_field} does not match X-Shopify-Shop-Domain")
    triggered_at = _triggered_at(request)
    if topic == UNINSTALLED and triggered_at is None:
        raise ApiError(400, "Missing or invalid X-Shopify-Triggered-At")
    digest = hashlib.sha256(body).digest()
    if topic == UNINSTALLED:
        outcome = await _uninstall(request, shop, event_id, digest, triggered_at)
    else:
        outcome = await _handle(request, topic, shop, event_id, digest, payload)
    return JSONResponse({"status": outcome})


async def _record(
    request: Request, topic: str, shop: str, event_id: str, digest: bytes
) -> store.WebhookRecord:
    outcome = await store.record_webhook_event(
        web_state(request).database,
        event_id=event_id,
        topic=topic,
        shop_domain=shop,
        webhook_id=request.headers.get("x-shopify-webhook-id"),
        api_version=request.headers.get("x-shopify-api-version"),
        body_sha256=digest,
        match_body=topic != UNINSTALLED,
    )
    if outcome is store.WebhookRecord.DUPLICATE_BODY:
        logger.warning("webhook %s for %s: body received before, event id %s new", topic, shop,
                       event_id[:64])  # fmt: skip
    return outcome


async def _uninstall(
    request: Request, shop: str, event_id: str, digest: bytes, triggered_at: datetime | None
) -> str:
    """Mark the shop uninstalled once Shopify confirms it; the module docstring says how."""
    state = web_state(request)
    database = state.database
    recorded = await _record(request, UNINSTALLED, shop, event_id, digest)
    if recorded is not store.WebhookRecord.FRESH:
        return recorded.value
    stored = await store.get_shop(database, shop, tokens=True)
    if stored is None or not stored.installed:
        return "not installed"
    try:
        check = await uninstalls.confirm_uninstalled(
            database, state.redis, state.http, state.settings, stored
        )
    except uninstalls.CheckDeferred as exc:
        await store.forget_webhook_event(database, event_id)
        logger.warning("app/uninstalled for %s: Shopify could not confirm it (%s)", shop, exc)
        raise ApiError(503, "Shopify could not confirm the uninstall; deliver it again") from None
    if check is not uninstalls.TokenCheck.REVOKED:
        logger.warning(
            "app/uninstalled for %s (triggered %s) not confirmed by Shopify (token %s): ignored",
            shop,
            triggered_at,
            check.value,
        )
        return "not confirmed"
    if not await store.mark_shop_uninstalled(database, shop, if_token=stored.access_token):
        logger.info("app/uninstalled for %s: a new token was stored meanwhile; ignored", shop)
        return "not confirmed"
    state.shops.forget(shop)
    logger.info("shop %s uninstalled the app", shop)
    return "uninstalled"


async def _bulk_finished(
    request: Request, shop: str, event_id: str, digest: bytes, payload: dict[str, Any]
) -> str:
    """`bulk_operations/finish`: wake the job waiting for the operation.

    Not in a transaction: the wake's row update must be committed before its queue entry is
    due, or a worker taking the entry at once finds the row locked, takes it for a run held by
    another worker, and looks again only a lease later. A wake is idempotent, so a redelivery
    (recorded already) wakes again: a web process that died between the record and the wake
    loses no wake-up."""
    state = web_state(request)
    recorded = await _record(request, BULK_FINISHED, shop, event_id, digest)
    operation_id = payload.get("admin_graphql_api_id")
    if not isinstance(operation_id, str):
        return "invalid payload" if recorded is store.WebhookRecord.FRESH else recorded.value
    # The marker first: a job deciding to wait right now finds it once its wait is recorded
    # (jobs/worker/suspend.py); then the job already waiting, if any, is woken.
    await bulk.signal_finished(state.redis, operation_id, str(payload.get("status")))
    await bulk_slots.mark_subscribed(state.redis, shop)
    await wakes.wake_bulk_operation(state.database, state.redis, operation_id)
    return "bulk operation finished" if recorded is store.WebhookRecord.FRESH else recorded.value


async def _handle(
    request: Request,
    topic: str,
    shop: str,
    event_id: str,
    digest: bytes,
    payload: dict[str, Any],
) -> str:
    state = web_state(request)
    database = state.database
    routes = state.webhook_jobs.get(topic, ())
    if topic == BULK_FINISHED:
        return await _bulk_finished(request, shop, event_id, digest, payload)
    async with database.transaction():
        recorded = await _record(request, topic, shop, event_id, digest)
        if recorded is not store.WebhookRecord.FRESH:
            return recorded.value
        if not routes:
            return "ignored"
        known = await store.get_shop(database, shop)
        if known is None:
            return "unknown shop"
        started: list[tuple[WebhookJob, dict[str, Any], str | None, store.DebounceSpec | None]] = []
        for route in routes:
            try:
                job_input = validate_input(route.job_type, route.make_input(payload))
                unique_key, debounce = _flow_keys(route, payload)
            except InvalidJobInput:
                logger.warning(
                    "webhook %s for %s: payload does not fit %s", topic, shop, route.job_type.name
                )
                continue
            except ValueError as exc:
                logger.warning("webhook %s for %s: %s: %s", topic, shop, route.job_type.name, exc)
                continue
            started.append((route, job_input, unique_key, debounce))
        if not started:
            return "invalid payload"
        # The rows are written with the event, in its transaction (not through the intake's
        # group commit), so an event is never recorded without its jobs. Several jobs for one
        # topic (docs/your-app.md): the first keeps the event's key, the others add their type.
        jobs: list[tuple[JobType, store.Job, bool, dict[str, Any], bool]] = []
        for index, (route, job_input, unique_key, debounce) in enumerate(started):
            name = route.job_type.name
            key = f"webhook:{event_id}" if index == 0 else f"webhook:{event_id}:{name}"
            if unique_key is None and debounce is None:
                job, created = await store.create_job(
                    database, shop_id=known.id, job_type=name, job_input=job_input,
                    idempotency_key=key, source=Source.WEBHOOK,
                )  # fmt: skip
            else:
                # A burst's events meet on the pending job that holds the key (store/flow.py);
                # concurrent deliveries, on any web process, wait on each other's insert there.
                job, created = await store.create_keyed_job(
                    database, shop_id=known.id, job_type=name, job_input=job_input,
                    idempotency_key=key, source=Source.WEBHOOK, unique_key=unique_key,
                    debounce=debounce,
                )  # fmt: skip
            jobs.append((route.job_type, job, created, job_input, debounce is not None))
        await store.link_webhook_job(database, event_id, jobs[0][1].id)
    answers: list[str] = []
    try:
        for job_type, job, created, job_input, debounced in jobs:
            entry = queue_entry(job_type, job.id, shop, job_input, Source.WEBHOOK)
            if created:
                await state.intake.queue(entry, Source.WEBHOOK, run_at=job.run_at)
                logger.info("webhook %s for %s queued job %s", topic, shop, job.id)
                answers.append("queued")
            elif debounced:
                await state.intake.push(entry, job.run_at)
                logger.info("webhook %s for %s debounced into job %s", topic, shop, job.id)
                answers.append("debounced")
            else:
                logger.info("webhook %s for %s: job %s already pending", topic, shop, job.id)
                answers.append("already pending")
    except NotQueued:
        # Undone with its jobs, so that Shopify's next delivery of the event is not a duplicate.
        await store.forget_webhook_event(database, event_id)
        raise
    return "queued" if "queued" in answers else answers[0]


def _flow_keys(
    route: WebhookJob, payload: dict[str, Any]
) -> tuple[str | None, store.DebounceSpec | None]:
    """The route's keep-one-pending key and debounce for this payload; ValueError when a key
    function fails or gives no usable key (1 to 255 printable characters)."""

    def key_of(key: str | Callable[[dict[str, Any]], str]) -> str:
        try:
            value = key(payload) if callable(key) else key
        except Exception as exc:
            raise ValueError(f"its key function failed: {exc!r}"[:300]) from None
        if not (isinstance(value, str) and 0 < len(value) <= 255 and value.isprintable()):
            raise ValueError("its key function gave no key of 1 to 255 printable characters")
        return value

    unique = None if route.unique_key is None else key_of(route.unique_key)
    spec = route.debounce
    if spec is None:
        return unique, None
    return unique, store.DebounceSpec(key_of(spec.key), spec.seconds, spec.max_wait)


routes = [Route("/webhooks", receive, methods=["POST"])]
