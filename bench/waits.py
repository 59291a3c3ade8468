"""Waiting holds no slot (issue 24, docs/waits.md): short jobs beside reports waiting on Shopify.

Real processes: the Shopify emulator (its bulk operations run `waits_run_seconds`, and it
sends `bulk_operations/finish` to the app when one ends), the web (which takes that webhook
and wakes the job) and one worker process at concurrency `waits_concurrency`. Other shops send
`echo` jobs of `waits_sleep_ms` at `waits_rate` jobs/s, round-robin, in two windows:

- `idle`: the traffic alone, `waits_idle_seconds`: the short jobs' wait on an idle system;
- `waits`: the same traffic while `waits_reports` shops' `inventory_report` jobs each wait on
  a bulk operation of their own: from the moment all of them have suspended to the moment the
  first operation can end (its creation + the run time).

Measured: the short jobs' p50/p99 wait (their rows' `started_at - created_at`, Postgres'
clock) in each window; the worker slots held by the waiting reports, sampled every
SAMPLE_SECONDS through the waits window (rows of `inventory_report` that are `processing` with
a lease: a suspended job has none), beside the worker's own `shopjobs_jobs_running` gauge
(/metrics on its health port; the short jobs are in it); and each report's completion (its
row's `finished_at`) against its operation's end (the emulator's `completedAt`).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import orjson

from bench.fairness import QueueFairness, add_jobs, percentile, until
from bench.stack import API_KEY, API_SECRET, Proc, Stack, wait_for_http, web_command, worker_command
from jobs.builtin.echo import EchoInput
from service import queue
from tools.services import free_port

REPORT_SHOP = "waits-report-{}.myshopify.com"
TRAFFIC_SHOP = "waits-traffic-{}.myshopify.com"
CATALOGUE = ("--products", "20", "--max-variants", "5")  # each report reads it: small
WARMUP_SECONDS = 1.0
SAMPLE_SECONDS = 0.05
SUSPEND_TIMEOUT = 60.0
DRAIN_SECONDS = 10.0
END_MARGIN_SECONDS = 0.2  # the waits window stops this long before the first operation ends


def token(domain: str) -> str:
    """A shop's own token: the emulator tells shops apart by the token a request carries."""
    return f"shpat_{domain.split('.')[0]}"


async def add_shops(stack: Stack, pattern: str, n: int) -> list[tuple[int, str]]:
    """(id, domain) of `n` shops named by `pattern`, created once."""
    assert stack.pg is not None
    domains = [pattern.format(i) for i in range(1, n + 1)]
    await stack.pg.execute(
        """INSERT INTO shops (domain, access_token, scopes)
           SELECT d, t, 'read_products' FROM unnest($1::text[], $2::text[]) AS s(d, t)
           ON CONFLICT (domain) DO NOTHING""",
        domains,
        [token(domain) for domain in domains],
    )
    rows = await stack.pg.fetch(
        "SELECT id, domain FROM shops WHERE domain = ANY($1::text[]) ORDER BY id", domains
    )
    return [(row["id"], row["domain"]) for row in rows]


def short_input(sleep_ms: int) -> dict[str, Any]:
    """The row input of a short job, as the web stores it (the model's dump, defaults too)."""
    return EchoInput(message="x", sleep_ms=sleep_ms).model_dump(mode="json")


async def traffic(
    stack: Stack, shops: list[tuple[int, str]], rate: float, seconds: float, sleep_ms: int
) -> list[uuid.UUID]:
    """One short job every 1/rate s for `seconds`, the shops in turn; their ids."""
    ids: list[uuid.UUID] = []
    turn = itertools.cycle(shops)
    job_input = short_input(sleep_ms)
    began = time.perf_counter()
    for tick in itertools.count():
        due = began + tick / rate
        if due - began >= seconds:
            return ids
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        ids += await add_jobs(stack, [next(turn)], job_input, QueueFairness.SHOP)
    return ids


async def started_waits(stack: Stack, ids: list[uuid.UUID]) -> list[float]:
    """The wait in ms (started_at - created_at) of each of these jobs that has started."""
    assert stack.pg is not None
    rows = await stack.pg.fetch(
        """SELECT extract(epoch FROM started_at - created_at) * 1000 AS ms
             FROM jobs WHERE id = ANY($1::uuid[]) AND started_at IS NOT NULL""",
        ids,
    )
    return [float(row["ms"]) for row in rows]


async def short_jobs(
    stack: Stack, procs: list[Proc], shops: list[tuple[int, str]], plan: Any, seconds: float
) -> dict[str, Any]:
    """One window of short jobs, until each has started (or DRAIN_SECONDS): their waits."""
    ids = await traffic(stack, shops, plan.waits_rate, seconds, plan.waits_sleep_ms)

    async def all_started() -> bool:
        return len(await started_waits(stack, ids)) == len(ids)

    await until(all_started, procs, DRAIN_SECONDS, "")
    waited = await started_waits(stack, ids)
    return {
        "window_seconds": round(seconds, 2),
        "short_jobs": len(ids),
        "short_jobs_started": len(waited),
        "short_wait_p50_ms": percentile(waited, 50),
        "short_wait_p99_ms": percentile(waited, 99),
        "short_wait_max_ms": round(max(waited), 1) if waited else None,
    }


