"""The web process: `uvicorn service.app:app`.

`create_app(settings)` builds the Starlette app from explicit settings (tests call it
directly); the module attribute `app` is built on first access from the environment, so a
missing setting stops uvicorn with one line naming it. Besides the Shopify-facing routes it
serves GET /healthz (liveness: the process and Postgres), the job dashboard under /admin, and
the embedded app (the merchant's page /app and the merchant API under /api). Its Prometheus
metrics are on a port of their own (WEB_METRICS_PORT, service/web/metrics.py, shared by every
process of `uvicorn --workers N`): GET /metrics here is 404 like any unknown path.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs.registry import app_loggers, app_routes, job_types, webhook_jobs
from service import queue
from service.core import tracing
from service.core.db import DatabaseTlsError, create_database
from service.core.logs import configure_logging
from service.core.settings import Settings, load_settings
from service.intake import Intake
from service.jobs_client import JobsClient
from service.web import (
    bulk_actions,
    dashboard,
    embedded,
    flow,
    install,
    merchant_api,
    metrics,
    proxy,
    webhooks,
)
from service.web.errors import EXCEPTION_HANDLERS, RETRY_AFTER_SECONDS
from service.web.login_attempts import LoginAttempts
from service.web.middleware import RequestTelemetry
from service.web.proxy_quota import ProxyQuota
from service.web.shop_cache import ShopCache
from service.web.state import WebState, web_state
from service.web.webhook_body import BodyBudget

HEALTH_TIMEOUT_SECONDS = 2.0
logger = logging.getLogger("shopjobs.web")


async def _answers(name: str, check: Callable[[], Awaitable[object]]) -> bool:
    try:
        await asyncio.wait_for(check(), HEALTH_TIMEOUT_SECONDS)
    except Exception as exc:  # a dependency is down: report it, never crash
        logger.warning("healthz: %s failing: %s: %s", name, exc.__class__.__name__, exc)
        return False
    return True


async def healthz(request: Request) -> JSONResponse:
    """Liveness, what the platform routes by: 200 while this process and Postgres answer, 503
    (with Retry-After) when Postgres does not. Redis down is 200 `{"status": "degraded",
    "degraded": ["redis"]}`: status reads, the dashboard and webhooks' checks still work, and
    what needs Redis answers its own retryable 503; taking the Machine out of routing would cut
    those off too. The exception goes to the log only: this port is public, and a driver's
    error text can carry host names and addresses."""
    state = web_state(request)
    postgres, redis = await asyncio.gather(
        _answers("postgres", lambda: state.database.fetch_val("SELECT 1")),
        _answers("redis", lambda: state.redis.ping()),
    )
    if not postgres:
        return JSONResponse(
            {"status": "error", "failing": "postgres"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if not redis:
        return JSONResponse({"status": "degraded", "degraded": ["redis"]})
    return JSONResponse({"status": "ok"})


class StartupFailureInOneLine:
    """Report a refused start (a setting that cannot work) as its one line, not a traceback.

    Starlette hands uvicorn the whole formatted traceback when the lifespan fails; for a
    DatabaseTlsError or a MetricsPortError the cause is the message itself, so only the
    message is passed on.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_one_line(message: Message) -> None:
            failure = sys.exc_info()[1]  # Starlette sends this from inside its except block
            if message["type"] == "lifespan.startup.failed" and isinstance(
                failure, (DatabaseTlsError, metrics.MetricsPortError)
            ):
                message = {**message, "message": f"shopjobs: {failure}"}
            await send(message)

        await self.app(scope, receive, send_one_line)


def create_app(settings: Settings) -> Starlette:
    configure_logging(settings.log_format, also=app_loggers(settings))
    # Before any metric exists: with several web processes, their series are shared.
    shared_metrics = metrics.multiprocess_directory() if settings.web_metrics_port else None
    tracing.configure("shopjobs-web")  # off unless OTEL_* asks (docs/operations.md)
    web_metrics = metrics.WebMetrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Whatever was opened is closed, in reverse, whether start-up finished or not.
        async with AsyncExitStack() as closing:
            database = create_database(settings.database_url)
            await database.connect()
            closing.push_async_callback(database.disconnect)
            closing.callback(tracing.flush)
            if settings.web_metrics_port:
                await closing.enter_async_context(
                    metrics.serve(
                        web_metrics,
                        settings.web_metrics_port,
                        settings.web_metrics_host,
                        shared_metrics,
                    )
                )
                logger.info("metrics on :%d/metrics", settings.web_metrics_port)
            redis = queue.connect(settings.redis_url)
            closing.push_async_callback(redis.aclose)
            http = httpx.AsyncClient(timeout=settings.shopify_admin_timeout_seconds)
            closing.push_async_callback(http.aclose)
            intake = Intake(database, redis, web_metrics.observe_enqueue)
            types = job_types(settings)
            app.state.web = WebState(
                settings=settings,
                database=database,
                redis=redis,
                intake=intake,
                jobs=JobsClient(database, redis, types, intake=intake),
                shops=ShopCache(database, settings.shop_cache_seconds),
                metrics=web_metrics,
                job_types=types,
                webhook_jobs=webhook_jobs(settings),
                http=http,
                webhook_bodies=BodyBudget(settings.webhook_body_budget_bytes),
                proxy_quota=ProxyQuota(
                    redis,
                    settings.proxy_limit_shop_per_minute,
                    settings.proxy_limit_customer_per_minute,
                ),
                login_attempts=LoginAttempts(
                    redis,
                    settings.dashboard_login_max_failures,
                    settings.dashboard_login_window_seconds,
                ),
            )
            yield

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        *proxy.routes,
        *install.routes,
        *webhooks.routes,
        *merchant_api.routes,
        *bulk_actions.routes,
        *flow.routes,
        *embedded.routes,
        dashboard.mount(settings),
        *app_routes(settings),  # the app's own (SHOPJOBS_APP, docs/your-app.md)
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[
            Middleware(StartupFailureInOneLine),
            Middleware(RequestTelemetry, metrics=web_metrics),
            Middleware(tracing.TracedRequests),
        ],
    )
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return create_app(load_settings())
    raise AttributeError(f"module 'service.app' has no attribute {name!r}")
