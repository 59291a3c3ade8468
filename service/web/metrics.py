"""The web's Prometheus metrics, served at GET /metrics on a port of their own.

The public port (Shopify's app proxy, webhooks, OAuth) never serves them: request counts by
route and status, enqueue latencies and signature rejections tell an outsider how the app is
used and attacked. `serve` starts a small aiohttp server on WEB_METRICS_PORT (9091 by default,
the port Fly's `[metrics]` section scrapes on the private network; 0 turns it off) from the
web's lifespan, and stops it with the app.

Each app gets its own registry (`WebMetrics()` in `create_app`), so building several apps in
one process (the tests do) never registers a metric twice, and nothing is registered at import.
Route labels are route templates (`/admin/jobs/{job_id}`), never raw paths, so the number of
series stays fixed whatever URLs clients invent.
"""

from __future__ import annotations

import os

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Histogram,
    generate_latest,
)

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


class MetricsPortError(RuntimeError):
    """WEB_METRICS_PORT cannot be bound (another process holds it): the web does not start."""


async def serve(metrics: WebMetrics, port: int) -> web.AppRunner:
    """Serve GET /metrics of one app's registry on `port`, every interface (IPv4 and IPv6:
    Fly scrapes the Machine's private IPv6 address); any other path is 404."""

    async def scrape(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def not_found(request: web.Request) -> web.Response:
        return web.json_response({"error": "Not Found"}, status=404)

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_route("*", "/{tail:.*}", not_found)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, None, port).start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise MetricsPortError(f"WEB_METRICS_PORT={port} cannot be used: {reason}") from exc
    return runner