async def reports_in(pg: asyncpg.Connection, ids: list[uuid.UUID]) -> dict[str, int]:
    """How many of the reports are suspended (no lease, a wait), held (a lease), completed."""
    row = await pg.fetchrow(
        """SELECT count(*) FILTER (WHERE status = 'processing' AND lease_owner IS NULL
                                     AND wait_for IS NOT NULL) AS waiting,
                  count(*) FILTER (WHERE status = 'processing'
                                     AND lease_owner IS NOT NULL) AS holding,
                  count(*) FILTER (WHERE status = 'completed') AS completed,
                  count(*) FILTER (WHERE status = 'failed') AS failed
             FROM jobs WHERE id = ANY($1::uuid[])""",
        ids,
    )
    assert row is not None
    return dict(row)


async def worker_running(client: httpx.AsyncClient, url: str) -> float | None:
    """The worker's `shopjobs_jobs_running` gauge (its /metrics), or None if unreadable."""
    try:
        text = (await client.get(url)).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("shopjobs_jobs_running "):
            return float(line.split()[1])
    return None


class Sampler:
    """Every SAMPLE_SECONDS until stopped: the reports' slots held and waits, the worker's
    running gauge."""

    def __init__(self, stack: Stack, reports: list[uuid.UUID], metrics_url: str) -> None:
        self.stack, self.reports, self.metrics_url = stack, reports, metrics_url
        self.held: list[int] = []
        self.waiting: list[int] = []
        self.running: list[float] = []
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        # Its own connection: the traffic uses the harness's meanwhile.
        pg = await asyncpg.connect(self.stack.database_url)
        try:
            await self._sample(pg)
        finally:
            await pg.close()

    async def _sample(self, pg: asyncpg.Connection) -> None:
        async with httpx.AsyncClient(timeout=2.0) as client:
            while not self.stopped.is_set():
                counts = await reports_in(pg, self.reports)
                self.held.append(counts["holding"])
                self.waiting.append(counts["waiting"])
                gauge = await worker_running(client, self.metrics_url)
                if gauge is not None:
                    self.running.append(gauge)
                try:
                    await asyncio.wait_for(self.stopped.wait(), SAMPLE_SECONDS)
                except TimeoutError:
                    pass


async def add_reports(stack: Stack, shops: list[tuple[int, str]]) -> list[uuid.UUID]:
    """One `inventory_report` job per shop (rows, then queue entries), as the app starts them."""
    assert stack.pg is not None and stack.redis is not None
    ids = [uuid.uuid4() for _ in shops]
    await stack.pg.execute(
        """INSERT INTO jobs (id, shop_id, type, input)
           SELECT id, shop, 'inventory_report', '{}'::jsonb
             FROM unnest($1::uuid[], $2::bigint[]) AS t(id, shop)""",
        ids,
        [shop_id for shop_id, _ in shops],
    )
    await queue.enqueue_many(
        stack.redis,
        [
            ("inventory_report", str(job_id), domain)
            for job_id, (_, domain) in zip(ids, shops, strict=True)
        ],
    )
    return ids


async def must(
    done: Callable[[], Awaitable[bool]],
    stack: Stack,
    procs: list[Proc],
    reports: list[uuid.UUID],
    timeout: float,
    what: str,
) -> None:
    """Poll `done` until true; past `timeout`, fail with the reports' states and the logs."""
    if not await until(done, procs, timeout, ""):
        assert stack.pg is not None
        raise RuntimeError(
            f"waits bench: the reports {what} within {timeout:g}s: "
            f"{await reports_in(stack.pg, reports)}"
            + "".join(f"\n--- {p.log_path.name}\n{p.output()[-3000:]}" for p in procs)
        )


