"""Structured logs of the real processes: every line JSON, with the job's and request's fields."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
from arq.connections import ArqRedis
from databases import Database

from service.shopify.proxy_url import signed_proxy_url
from tests.support.config import TEST_SECRET
from tests.support.jobs import make_shop, wait_for_status
from tests.support.net import free_port, wait_for_http
from tests.support.processes import start_worker, web_command


async def test_real_processes_write_json_lines_with_job_and_request_fields(
    env: dict[str, str], spawn, database: Database, redis: ArqRedis
) -> None:
    assert "LOG_FORMAT" not in env  # json is the default: production's format
    shop = await make_shop(database, "logs-shop.myshopify.com")
    worker = start_worker(spawn, env)
    port = free_port()
    web = spawn(
        web_command(port), {**env, "DASHBOARD_PASSWORD": "a-long-dashboard-password"}, "web"
    )
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/healthz")
    url = signed_proxy_url(
        base, "/proxy/process", shop=shop.domain, secret=TEST_SECRET, timestamp=int(time.time())
    )
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            url,
            json={"type": "echo", "input": {"message": "x", "fail_times": 1}},
            headers={"X-Request-ID": "req-logs-1"},
        )
        assert answer.status_code == 200 and answer.headers["x-request-id"] == "req-logs-1"
        await client.get(f"{base}/admin/", auth=("admin", "a-long-dashboard-password"))
    job_id = answer.json()["jobId"]  # compared with the logged text below
    await wait_for_status(database, job_id, {"completed"})
    await asyncio.sleep(0.3)  # the worker's last line is written after the row

    for output in (worker.output, web.output):
        for line in output.splitlines():
            entry = orjson.loads(line)  # every line is JSON, ours and arq's and uvicorn's
            assert {"timestamp", "level", "logger", "message"} <= set(entry), line
        assert TEST_SECRET not in output and "a-long-admin-password" not in output
        assert "signature=" not in output  # no query strings

    job_lines = [
        entry
        for entry in map(orjson.loads, worker.output.splitlines())
        if entry.get("job_id") == job_id
    ]
    messages = [entry["message"] for entry in job_lines]
    assert any("started attempt=1" in m for m in messages)
    assert any("retry in" in m for m in messages) and any("completed in" in m for m in messages)
    for entry in job_lines:
        assert (entry["type"], entry["shop"]) == ("echo", shop.domain)
    # arq's own lines (its per-run cron lines are DEBUG now) are JSON like the rest: every line
    # was parsed above.

    requests = [entry for entry in map(orjson.loads, web.output.splitlines()) if entry.get("route")]
    created = next(entry for entry in requests if entry["request_id"] == "req-logs-1")
    assert (created["method"], created["route"], created["status"]) == (
        "POST",
        "/proxy/process",
        200,
    )
    assert created["path"] == "/proxy/process" and created["duration_ms"] > 0
    queued = [
        entry
        for entry in map(orjson.loads, web.output.splitlines())
        if "queued for" in entry["message"]
    ]
    assert queued and queued[0]["request_id"] == "req-logs-1"  # bound to the request's lines
    assert any(entry["route"] == "/admin/" and entry["status"] == 200 for entry in requests)
