"""Prometheus metrics: the web's (on WEB_METRICS_PORT, never the public port) and the
worker's (on its health port), scraped after real jobs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from arq.connections import ArqRedis
from databases import Database
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from jobs.worker.startup import build_worker_settings
from service import queue, store
from service.app import create_app
from service.core.settings import Settings
from tests.support.jobs import add_job, make_shop, wait_all, wait_for_status
from tests.support.net import free_port
from tests.support.processes import start_web, start_worker, web_command
from tests.support.proxy import proxy_url
from tests.support.queue_entries import queued_score


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and labels.items() <= item.labels.items():
                total += item.value
    return total


def has_sample(text: str, name: str) -> bool:
    return any(
        item.name == name
        for family in text_string_to_metric_families(text)
        for item in family.samples
    )


# -- the web, in-process ----------------------------------------------------------------------


@pytest.fixture
async def metered(
    settings: Settings, database: Database, redis: ArqRedis
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The app in-process with its metrics server on a free port: (client, metrics URL)."""
    port = free_port()
    app = create_app(settings.model_copy(update={"web_metrics_port": port}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, f"http://127.0.0.1:{port}/metrics"


async def test_requests_are_counted_by_route_template(
    metered: tuple[httpx.AsyncClient, str], database: Database
) -> None:
    app_client, metrics_url = metered
    shop = await make_shop(database)
    job_id = uuid.uuid4()
    await app_client.get("/healthz")
    await app_client.get("/healthz")
    await app_client.delete("/healthz")
    await app_client.get(f"/nowhere/{job_id}")
    await app_client.get(f"/admin/jobs/{job_id}")  # the dashboard is off: its mount answers
    refused = await app_client.get(
        proxy_url(
            "http://testserver", f"/proxy/status?jobId={job_id}", shop=shop.domain, secret="wrong"
        )
    )
    assert refused.status_code == 401
    unknown = await app_client.get(
        proxy_url("http://testserver", f"/proxy/status?jobId={job_id}", shop=shop.domain)
    )
    assert unknown.status_code == 404
    bad_hmac = await app_client.post(
        "/webhooks", content=b"{}", headers={"X-Shopify-Hmac-Sha256": "bad"}
    )
    assert bad_hmac.status_code == 401

    public = await app_client.get("/metrics")  # not on the public port: an unknown path
    assert public.status_code == 404 and public.json() == {"error": "Not Found"}

    async with httpx.AsyncClient() as client:
        scrape = await client.get(metrics_url)
        elsewhere = await client.get(metrics_url.replace("/metrics", "/healthz"))
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    assert elsewhere.status_code == 404
    text = scrape.text
    requests = "shopjobs_http_requests_total"
    assert sample(text, requests, method="GET", route="/healthz", status="200") == 2
    assert sample(text, requests, method="DELETE", route="/healthz", status="405") == 1
    assert sample(text, requests, route="unmatched", status="404") == 2  # /nowhere, /metrics
    assert sample(text, requests, route="/admin/{path}", status="404") == 1
    assert sample(text, requests, route="/proxy/status", status="401") == 1
    assert sample(text, requests, route="/proxy/status", status="404") == 1
    assert sample(text, requests, route="/webhooks", status="401") == 1
    assert str(job_id) not in text  # templates, never raw paths
    rejections = "shopjobs_signature_rejections_total"
    assert sample(text, rejections, kind="app_proxy") == 1
    assert sample(text, rejections, kind="webhook") == 1
    assert sample(text, "shopjobs_http_request_duration_seconds_count", route="/healthz") == 3
    assert has_sample(text, "process_resident_memory_bytes")


async def test_each_app_has_its_own_registry(
    settings: Settings, database: Database, redis: ArqRedis
) -> None:
    metered = settings.model_copy(update={"web_metrics_port": free_port()})
    first, second = create_app(metered), create_app(metered)
    async with first.router.lifespan_context(first):
        transport = httpx.ASGITransport(app=first)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await client.post("/webhooks", content=b"{}")  # unsigned: one rejection, in first
        text = await _scrape(metered.web_metrics_port)
    assert sample(text, "shopjobs_signature_rejections_total") == 1
    text = await _scrape_app(second, metered.web_metrics_port)
    assert sample(text, "shopjobs_signature_rejections_total") == 0


async def _scrape(port: int) -> str:
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert answer.status_code == 200
    return answer.text


async def _scrape_app(app: Starlette, port: int) -> str:
    """A scrape of `app`'s metrics port while its lifespan runs (and the port is closed after)."""
    async with app.router.lifespan_context(app):
        return await _scrape(port)


async def test_request_ids_are_echoed_or_made(app_client: httpx.AsyncClient) -> None:
    given = await app_client.get("/healthz", headers={"X-Request-ID": "edge-123.a:b"})
    assert given.headers["x-request-id"] == "edge-123.a:b"
    made = await app_client.get("/healthz")
    other = await app_client.get("/healthz")
    assert len(made.headers["x-request-id"]) == 32
    assert made.headers["x-request-id"] != other.headers["x-request-id"]
    odd = await app_client.get("/healthz", headers={"X-Request-ID": "bad id\twith <spaces>"})
    assert odd.headers["x-request-id"] != "bad id\twith <spaces>"
    assert len(odd.headers["x-request-id"]) == 32
    missing = await app_client.get("/nowhere")
    assert missing.status_code == 404 and len(missing.headers["x-request-id"]) == 32


# -- both processes, for real ------------------------------------------------------------------


async def test_both_endpoints_count_real_jobs(
    env: dict[str, str], settings: Settings, spawn, database: Database, redis: ArqRedis
) -> None:
    shops = [await make_shop(database, f"metrics-{n}.myshopify.com") for n in range(4)]
    health_port = env["WORKER_HEALTH_PORT"]
    start_worker(
        spawn,
        env,
        shop_concurrency_limit=1,
        rate_limit_max=3,
        rate_limit_window_seconds=1,
        job_max_attempts=2,
        job_backoff_seconds=0.1,
    )
    metrics_port = free_port()
    _, base = start_web(spawn, {**env, "WEB_METRICS_PORT": str(metrics_port)})

    async with httpx.AsyncClient(timeout=10) as client:

        async def create(shop: store.Shop, job_input: dict[str, object]) -> uuid.UUID:
            answer = await client.post(
                proxy_url(base, "/proxy/process", shop=shop.domain),
                json={"type": "echo", "input": job_input},
            )
            assert answer.status_code == 200, answer.text
            return uuid.UUID(answer.json()["jobId"])

        # A burst over the rate limit (3 starts a second), one job per shop.
        quick = [await create(shop, {"message": "hi"}) for shop in shops]
        # Two slow jobs of one shop, with a cap of one job per shop.
        slow = [await create(shops[0], {"message": "slow", "sleep_ms": 1500}) for _ in range(2)]
        failing = await create(shops[1], {"message": "no", "fail_times": 5})
        forged = await client.post(
            proxy_url(base, "/proxy/process", shop=shops[0].domain, secret="not-the-secret"),
            json={"type": "echo", "input": {"message": "x"}},
        )
        assert forged.status_code == 401

    # A job left `processing` by a worker that died: its lease expired a minute ago.
    orphan = await add_job(database, redis, shops[2], {"message": "orphan"}, enqueue=False)
    await database.execute(
        """UPDATE jobs SET status = 'processing', attempts = 1, lease_owner = 'dead:1:x',
                  lease_expires_at = now() - interval '1 minute', started_at = now()
            WHERE id = :id""",
        {"id": orphan},
    )
    assert await queue.enqueue(redis, "echo", str(orphan), shop=shops[2].domain)
    # A stray queue entry of a job that is already completed.
    done = await add_job(database, redis, shops[3], {"message": "done"}, enqueue=False)
    await database.execute("UPDATE jobs SET status = 'completed' WHERE id = :id", {"id": done})
    assert await queue.enqueue(redis, "echo", str(done), shop=shops[3].domain)
    # Three jobs due in a minute: they stay in the queue.
    for _ in range(3):
        later = await add_job(database, redis, shops[3], {"message": "later"}, enqueue=False)
        assert await queue.enqueue(
            redis, "echo", str(later), shop=shops[3].domain, defer_seconds=60
        )

    await wait_all(database, [*quick, *slow, orphan], "completed", timeout=60)
    await wait_for_status(database, failing, {"failed"}, timeout=60)
    deadline = time.monotonic() + 20
    while await queued_score(redis, str(done)) is not None:
        assert time.monotonic() < deadline, "the stray entry was never taken"
        await asyncio.sleep(0.05)

    async with httpx.AsyncClient(timeout=10) as client:
        worker = (await client.get(f"http://127.0.0.1:{health_port}/metrics")).text
        web = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        public = await client.get(f"{base}/metrics")
    assert public.status_code == 404 and public.json() == {"error": "Not Found"}
    assert "shopjobs_" not in public.text

    echo = {"type": "echo"}
    completed = len(quick) + len(slow) + 1  # + the orphan
    assert sample(worker, "shopjobs_jobs_completed_total", **echo) == completed
    assert sample(worker, "shopjobs_jobs_started_total", **echo) == completed + 2
    assert sample(worker, "shopjobs_jobs_retried_total", **echo) == 1
    assert sample(worker, "shopjobs_jobs_failed_total", **echo) == 1
    assert sample(worker, "shopjobs_lease_recoveries_total", **echo) == 1
    assert sample(worker, "shopjobs_jobs_skipped_total", **echo) == 1
    deferrals = "shopjobs_job_deferrals_total"
    assert sample(worker, deferrals, reason="rate_limit") >= 1
    # Fair scheduling (the default) leaves a shop at its cap out of the rotation: its jobs wait
    # untaken, none is deferred (nothing is pushed back for its shop).
    assert sample(worker, deferrals, reason="shop_cap") == 0
    runs = "shopjobs_job_run_seconds_count"
    assert sample(worker, runs, type="echo", outcome="completed") == completed
    assert sample(worker, runs, type="echo", outcome="retried") == 1
    assert sample(worker, runs, type="echo", outcome="failed") == 1
    slow_runs = sample(worker, "shopjobs_job_run_seconds_bucket", outcome="completed", le="1.0")
    assert slow_runs == completed - 2  # the two slow jobs took over a second
    # The three deferred jobs, and at most one tick of each of arq's cron functions
    # (reconciler, retention, schedules: all three are due at second 30).
    crons = len(build_worker_settings(settings).cron_jobs)
    assert 3 <= sample(worker, "shopjobs_queue_depth") <= 3 + crons
    assert sample(worker, "shopjobs_queue_due") <= crons  # cron ticks may just be due
    assert sample(worker, "shopjobs_jobs_running") == 0
    assert has_sample(worker, "process_cpu_seconds_total")

    requests = "shopjobs_http_requests_total"
    created = len(quick) + len(slow) + 1
    assert sample(web, requests, method="POST", route="/proxy/process", status="200") == created
    assert sample(web, requests, method="POST", route="/proxy/process", status="401") == 1
    enqueues = "shopjobs_enqueue_duration_seconds_count"
    assert sample(web, enqueues, source="proxy", outcome="queued") == created
    assert sample(web, "shopjobs_signature_rejections_total", kind="app_proxy") == 1


async def test_a_taken_metrics_port_stops_the_web_in_one_line(
    env: dict[str, str], spawn, database: Database
) -> None:
    metrics_port = free_port()
    _, base = start_web(spawn, {**env, "WEB_METRICS_PORT": str(metrics_port)})
    second = spawn(
        web_command(free_port()), {**env, "WEB_METRICS_PORT": str(metrics_port)}, "second"
    )
    assert await asyncio.to_thread(second.wait, 30) != 0
    assert f"shopjobs: WEB_METRICS_PORT={metrics_port} cannot be used" in second.output
    assert "Traceback" not in second.output
    async with httpx.AsyncClient() as client:  # the first web keeps serving both ports
        assert (await client.get(f"{base}/healthz")).status_code == 200
        assert (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).status_code == 200
