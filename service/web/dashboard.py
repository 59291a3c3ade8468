"""The job dashboard, mounted at /admin: see jobs, and retry or cancel them.

Server-rendered HTML (Jinja2, service/web/templates/dashboard/), one small stylesheet inlined, no
JavaScript, usable on a phone. Every page and action sits behind HTTP basic auth with
DASHBOARD_USERNAME / DASHBOARD_PASSWORD; without a password the dashboard does not exist (404).
The path stays /admin (operators' bookmarks); in the code, "admin" is only Shopify's Admin API.

- GET  /admin/                          counts by status, the jobs newest first, filterable by
                                        status, shop and type, paged; failed jobs per type
- GET  /admin/charts                    throughput, failures and waits of the last hour and day,
                                        for the shop and type filtered (inline SVG)
- GET  /admin/jobs/{job_id}             one job: input, result, error, attempts, timings
- POST /admin/jobs/{job_id}/retry       a failed job starts over (pending, counters at 0)
- POST /admin/jobs/{job_id}/cancel      a job not yet final (a running one too: its handler is
                                        stopped) becomes failed "Cancelled", with its batch
- POST /admin/retry-failed              every failed job of one type starts over
- GET  /admin/bulk?action=retry|cancel&...  how many jobs a retry or cancel by filter (shop,
                                        type, status, created / finished between) would act on,
                                        with a form to confirm
- POST /admin/bulk                      do it (batches of 500), logged with filter and count
- POST /admin/shops/pause|resume        pause or resume a shop's work (form field `shop`)

A client that fails to log in DASHBOARD_LOGIN_MAX_FAILURES times within
DASHBOARD_LOGIN_WINDOW_SECONDS is answered 429 (JSON, Retry-After) until the window ends
(service/web/login_attempts.py).

Browsers send basic-auth credentials with any request to the site, including a form another
site submits, so every POST must carry a CSRF token only our own pages know: an HMAC of the
credentials under the app's secret. The pages also refuse to be framed (clickjacking).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode
from uuid import UUID

import jinja2
import orjson
from databases import Database
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs.types import JobType
from service import job_views, store
from service.core.schedule_times import next_tick
from service.core.settings import Settings
from service.core.states import JobStatus
from service.intake import QueueOutcome, Source
from service.jobs_client import ShopNotInstalled
from service.web import charts
from service.web.errors import ApiError
from service.web.login_attempts import client_key
from service.web.parsing import parse_job_id, read_body
from service.web.state import web_state

logger = logging.getLogger("shopjobs.dashboard")

PAGE_SIZE = 50
MAX_PAGE = 10_000
MAX_FORM_BYTES = 4096
MAX_FILTER_LENGTH = 255
STATUSES = tuple(JobStatus)
# The realm and the CSRF label below keep their old words: browsers remember credentials by
# realm, and a new label would refuse every form already open.
REALM = 'Basic realm="shopjobs admin", charset="UTF-8"'
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
NOTICES = {
    "retried": ("ok", "Job queued again: it starts over with its full attempts."),
    "retried-unqueued": (
        "warn",
        "Job is pending again, but the queue did not answer: the reconciler will queue it.",
    ),
    "not-failed": ("error", "Only a failed job can be retried."),
    "cancelled": (
        "ok",
        "Job cancelled: a running handler is stopped, a waiting job is skipped, and a batch's "
        "unfinished children are cancelled with it.",
    ),
    "not-cancellable": (
        "error",
        "Only a job that is not final can be cancelled; this one has finished.",
    ),
    "bulk-retried": ("ok", "{n} failed {type} job(s) queued again."),
    "filter-retried": ("ok", "{n} job(s) matching the filter queued again."),
    "filter-cancelled": ("ok", "{n} job(s) matching the filter cancelled."),
    "shop-paused": ("ok", "Shop paused: its jobs stay pending until it is resumed."),
    "shop-resumed": ("ok", "Shop resumed: its jobs are back in the rotation."),
    "unknown-shop": ("error", "No such shop."),
}
FLOW_FIELDS = (
    "shop",
    "type",
    "status",
    "created_after",
    "created_before",
    "finished_after",
    "finished_before",
)


# -- access --------------------------------------------------------------------------------


def credentials_match(header: str | None, username: str, password: str) -> bool:
    """An `Authorization: Basic ...` header against the configured pair, in constant time."""
    if not header or not header[:6].lower() == "basic ":
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    given_user, colon, given_password = decoded.partition(":")
    # Both compared every time, so the answer's timing says nothing about which was wrong.
    user_ok = hmac.compare_digest(given_user.encode(), username.encode())
    password_ok = hmac.compare_digest(given_password.encode(), password.encode())
    return bool(colon) & user_ok & password_ok


def csrf_token(settings: Settings) -> str:
    """A token for the dashboard's forms; it changes when the credentials or secret change."""
    assert settings.dashboard_password is not None
    key = settings.shopify_api_secret.get_secret_value().encode()
    message = b"\0".join(
        [
            b"shopjobs-admin-csrf",
            settings.dashboard_username.encode(),
            settings.dashboard_password.get_secret_value().encode(),
        ]
    )
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class DashboardGuard:
    """Basic auth in front of every dashboard path, plus the security headers; a client's
    failed logins are limited (service/web/login_attempts.py)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        password = self.settings.dashboard_password
        if password is None:
            raise ApiError(404, "The dashboard is disabled: set DASHBOARD_PASSWORD to enable it")
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        if not header:  # a browser's first request: the challenge, not a failed login
            raise ApiError(401, "Unauthorized", headers={"WWW-Authenticate": REALM})
        attempts = web_state(Request(scope)).login_attempts
        client = client_key(scope["client"][0] if scope.get("client") else None)
        wait = await attempts.locked_for(client)
        if wait is not None:
            raise ApiError(
                429, "Too many failed logins: try again later", headers={"Retry-After": str(wait)}
            )
        username = self.settings.dashboard_username
        if not credentials_match(header, username, password.get_secret_value()):
            await attempts.failed(client)
            logger.warning("dashboard: failed login from %s", client)
            raise ApiError(401, "Unauthorized", headers={"WWW-Authenticate": REALM})

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_secured)


# -- rendering -----------------------------------------------------------------------------


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return ""
    seconds = (datetime.now(UTC) - moment).total_seconds()
    if seconds < 0:
        return "in " + _span(-seconds)
    return _span(seconds) + " ago"


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h {seconds % 3600 // 60:.0f}m"
    return f"{seconds // 86400:.0f}d"


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    seconds = (end - start).total_seconds()
    return f"{seconds:.2f}s" if seconds < 60 else _span(seconds)


def _pretty_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates" / "dashboard"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(ago=_ago, when=_when, pretty_json=_pretty_json)
    env.globals.update(duration=_duration, statuses=STATUSES, JobStatus=JobStatus)
    return env


TEMPLATES = Jinja2Templates(env=_environment())


def _render(request: Request, name: str, context: dict[str, Any]) -> Response:
    base = request.scope.get("root_path", "")
    settings = web_state(request).settings
    notice = NOTICES.get(request.query_params.get("notice", ""))
    if notice is not None:
        count = request.query_params.get("n", "")
        notice = (
            notice[0],
            notice[1].format(
                n=count if count.isdigit() else "?", type=request.query_params.get("type", "")
            ),
        )
    return TEMPLATES.TemplateResponse(
        request,
        name,
        {"base": base, "csrf": csrf_token(settings), "notice": notice, **context},
    )


# -- reading -------------------------------------------------------------------------------


def _filters(request: Request) -> tuple[store.JobFilter, int]:
    params = request.query_params
    status = params.get("status", "")
    if status and status not in STATUSES:
        raise ApiError(400, "status must be one of " + ", ".join(STATUSES))
    shop = params.get("shop", "").strip()
    job_type = params.get("type", "").strip()
    if len(shop) > MAX_FILTER_LENGTH or len(job_type) > MAX_FILTER_LENGTH:
        raise ApiError(400, "filter too long")
    if "\x00" in shop or "\x00" in job_type:  # Postgres text cannot hold NUL
        raise ApiError(400, "filter contains a NUL character")
    page_text = params.get("page", "1")
    # ASCII and short: int() refuses over 4,300 digits.
    digits = len(page_text) <= 5 and page_text.isascii() and page_text.isdigit()
    if not (digits and 1 <= int(page_text) <= MAX_PAGE):
        raise ApiError(400, f"page must be a number from 1 to {MAX_PAGE}")
    chosen = JobStatus(status) if status else None
    return store.JobFilter(chosen, shop or None, job_type or None), int(page_text)


def _query(filters: store.JobFilter, **extra: Any) -> str:
    values = {"status": filters.status, "shop": filters.shop, "type": filters.job_type, **extra}
    return urlencode({k: v for k, v in values.items() if v})


async def index(request: Request) -> Response:
    filters, page = _filters(request)
    state = web_state(request)
    database = state.database
    rows = await store.list_jobs(
        database, filters, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE
    )
    counts = await store.count_jobs_by_status(database, filters)
    types = sorted(set(state.job_types) | set(await store.job_types_in_use(database)))
    return _render(
        request,
        "jobs.html",
        {
            "filters": filters,
            "page": page,
            "jobs": rows[:PAGE_SIZE],
            "shown": await job_views.show_many(
                database, state.redis, [(row.job, row.shop) for row in rows[:PAGE_SIZE]]
            ),
            "first": (page - 1) * PAGE_SIZE + 1,
            "previous_query": _query(filters, page=page - 1 if page > 2 else None)
            if page > 1
            else None,
            "next_query": _query(filters, page=page + 1) if len(rows) > PAGE_SIZE else None,
            "with_status": lambda status: _query(dataclasses.replace(filters, status=status)),
            "counts": counts,
            "total": sum(counts.values()),
            "types": types,
            "failed_by_type": await store.failed_jobs_by_type(database),
            "schedules": await _schedules(state.job_types, database),
            "current": _query(filters, page=page if page > 1 else None),
            "paused_shops": await store.paused_shops(database),
        },
    )


@dataclasses.dataclass(frozen=True)
class ScheduleRow:
    """A scheduled job type as the dashboard lists it."""

    job_type: str
    cron: str
    per_shop: bool
    last_tick: datetime | None  # the latest tick whose runs were written
    next_tick: datetime


async def _schedules(types: dict[str, JobType], database: Database) -> list[ScheduleRow]:
    """Every scheduled type with its last and next tick (jobs/worker/schedules.py runs them)."""
    scheduled = {name: t.schedule for name, t in types.items() if t.schedule is not None}
    if not scheduled:
        return []
    last = await store.schedule_ticks(database)
    now = datetime.now(UTC)
    return [
        ScheduleRow(name, s.cron, s.per_shop, last.get(name), next_tick(s, now))
        for name, s in sorted(scheduled.items())
    ]


def _job_id(request: Request) -> UUID | None:
    return parse_job_id(str(request.path_params["job_id"]))


async def job_page(request: Request) -> Response:
    job_id = _job_id(request)
    database = web_state(request).database
    listed = None if job_id is None else await store.get_listed_job(database, job_id)
    if listed is None:
        raise ApiError(404, "Job not found")
    job = listed.job
    # The view every reader shows (service/job_views.py): progress, batch counts, the wait.
    shown = await job_views.show(database, web_state(request).redis, job, listed.shop)
    back = request.query_params.get("back", "")[:1000]
    return _render(
        request,
        "job.html",
        {"listed": listed, "job": job, "back": back, "batch": shown.batch, "shown": shown},
    )


async def charts_page(request: Request) -> Response:
    """Throughput, failures and waits of the last hour and the last day, for the shop and type
    the filter names (service/store/charts.py queries, service/web/charts.py draws)."""
    filters, _ = _filters(request)
    filters = dataclasses.replace(filters, status=None)
    state = web_state(request)
    now = datetime.now(UTC)
    windows = []
    for window in store.Window:
        series = await store.job_chart(state.database, filters, window, now)
        windows.append(
            {
                "series": series,
                "charts": [
                    ("Finished (throughput)", charts.throughput(series)),
                    ("Failed", charts.failures(series)),
                    ("Wait, created → started", charts.waits(series)),
                ],
                "finished": sum(b.completed + b.failed for b in series.buckets),
                "failed": sum(b.failed for b in series.buckets),
            }
        )
    types = sorted(set(state.job_types) | set(await store.job_types_in_use(state.database)))
    return _render(
        request,
        "charts.html",
        {"filters": filters, "windows": windows, "types": types, "current": _query(filters)},
    )


# -- acting --------------------------------------------------------------------------------


async def _form(request: Request) -> dict[str, str]:
    """The posted form, once its CSRF token is checked."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise ApiError(400, "expected a form (application/x-www-form-urlencoded)")
    body = await read_body(request, MAX_FORM_BYTES)
    try:
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        raise ApiError(400, "form is not UTF-8") from None
    expected = csrf_token(web_state(request).settings)
    if not hmac.compare_digest(form.get("csrf", "").encode(), expected.encode()):
        raise ApiError(403, "Invalid or missing CSRF token: reload the page and try again")
    return form


