"""A job's whole life through real processes: theme request -> web -> Redis -> worker -> status."""

from __future__ import annotations

import asyncio
import time

import httpx
from databases import Database

from service import store
from tests.support.net import wait_for_http
from tests.support.processes import start_web, worker_command
from tests.support.proxy import proxy_url

SHOP = "e2e-shop.myshopify.com"


async def test_an_echo_job_created_over_http_is_completed_by_a_real_worker(
    env: dict[str, str], spawn, database: Database
) -> None:
    await store.upsert_shop(database, SHOP, "shpat_e2e", "")
    _, base = start_web(spawn, env)
    worker = spawn(worker_command(), env, "worker")
    wait_for_http(f"http://127.0.0.1:{env['WORKER_HEALTH_PORT']}/healthz")

    async with httpx.AsyncClient(timeout=10) as client:
        payload = {"type": "echo", "input": {"message": "héllo from the theme", "sleep_ms": 200}}
        created = await client.post(
            proxy_url(base, "/proxy/process", shop=SHOP, customer="77"), json=payload
        )
        assert created.status_code == 200, created.text
        job_id = created.json()["jobId"]
        assert created.json()["status"] == "pending"

        status_url = proxy_url(base, f"/proxy/status?jobId={job_id}", shop=SHOP, customer="77")
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            response = await client.get(status_url)
            assert response.status_code == 200, response.text
            body = response.json()
            if not seen or seen[-1] != body["status"]:
                seen.append(body["status"])
            if body["status"] in ("completed", "failed"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{job_id} unfinished after 30 s: {seen}\n{worker.output[-3000:]}")

        assert body == {
            "jobId": job_id,
            "status": "completed",
            "progress": 100,
            "result": {"message": "héllo from the theme"},
        }, worker.output[-3000:]
        assert response.headers["cache-control"] == "no-store"
        other = await client.get(
            proxy_url(base, f"/proxy/status?jobId={job_id}", shop=SHOP, customer="78")
        )
        assert other.status_code == 404
