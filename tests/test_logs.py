"""Structured logs: JSON lines with bound job and request fields, in-process and for real."""

from __future__ import annotations

import asyncio
import io
import logging
import time

import httpx
import orjson
from arq.connections import ArqRedis
from databases import Database

from service.core import logs
from service.shopify.proxy_url import signed_proxy_url
from tests.conftest import TEST_SECRET, free_port, wait_for_http, web_command
from tests.jobs_helpers import make_shop, wait_for_status
from tests.test_worker import start_worker


def capture(log_format: str) -> tuple[logging.Logger, io.StringIO]:
    """A private logger writing through the project's formatter and filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logs.JsonFormatter() if log_format == "json" else logging.Formatter(logs.TEXT_FORMAT)
    )
    handler.addFilter(logs.BoundFields())
    logger = logging.getLogger(f"test.logs.{log_format}.{time.monotonic_ns()}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, stream


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_bound_and_extra_fields() -> None:
    logger, stream = capture("json")
    logger.info("plain %s", "line")
    with logs.bind(job_id="j1", type="echo", shop="a.myshopify.com"):
        logger.warning("inside", extra={"attempt": 2})
        with logs.bind(shop="b.myshopify.com"):
            logger.info("nested")
        logger.info("explicit", extra={"type": "override"})
    logger.info("after")
    try:
        raise ValueError("bad")
    except ValueError:
        logger.exception("failed")

    first, inside, nested, explicit, after, failed = lines(stream)
    assert first["message"] == "plain line" and first["level"] == "INFO"
    assert first["logger"].startswith("test.logs.json")
    assert str(first["timestamp"]).endswith("+00:00") and "T" in str(first["timestamp"])
    assert set(first) == {"timestamp", "level", "logger", "message"}
    assert inside == {
        **{k: inside[k] for k in ("timestamp", "logger")},
        "level": "WARNING",
        "message": "inside",
        "job_id": "j1",
        "type": "echo",
        "shop": "a.myshopify.com",
        "attempt": 2,
    }
    assert nested["shop"] == "b.myshopify.com" and nested["job_id"] == "j1"
    assert explicit["type"] == "override"
    assert "job_id" not in after
    assert "ValueError: bad" in str(failed["exception"]) and failed["level"] == "ERROR"


async def test_bindings_stay_with_their_task() -> None:
    logger, stream = capture("json")

    async def job(job_id: str, delay: float) -> None:
        with logs.bind(job_id=job_id):
            await asyncio.sleep(delay)
            logger.info("done %s", job_id)

    await asyncio.gather(job("first", 0.05), job("second", 0.0))
    assert {(line["message"], line["job_id"]) for line in lines(stream)} == {
        ("done first", "first"),
        ("done second", "second"),
    }


def test_text_lines_stay_readable() -> None:
    logger, stream = capture("text")
    with logs.bind(job_id="j1"):
        logger.info("job j1 type=echo started")
    assert stream.getvalue().rstrip().endswith("INFO " + logger.name + ": job j1 type=echo started")


async def test_real_processes_write_json_lines_with_job_and_request_fields(
    env: dict[str, str], spawn, database: Database, redis: ArqRedis
) -> None:
    assert "LOG_FORMAT" not in env  # json is the default: production's format
    shop = await make_shop(database, "logs-shop.myshopify.com")
    worker = start_worker(spawn, env)
    port = free_port()
    web = spawn(web_command(port), {**env, "ADMIN_PASSWORD": "a-long-admin-password"}, "web")
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
        await client.get(f"{base}/admin/", auth=("admin", "a-long-admin-password"))
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
    assert any(
        entry["logger"].startswith("arq") for entry in map(orjson.loads, worker.output.splitlines())
    )

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