def _back(form: dict[str, str], page: str, notice: str) -> Response:
    """303 back to the job's page (keeping the list it came from), with a notice to show."""
    query = {"notice": notice}
    back = form.get("back", "")
    if back:
        query["back"] = back
    return RedirectResponse(f"{page}?{urlencode(query)}", status_code=303)


async def retry(request: Request) -> Response:
    form = await _form(request)
    job_id = _job_id(request)
    if job_id is None:
        raise ApiError(404, "Job not found")
    state = web_state(request)
    base = request.scope.get("root_path", "")
    page = f"{base}/jobs/{job_id}"
    outcome = await state.jobs.retry(job_id, Source.MERCHANT)
    if outcome is None:
        if await store.get_job(state.database, job_id) is None:
            raise ApiError(404, "Job not found")
        return _back(form, page, notice="not-failed")
    logger.info("dashboard retried job %s: %s", job_id, outcome)
    notice = "retried-unqueued" if outcome is QueueOutcome.ERROR else "retried"
    return _back(form, page, notice=notice)


async def cancel(request: Request) -> Response:
    form = await _form(request)
    job_id = _job_id(request)
    if job_id is None:
        raise ApiError(404, "Job not found")
    state = web_state(request)
    database = state.database
    base = request.scope.get("root_path", "")
    page = f"{base}/jobs/{job_id}"
    if await state.jobs.cancel(job_id):
        logger.info("dashboard cancelled job %s", job_id)
        return _back(form, page, notice="cancelled")
    if await store.get_job(database, job_id) is None:
        raise ApiError(404, "Job not found")
    return _back(form, page, notice="not-cancellable")


