"""The web's Prometheus metrics, served at GET /metrics.

Each app gets its own registry (`WebMetrics()` in `create_app`), so building several apps in
one process (the tests do) never registers a metric twice, and nothing is registered at import.
Route labels are route templates (`/admin/jobs/{job_id}`), never raw paths, so the number of
series stays fixed whatever URLs clients invent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response

from service.core.metrics import LATENCY_BUCKETS, process_registry
from service.intake import QueueOutcome, Source


class WebMetrics:
    def __init__(self) -> None:
        self.registry = process_registry()
        self.requests = Counter(
            "shopjobs_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "shopjobs_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.enqueue_seconds = Histogram(
            "shopjobs_enqueue_duration_seconds",
            "Time to put a job on the Redis queue, by source (proxy, webhook, admin) and "
            "outcome (queued, duplicate: already queued, error: Redis down or slow).",
            ["source", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.signature_rejections = Counter(
            "shopjobs_signature_rejections",
            "Requests refused for a bad or stale Shopify signature, by kind "
            "(app_proxy, webhook, oauth).",
            ["kind"],
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        # Every request comes here: the labelled children are looked up once per series (the
        # set is small: templates, not paths), not through labels() every time.
        key = (method, route, status)
        children = self._request_series.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.request_seconds.labels(method, route),
            )
            self._request_series[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def rejected_signature(self, kind: str) -> None:
        self.signature_rejections.labels(kind).inc()

    def observe_enqueue(self, source: Source, outcome: QueueOutcome, seconds: float) -> None:
        self.enqueue_seconds.labels(source, outcome).observe(seconds)


def endpoint(metrics: WebMetrics) -> Callable[[Request], Awaitable[Response]]:
    """GET /metrics of one app's registry (built with the app, before its lifespan)."""

    async def scrape(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return scrape
