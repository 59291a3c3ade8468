"""What the web process builds at start-up (the lifespan) and every request reads, typed."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from arq.connections import ArqRedis
from databases import Database
from starlette.requests import Request

from jobs.types import JobType, WebhookJob
from service.core.settings import Settings
from service.intake import Intake
from service.jobs_client import JobsClient
from service.web.login_attempts import LoginAttempts
from service.web.metrics import WebMetrics
from service.web.proxy_quota import ProxyQuota
from service.web.shop_cache import ShopCache
from service.web.webhook_body import BodyBudget


@dataclass(frozen=True)
class WebState:
    settings: Settings
    database: Database
    redis: ArqRedis
    intake: Intake
    # The app's own routes and webhook handlers start jobs with
    # `await web_state(request).jobs.enqueue(...)` (service/jobs_client.py, docs/starting-jobs.md).
    jobs: JobsClient
    shops: ShopCache
    metrics: WebMetrics
    job_types: dict[str, JobType]
    webhook_jobs: dict[str, tuple[WebhookJob, ...]]  # several jobs per topic (docs/your-app.md)
    # For the OAuth code exchange, and the one Admin API call the web makes: confirming an
    # app/uninstalled (service/shopify/uninstalls.py).
    http: httpx.AsyncClient
    # Bodies of /webhooks in flight, bounded (service/web/webhook_body.py).
    webhook_bodies: BodyBudget
    # The storefront's per-shop and per-customer quotas (service/web/proxy_quota.py).
    proxy_quota: ProxyQuota
    # Failed dashboard logins per client (service/web/login_attempts.py).
    login_attempts: LoginAttempts


def web_state(request: Request) -> WebState:
    """The state `create_app`'s lifespan built, for this request's app."""
    state: WebState = request.app.state.web
    return state