async def retry_failed(request: Request) -> Response:
    form = await _form(request)
    job_type = form.get("type", "").strip()
    if not job_type or len(job_type) > MAX_FILTER_LENGTH or "\x00" in job_type:
        raise ApiError(400, "type is required")
    state = web_state(request)
    count = await state.jobs.retry_failed(job_type, Source.MERCHANT)
    logger.info("dashboard retried %d failed %s job(s)", count, job_type)
    base = request.scope.get("root_path", "")
    query = urlencode({"type": job_type, "notice": "bulk-retried", "n": count})
    return RedirectResponse(f"{base}/?{query}", status_code=303)


def _flow_filter(values: Mapping[str, str]) -> tuple[str, store.FlowFilter, dict[str, str]]:
    """The action and filter of a retry or cancel by filter, and the fields as given."""
    action = values.get("action", "")
    if action not in ("retry", "cancel"):
        raise ApiError(400, "action must be retry or cancel")
    fields = {name: values.get(name, "").strip() for name in FLOW_FIELDS}
    fields = {name: value for name, value in fields.items() if value}
    if any(len(v) > MAX_FILTER_LENGTH or "\x00" in v for v in fields.values()):
        raise ApiError(400, "filter too long or not text")
    status = fields.get("status")
    if status is not None and status not in STATUSES:
        raise ApiError(400, "status must be one of " + ", ".join(STATUSES))
    times: dict[str, datetime | None] = {}
    for name in FLOW_FIELDS[3:]:
        text = fields.get(name)
        try:
            moment = None if text is None else datetime.fromisoformat(text)
        except ValueError:
            raise ApiError(400, f"{name} must be an ISO 8601 time") from None
        times[name] = moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)
    shop = fields.get("shop")
    filters = store.FlowFilter(
        shop=shop.lower() if shop else None,
        job_type=fields.get("type"),
        status=JobStatus(status) if status else None,
        **times,
    )
    return action, filters, fields


