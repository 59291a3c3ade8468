"""The web side: end-to-end latency through a real uvicorn, and the enqueue endpoint's rate.

Both use `uvicorn bench.web_app:app`, the product's web process with one bare route added
(bench/web_app.py). Requests are signed exactly as Shopify's app proxy signs them.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

from bench.stack import API_SECRET, SHOP, Proc, Stack, wait_for_http, web_command, worker_command
from bench.web_app import BARE_PATH
from tools.services import free_port

ECHO_BODY = orjson.dumps({"type": "echo", "input": {"message": ""}})
JOB_TIMEOUT_SECONDS = 30.0


def signed_path(path: str, extra: list[tuple[str, str]] | None = None) -> str:
    from service.shopify.proxy_url import signed_query

    pairs = signed_query(extra or [], shop=SHOP, secret=API_SECRET, timestamp=int(time.time()))
    return f"{path}?{urlencode(pairs)}"


def start_web(stack: Stack) -> tuple[Proc, int]:
    port = free_port()
    return stack.spawn(web_command(port), stack.env(), "web"), port


async def start_worker(stack: Stack, concurrency: int) -> Proc:
    port = free_port()
    proc = stack.spawn(
        worker_command(),
        stack.env(worker_concurrency=concurrency, worker_health_port=port),
        "worker",
    )
    await wait_for_http(f"http://127.0.0.1:{port}/healthz", proc, "worker")
    return proc


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def summarize_ms(seconds: list[float]) -> dict[str, float]:
    values = sorted(s * 1000 for s in seconds)
    return {
        "p50_ms": round(percentile(values, 50), 2),
        "p95_ms": round(percentile(values, 95), 2),
        "p99_ms": round(percentile(values, 99), 2),
        "mean_ms": round(statistics.fmean(values), 2) if values else 0.0,
        "min_ms": round(values[0], 2) if values else 0.0,
        "max_ms": round(values[-1], 2) if values else 0.0,
    }


async def one_job(client: httpx.AsyncClient, poll_seconds: float) -> tuple[float, float]:
    """POST a job and poll its status until `completed`: (end-to-end, POST answer) seconds."""
    begun = time.perf_counter()
    answer = await client.post(
        signed_path("/proxy/process"),
        content=ECHO_BODY,
        headers={"Content-Type": "application/json"},
    )
    posted = time.perf_counter()
    if answer.status_code != 200:
        raise RuntimeError(f"POST /proxy/process answered {answer.status_code}: {answer.text}")
    job_id = answer.json()["jobId"]
    while True:
        status = await client.get(signed_path("/proxy/status", [("jobId", job_id)]))
        state = status.json().get("status")
        if state == "completed":
            return time.perf_counter() - begun, posted - begun
        if state == "failed" or status.status_code != 200:
            raise RuntimeError(f"job {job_id}: {status.status_code} {status.text}")
        if time.perf_counter() - begun > JOB_TIMEOUT_SECONDS:
            raise RuntimeError(f"job {job_id} not completed after {JOB_TIMEOUT_SECONDS:g}s")
        await asyncio.sleep(poll_seconds)


async def latency(
    stack: Stack,
    port: int,
    *,
    jobs: int,
    warmup: int,
    poll_ms: float,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Sequential jobs on an idle system: one POST, then status polls until `completed`."""
    total: list[float] = []
    post: list[float] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for index in range(warmup + jobs):
            end_to_end, answered = await one_job(client, poll_ms / 1000)
            if index >= warmup:
                total.append(end_to_end)
                post.append(answered)
            if progress is not None:
                progress(max(0, index + 1 - warmup), jobs)
    return {
        "jobs": jobs,
        "warmup_jobs": warmup,
        "poll_ms": poll_ms,
        **summarize_ms(total),
        "post": summarize_ms(post),
    }


async def load(
    stack: Stack,
    web: Proc,
    port: int,
    path: str,
    *,
    connections: int,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    """bench/loadgen.py, in a process of its own, against one path of the web process."""
    args = [
        sys.executable, "-m", "bench.loadgen", "--port", str(port), "--path", path,
        "--method", "POST", "--body", ECHO_BODY.decode(),
        "--connections", str(connections), "--duration", str(seconds), "--warmup", str(warmup),
    ]  # fmt: skip
    client = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    meter = stack.cpu_meter(web=[web])
    await asyncio.sleep(warmup)
    meter.start()
    wall0 = time.perf_counter()
    await asyncio.sleep(seconds)
    cpu = meter.stop(time.perf_counter() - wall0)
    out, err = await asyncio.wait_for(client.communicate(), timeout=seconds + warmup + 60)
    if client.returncode != 0:
        raise RuntimeError(f"loadgen failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    result["cpu"] = cpu
    return result


async def enqueue_rate(
    stack: Stack, web: Proc, port: int, *, connections: int, seconds: float, warmup: float
) -> dict[str, Any]:
    """Requests per second of `POST /proxy/process` against the bare route, same request.

    No worker runs (the jobs pile up in Postgres and Redis), so the web shares the two cores
    only with the load generator, Postgres and Redis.
    """
    assert stack.pg is not None
    # One signed query for the whole run (a signature is good for 90 s); the bare route gets
    # the very same request line and body, so the two differ only in what the handler does.
    query = signed_path("").lstrip("?")
    bare = await load(
        stack, web, port, f"{BARE_PATH}?{query}",
        connections=connections, seconds=seconds, warmup=warmup,
    )  # fmt: skip
    await stack.reset()
    process = await load(
        stack, web, port, f"/proxy/process?{query}",
        connections=connections, seconds=seconds, warmup=warmup,
    )  # fmt: skip
    process["rows_created"] = await stack.pg.fetchval("SELECT count(*) FROM jobs")
    for name, result in (("bare", bare), ("process", process)):
        if result["ok"] == 0 or result["ok"] < result["requests"]:
            raise RuntimeError(f"enqueue load on {name}: not all answers 2xx: {result}")
    ratio = process["rps"] / bare["rps"] if bare["rps"] else 0.0
    return {
        "connections": connections,
        "seconds": seconds,
        "bare": bare,
        "process": process,
        "ratio": round(ratio, 3),
    }