async def operations(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        return list((await client.get(f"{url}/_emulator/bulk")).json())


def start_processes(
    stack: Stack, plan: Any, shops: list[tuple[int, str]]
) -> tuple[list[Proc], list[str]]:
    """The emulator, the web and the worker, and their URLs (the worker's: its health port)."""
    shopify_port, web_port, health_port = free_port(), free_port(), free_port()
    shopify_url, web_url = f"http://127.0.0.1:{shopify_port}", f"http://127.0.0.1:{web_port}"
    urls = {"shopify_app_url": web_url, "shopify_admin_url": shopify_url}
    env = stack.env(**urls)
    shop_args = [arg for _, domain in shops for arg in ("--shop", f"{domain}={token(domain)}")]
    emulator = stack.spawn(
        [
            sys.executable, "-m", "shopify_emulator", "--port", str(shopify_port),
            "--app-url", web_url, "--api-key", API_KEY, "--api-secret", API_SECRET,
            *shop_args, *CATALOGUE, "--bulk-run-seconds", str(plan.waits_run_seconds),
            "--webhook-topic", "bulk_operations/finish",
        ],
        env,
        "waits-shopify",
    )  # fmt: skip
    web = stack.spawn(web_command(web_port), env, "waits-web")
    worker = stack.spawn(
        worker_command(),
        stack.env(
            **urls, worker_concurrency=plan.waits_concurrency, worker_health_port=health_port
        ),
        "waits-worker",
    )
    return [emulator, web, worker], [shopify_url, web_url, f"http://127.0.0.1:{health_port}"]


async def waits(stack: Stack, plan: Any) -> dict[str, Any]:
    """Both windows, then the figures; see the module's docstring."""
    assert stack.pg is not None
    await stack.reset()
    report_shops = await add_shops(stack, REPORT_SHOP, plan.waits_reports)
    traffic_shops = await add_shops(stack, TRAFFIC_SHOP, plan.waits_traffic_shops)
    procs, (shopify_url, web_url, health_url) = start_processes(stack, plan, report_shops)
    emulator, web, worker = procs
    try:
        await wait_for_http(f"{shopify_url}/_emulator/stats", emulator, "emulator", timeout=120)
        await wait_for_http(f"{web_url}/healthz", web, "web")
        await wait_for_http(f"{health_url}/healthz", worker, "worker")
        # Start-up (the first reconcile, scripts loading) is not what is measured.
        await traffic(stack, traffic_shops, plan.waits_rate, WARMUP_SECONDS, plan.waits_sleep_ms)
        idle = await short_jobs(stack, procs, traffic_shops, plan, plan.waits_idle_seconds)

        reports = await add_reports(stack, report_shops)
        queued = time.monotonic()

        async def all_suspended() -> bool:
            return (await reports_in(stack.pg, reports))["waiting"] == len(reports)

        await must(all_suspended, stack, procs, reports, SUSPEND_TIMEOUT, "did not all suspend")
        suspended_after = time.monotonic() - queued
        ops = await operations(shopify_url)
        first_end = min(datetime.fromisoformat(op["createdAt"]) for op in ops).timestamp() + (
            plan.waits_run_seconds
        )
        window = max(0.0, first_end - time.time() - END_MARGIN_SECONDS)
        sampler = Sampler(stack, reports, f"{health_url}/metrics")
        sampling = asyncio.create_task(sampler.run())
        try:
            during = await short_jobs(stack, procs, traffic_shops, plan, window)
        finally:
            sampler.stopped.set()
            await sampling

        async def all_done() -> bool:
            counts = await reports_in(stack.pg, reports)
            return counts["completed"] + counts["failed"] == len(reports)

        await must(all_done, stack, procs, reports, plan.waits_run_seconds + 30, "did not end")
        ops = await operations(shopify_url)
        rows = await stack.pg.fetch(
            """SELECT status, result, error_message, finished_at
                 FROM jobs WHERE id = ANY($1::uuid[])""",
            reports,
        )
    finally:
        for proc in reversed(procs):
            proc.stop()
    failed = [row["error_message"] for row in rows if row["status"] != "completed"]
    if failed:
        raise RuntimeError(f"waits bench: reports failed: {failed}")
    ended = {op["id"]: datetime.fromisoformat(op["completedAt"]) for op in ops}
    lags = sorted(
        (row["finished_at"] - ended[orjson.loads(row["result"])["bulkOperationId"]]).total_seconds()
        for row in rows
    )
    idle_p99, waits_p99 = idle["short_wait_p99_ms"], during["short_wait_p99_ms"]
    limit = None if idle_p99 is None else round(2 * idle_p99 + 50, 1)
    return {
        "reports": len(reports),
        "operations": len(ops),
        "operations_completed": sum(op["status"] == "COMPLETED" for op in ops),
        "run_seconds": plan.waits_run_seconds,
        "concurrency": plan.waits_concurrency,
        "rate_per_second": plan.waits_rate,
        "sleep_ms": plan.waits_sleep_ms,
        "traffic_shops": len(traffic_shops),
        "suspended_after_seconds": round(suspended_after, 2),
        "idle": idle,
        "waits": during,
        "p99_limit_ms": limit,
        "p99_vs_limit": None if limit is None or waits_p99 is None else round(waits_p99 / limit, 3),
        "samples": len(sampler.held),
        "slots_held_max": max(sampler.held, default=None),
        "slots_held_mean": (
            round(sum(sampler.held) / len(sampler.held), 3) if sampler.held else None
        ),
        "reports_waiting_min": min(sampler.waiting, default=None),
        "worker_running_max": max(sampler.running, default=None),
        "completion_lags_s": [round(lag, 3) for lag in lags],
        "completion_lag_max_s": round(max(lags), 3) if lags else None,
    }
