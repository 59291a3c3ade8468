"""The web's Prometheus metrics, served at GET /metrics on a port of their own.

The public port (Shopify's app proxy, webhooks, OAuth) never serves them: request counts by
route and status, enqueue latencies and signature rejections tell an outsider how the app is
used and attacked. `serve` starts a small aiohttp server on WEB_METRICS_HOST:WEB_METRICS_PORT
(every IPv6 and IPv4 address, port 9091 by default, the port Fly's `[metrics]` section scrapes on
the private network; 0 turns it off) from the web's lifespan, and stops it with the app.

Several web processes on one host (`uvicorn --workers N`, or several uvicorns given one
PROMETHEUS_MULTIPROC_DIR) share their series through prometheus_client's multiprocess mode:
each writes its counters to files of its own in a shared directory, and the one process elected
by a lock on that directory serves their sum on the port (`multiprocess_directory`, `serve`).

Each app gets its own registry (`WebMetrics()` in `create_app`), so building several apps in
one process (the tests do) never registers a metric twice, and nothing is registered at import.
Route labels are route templates (`/admin/jobs/{job_id}`), never raw paths, so the number of
series stays fixed whatever URLs clients invent.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import multiprocessing
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from service.core.listen import EVERY_ADDRESS, listening_socket
from service.core.metrics import LATENCY_BUCKETS, process_registry
from service.intake import QueueOutcome, Source

logger = logging.getLogger("shopjobs.web")


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
        self._enqueue_series: dict[tuple[Source, QueueOutcome], Histogram] = {}
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
        # Every job the web queues comes here: the child is looked up once per series.
        child = self._enqueue_series.get((source, outcome))
        if child is None:
            child = self._enqueue_series[source, outcome] = self.enqueue_seconds.labels(
                source, outcome
            )
        child.observe(seconds)


class MetricsPortError(RuntimeError):
    """WEB_METRICS_PORT cannot be bound (another process holds it): the web does not start."""


# --- several web processes: one shared directory, one elected server -------------------------

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LOCK_FILE = "shopjobs-metrics-server.lock"
ELECTION_SECONDS = 2.0


def multiprocess_directory() -> Path | None:
    """Where this process's metrics are shared with its siblings', or None (a registry alone).

    PROMETHEUS_MULTIPROC_DIR when set (several uvicorns, or another process manager, on one
    host); else, in a child of `uvicorn --workers N` (a multiprocessing child), a directory of
    the supervisor's own in the temporary directory. Called before any metric is made: the
    choice sets prometheus_client's value class for the whole process.
    """
    chosen = os.environ.get(MULTIPROC_ENV)
    if not chosen:
        parent = multiprocessing.parent_process()
        if parent is None:
            return None
        chosen = os.path.join(tempfile.gettempdir(), f"shopjobs-web-metrics-{parent.pid}")
        os.environ[MULTIPROC_ENV] = chosen
    directory = Path(chosen)
    directory.mkdir(parents=True, exist_ok=True)
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return directory


class _Election:
    """First come: the process holding an exclusive lock on the shared directory's lock file
    serves /metrics for every process; the others try again every ELECTION_SECONDS, so when it
    dies (the lock goes with it) another takes over. No SO_REUSEPORT: the port has one owner."""

    def __init__(self, directory: Path) -> None:
        self.file = open(directory / LOCK_FILE, "a+b")  # held: the lock lives with it

    def won(self) -> bool:
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        self.file.close()  # releases the lock


def _scrape_handler(
    metrics: WebMetrics, directory: Path | None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def scrape(request: web.Request) -> web.Response:
        if directory is None:
            body = generate_latest(metrics.registry)
        else:  # every web process's series, summed (counters, histograms) from the shared files
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
            body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return scrape


async def _listen(
    metrics: WebMetrics, directory: Path | None, host: str, port: int
) -> web.AppRunner:
    async def not_found(request: web.Request) -> web.Response:
        return web.json_response({"error": "Not Found"}, status=404)

    app = web.Application()
    app.router.add_get("/metrics", _scrape_handler(metrics, directory))
    app.router.add_route("*", "/{tail:.*}", not_found)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, listening_socket(host, port)).start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise MetricsPortError(f"WEB_METRICS_PORT={port} cannot be used: {reason}") from exc
    return runner


@asynccontextmanager
async def serve(
    metrics: WebMetrics, port: int, host: str = EVERY_ADDRESS, directory: Path | None = None
) -> AsyncIterator[None]:
    """Serve GET /metrics on `host`:`port` while the context is open; any other path is 404.

    Alone (`directory` None), this process serves its own registry. With a shared directory
    (`multiprocess_directory()`), one process of those sharing it serves the sum of them all,
    and the others stand by (see `_Election`). A port held by anything else is
    MetricsPortError at start.
    """
    if directory is None:
        runner = await _listen(metrics, None, host, port)
        try:
            yield
        finally:
            await runner.cleanup()
        return
    election = _Election(directory)
    runners: list[web.AppRunner] = []
    if election.won():
        try:
            runners.append(await _listen(metrics, directory, host, port))
        except BaseException:
            election.close()
            raise
        logger.info("metrics of every web process on :%d/metrics", port)

    async def stand_by() -> None:
        while True:
            await asyncio.sleep(ELECTION_SECONDS)
            if election.won():
                try:
                    runners.append(await _listen(metrics, directory, host, port))
                    logger.info("metrics of every web process now on :%d/metrics", port)
                    return
                except MetricsPortError as exc:  # the old server's socket, not yet closed
                    logger.warning("%s; trying again", exc)
                    fcntl.flock(election.file.fileno(), fcntl.LOCK_UN)

    waiting = None if runners else asyncio.create_task(stand_by())
    try:
        yield
    finally:
        if waiting is not None:
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
        for runner in runners:
            await runner.cleanup()
        election.close()