async def bulk_page(request: Request) -> Response:
    action, filters, fields = _flow_filter(request.query_params)
    count = await store.count_matching(web_state(request).database, action, filters)
    return _render(
        request,
        "bulk.html",
        {"action": action, "count": count, "fields": fields, "described": filters.describe()},
    )


async def bulk_act(request: Request) -> Response:
    form = await _form(request)
    action, filters, _ = _flow_filter(form)
    jobs = web_state(request).jobs
    if action == "retry":
        count = await jobs.retry_matching(filters, Source.MERCHANT, by="dashboard")
    else:
        count = await jobs.cancel_matching(filters, by="dashboard")
    base = request.scope.get("root_path", "")
    notice = "filter-retried" if action == "retry" else "filter-cancelled"
    return RedirectResponse(f"{base}/?{urlencode({'notice': notice, 'n': count})}", 303)


async def _pause(request: Request, pause: bool) -> Response:
    form = await _form(request)
    shop = form.get("shop", "").strip()
    jobs = web_state(request).jobs
    base = request.scope.get("root_path", "")
    try:
        await (jobs.pause_shop(shop) if pause else jobs.resume_shop(shop))
    except ShopNotInstalled:
        return RedirectResponse(f"{base}/?notice=unknown-shop", status_code=303)
    logger.info("dashboard %s shop %s", "paused" if pause else "resumed", shop)
    notice = "shop-paused" if pause else "shop-resumed"
    return RedirectResponse(f"{base}/?notice={notice}", status_code=303)


async def pause_shop(request: Request) -> Response:
    return await _pause(request, True)


async def resume_shop(request: Request) -> Response:
    return await _pause(request, False)


def mount(settings: Settings, path: str = "/admin") -> Mount:
    """The dashboard as a Starlette Mount, guarded by basic auth."""
    return Mount(
        path,
        routes=[
            Route("/", index, methods=["GET"], name="dashboard_index"),
            Route("/charts", charts_page, methods=["GET"], name="dashboard_charts"),
            Route("/jobs/{job_id}", job_page, methods=["GET"], name="dashboard_job"),
            Route("/jobs/{job_id}/retry", retry, methods=["POST"]),
            Route("/jobs/{job_id}/cancel", cancel, methods=["POST"]),
            Route("/retry-failed", retry_failed, methods=["POST"]),
            Route("/bulk", bulk_page, methods=["GET"]),
            Route("/bulk", bulk_act, methods=["POST"]),
            Route("/shops/pause", pause_shop, methods=["POST"]),
            Route("/shops/resume", resume_shop, methods=["POST"]),
        ],
        middleware=[Middleware(DashboardGuard, settings=settings)],
    )
