"""The `inventory_report` scenario: a whole catalogue through one Shopify bulk query.

A real worker process runs one `inventory_report` job against the emulator (as a process,
its catalogue of `products` with up to `max_variants` variants each). Measured:

- the worker's memory growth at peak: VmHWM during the job minus VmRSS before it (goal
  < 60 MB: the JSONL is streamed, one product held at a time);
- the Admin API points the job spent (the emulator's actual-cost counter) against what
  paging the same fields costs by Shopify's rules (goal < 1%): pages of PAGE_PRODUCTS
  products with their variants nested, the largest page whose requested cost fits the
  1,000-point query limit, each page charged 2 + per product (1 + 2 + its variants);
- rows (products + variants) per second, from the job's start to its completion.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from typing import Any

import httpx
import orjson

from bench.stack import SHOP, Stack, wait_for_http, worker_command
from service import queue
from shopify_emulator.catalogue import build
from tools.services import free_port

PAGE_PRODUCTS = 15  # 2 + 15 x (1 + 2 + 60) = 947 requested points: the most that fits 1,000
SAMPLE_SECONDS = 0.05


def paging_points(products: int, max_variants: int, seed: int) -> int:
    """What paging the catalogue costs in actual points, by Shopify's rules."""
    counts = [len(p.variants) for p in build(products, max_variants, seed).values()]
    pages = -(-len(counts) // PAGE_PRODUCTS)
    return 2 * pages + sum(1 + 2 + n for n in counts)


def _memory_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


async def inventory_report(
    stack: Stack, *, products: int, max_variants: int, seed: int = 1, timeout: float = 600
) -> dict[str, Any]:
    assert stack.pg is not None
    await stack.reset()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    emulator = stack.spawn(
        [
            sys.executable, "-m", "shopify_emulator", "--port", str(port),
            "--app-url", "http://127.0.0.1:9", "--shop", f"{SHOP}=shpat_bench",
            "--products", str(products), "--max-variants", str(max_variants),
            "--seed", str(seed), "--bulk-run-seconds", "0.5",
            "--bucket-size", "1000", "--restore-rate", "50",
        ],
        stack.env(),
        "shopify",
    )  # fmt: skip
    await wait_for_http(f"{url}/_emulator/stats", emulator, "emulator", timeout=120)
    emulator_start = time.monotonic() - started
    health = free_port()
    worker = stack.spawn(
        worker_command(),
        stack.env(worker_concurrency=4, worker_health_port=health, shopify_admin_url=url),
        "worker",
    )
    try:
        await wait_for_http(f"http://127.0.0.1:{health}/healthz", worker, "worker")
        await asyncio.sleep(1.0)  # settled after start-up
        baseline_kb = _memory_kb(worker.pid, "VmRSS")
        job_id = uuid.uuid4()
        await stack.pg.execute(
            "INSERT INTO jobs (id, shop_id, type, input) VALUES ($1, $2, 'inventory_report', '{}')",
            job_id,
            stack.shop_id,
        )
        pool = queue.connect(stack.redis_url)
        try:
            await queue.enqueue(pool, "inventory_report", str(job_id), shop=SHOP)
        finally:
            await pool.aclose()
        deadline = time.monotonic() + timeout
        row = None
        while time.monotonic() < deadline:
            row = await stack.pg.fetchrow(
                "SELECT status, result, error_message, started_at, finished_at "
                "FROM jobs WHERE id = $1",
                job_id,
            )
            if row is not None and row["status"] in ("completed", "failed"):
                break
            await asyncio.sleep(SAMPLE_SECONDS)
        peak_kb = _memory_kb(worker.pid, "VmHWM")
    finally:
        worker.stop()
    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"{url}/_emulator/stats")).json()["shops"][SHOP]
    emulator.stop()
    if row is None or row["status"] != "completed":
        raise RuntimeError(f"inventory_report did not complete: {row and dict(row)}")
    result = orjson.loads(row["result"])
    rows = result["products"] + result["variants"]
    seconds = (row["finished_at"] - row["started_at"]).total_seconds()
    paging = paging_points(products, max_variants, seed)
    return {
        "products": result["products"],
        "variants": result["variants"],
        "emulator_start_seconds": round(emulator_start, 2),
        "job_seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds, 1) if seconds else None,
        "worker_rss_before_mb": round(baseline_kb / 1024, 1),
        "worker_peak_mb": round(peak_kb / 1024, 1),
        "memory_growth_mb": round(max(0, peak_kb - baseline_kb) / 1024, 1),
        "points_spent": stats["points"],
        "admin_requests": stats["requests"],
        "paging_points": paging,
        "points_vs_paging": round(stats["points"] / paging, 5),
    }
