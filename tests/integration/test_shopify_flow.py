"""Shopify Flow against real processes: the emulator plays Flow (signed action requests, resent
until 200) and records flowTriggerReceive; web, worker and Postgres are the project's own."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from databases import Database

from service import store
from service.shopify.signatures import webhook_hmac
from tests.support.breakable import RedisServer
from tests.support.net import free_port, wait_for_http
from tests.support.processes import web_command, worker_command

SHOP = "flow-shop.myshopify.com"
TOKEN = "shpat_flow"


def _emulator_command(port: int, web_url: str, env: dict[str, str]) -> list[str]:
    return [
        sys.executable, "-m", "shopify_emulator", "--port", str(port), "--app-url", web_url,
        "--api-key", env["SHOPIFY_API_KEY"], "--api-secret", env["SHOPIFY_API_SECRET"],
        "--shop", f"{SHOP}={TOKEN}", "--products", "3",
    ]  # fmt: skip


@pytest.fixture
async def stack(env: dict[str, str], spawn, database: Database, redis):
    web_port, shopify_port = free_port(), free_port()
    web_url, shopify_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{shopify_port}"
    stack_env = {**env, "SHOPIFY_APP_URL": web_url, "SHOPIFY_ADMIN_URL": shopify_url,
                 "RATE_LIMIT_MAX": "0", "JOB_BACKOFF_SECONDS": "0.2"}  # fmt: skip
    await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    spawn(_emulator_command(shopify_port, web_url, env), stack_env, "shopify")
    spawn(web_command(web_port), stack_env, "web")
    wait_for_http(f"{web_url}/healthz")
    wait_for_http(f"{shopify_url}/_emulator/stats")
    return web_url, shopify_url, stack_env


def _get(url: str) -> dict:
    """A blocking GET of JSON (the emulator's control routes answer at once)."""
    return httpx.get(url, timeout=30).json()


def _post(url: str, **options) -> httpx.Response:
    return httpx.post(url, timeout=30, **options)


def _flow(shopify_url: str, **spec) -> dict:
    answer = httpx.post(f"{shopify_url}/_emulator/flow/actions", json={"shop": SHOP, **spec},
                        timeout=60)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.json()


async def _job_rows(database: Database, source: str = "flow") -> list[dict]:
    rows = await database.fetch_all(
        "SELECT id, type, input, idempotency_key FROM jobs WHERE source = :s", {"s": source}
    )
    return [dict(r._mapping) for r in rows]


async def test_a_signed_flow_action_creates_the_job_and_a_resend_returns_it(
    stack, database: Database
) -> None:
    _, shopify_url, _ = stack
    run_id = str(uuid.uuid4())
    sent = _flow(shopify_url, handle="echo", action_run_id=run_id,
                 properties={"message": "from Flow", "sleep_ms": 5})  # fmt: skip
    [attempt] = sent["attempts"]
    assert attempt["status"] == 200 and attempt["body"]["created"] is True
    job_id = attempt["body"]["jobId"]
    [row] = await _job_rows(database)
    assert str(row["id"]) == job_id and row["type"] == "echo"
    assert json.loads(row["input"]) == {"message": "from Flow", "sleep_ms": 5}
    assert row["idempotency_key"] == f"flow:{run_id}"

    again = _flow(shopify_url, handle="echo", action_run_id=run_id,
                  properties={"message": "from Flow", "sleep_ms": 5})  # fmt: skip
    assert again["attempts"][0]["status"] == 200
    assert again["attempts"][0]["body"]["jobId"] == job_id
    assert again["attempts"][0]["body"]["created"] is False
    assert len(await _job_rows(database)) == 1


async def test_flow_action_refusals_name_the_problem(stack, database: Database) -> None:
    _, shopify_url, _ = stack
    forged = _flow(shopify_url, handle="echo", secret="not-the-app-secret", attempts=1,
                   properties={"message": "x"})  # fmt: skip
    assert forged["attempts"] == [{"status": 401, "body": {"error": "Invalid HMAC"}}]

    wrong = _flow(shopify_url, handle="echo", attempts=2, retry_seconds=0.05,
                  properties={"sleep_ms": "soon", "fail_times": 3})  # fmt: skip
    assert [a["status"] for a in wrong["attempts"]] == [400, 400]  # Flow resends on non-200
    body = wrong["attempts"][0]["body"]
    fields = {d["field"] for d in body["details"]}
    assert fields == {"properties.fail_times"}, body  # not an action field: refused first
    bad = _flow(shopify_url, handle="echo", attempts=1, properties={"sleep_ms": "soon"})
    body = bad["attempts"][0]["body"]
    assert {d["field"] for d in body["details"]} == {"properties.message", "properties.sleep_ms"}
    assert "properties.message" in body["error"]

    unknown = _flow(shopify_url, handle="no-such-action", attempts=1, properties={})
    assert unknown["attempts"][0]["status"] == 404
    assert await _job_rows(database) == []


async def test_redis_down_answers_503_and_leaves_no_row(
    env: dict[str, str], spawn, database: Database, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        web_port = free_port()
        web_env = {**env, "REDIS_URL": server.url}
        await store.upsert_shop(database, SHOP, TOKEN, "read_products")
        spawn(web_command(web_port), web_env, "web")
        wait_for_http(f"http://127.0.0.1:{web_port}/healthz")
        server.stop()
        body = json.dumps({
            "shop_id": "gid://shopify/Shop/1", "shopify_domain": SHOP,
            "action_run_id": "run-redis-down", "action_definition_id": "echo",
            "handle": "echo", "properties": {"message": "queued?"},
        }).encode()  # fmt: skip
        answer = _post(
            f"http://127.0.0.1:{web_port}/flow/actions/echo", content=body,
            headers={"X-Shopify-Hmac-SHA256": webhook_hmac(body, env["SHOPIFY_API_SECRET"]),
                     "Content-Type": "application/json"},
        )  # fmt: skip
        assert answer.status_code == 503, answer.text
        assert answer.json() == {"error": "Failed to queue job"}
        assert await _job_rows(database) == []
    finally:
        server.stop()


async def _wait_triggers(shopify_url: str, count: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    triggers: list[dict] = []
    while time.monotonic() < deadline:
        triggers = _get(f"{shopify_url}/_emulator/flow")["triggers"]
        if len(triggers) >= count:
            return triggers
        await asyncio.sleep(0.2)
    raise AssertionError(f"{count} trigger(s) expected, got {triggers}")


async def _wait_status(database: Database, job_type: str, status: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await database.fetch_one(
            "SELECT id, status FROM jobs WHERE type = :t ORDER BY created_at DESC LIMIT 1",
            {"t": job_type},
        )
        if row is not None and row["status"] == status:
            return row
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {job_type} job {status}")


async def _enqueue(web_url: str, env: dict[str, str], job_type: str, message: str) -> None:
    from shopify_emulator.config import EmulatorConfig
    from shopify_emulator.embedded import session_token  # the admin's own signer

    config = EmulatorConfig(app_url=web_url, api_key=env["SHOPIFY_API_KEY"],
                            api_secret=env["SHOPIFY_API_SECRET"])  # fmt: skip
    token = session_token(config, SHOP, "42", time.time())
    answer = _post(f"{web_url}/api/jobs", headers={"Authorization": f"Bearer {token}"},
                        json={"type": job_type, "input": {"message": message}})  # fmt: skip
    assert answer.status_code == 201, answer.text


async def test_a_completed_job_with_a_trigger_calls_flow_trigger_receive_once(
    stack, spawn, database: Database
) -> None:
    web_url, shopify_url, stack_env = stack
    spawn(worker_command(), stack_env, "worker")
    await _enqueue(web_url, stack_env, "echo_notify", "report ready")
    done = await _wait_status(database, "echo_notify", "completed")
    [trigger] = await _wait_triggers(shopify_url, 1)
    assert trigger["shop"] == SHOP and trigger["handle"] == "echo-finished"
    assert trigger["payload"] == {"Job ID": str(done["id"]), "Job type": "echo_notify",
                                  "Status": "completed", "message": "report ready"}  # fmt: skip
    await _wait_status(database, "flow_trigger", "completed")
    await asyncio.sleep(1.0)  # nothing else arrives
    assert len(_get(f"{shopify_url}/_emulator/flow")["triggers"]) == 1


async def test_a_worker_killed_mid_send_still_makes_exactly_one_call(
    stack, spawn, database: Database
) -> None:
    web_url, shopify_url, stack_env = stack
    env = {**stack_env, "JOB_LEASE_SECONDS": "2"}
    # The next Admin API call of the shop hangs 3 s on its way in: the worker dies meanwhile.
    _post(f"{shopify_url}/_emulator/faults",
               json={"kind": "slow", "count": 1, "delay": 3, "shop": SHOP}).raise_for_status()  # fmt: skip
    worker = spawn(worker_command(), env, "worker")
    await _enqueue(web_url, env, "echo_notify", "killed mid-send")
    await _wait_status(database, "echo_notify", "completed")
    deadline = time.monotonic() + 20
    while _get(f"{shopify_url}/_emulator/stats")["shops"][SHOP]["requests"] < 1:
        assert time.monotonic() < deadline, "the trigger was never sent"
        await asyncio.sleep(0.05)
    worker.signal(signal.SIGKILL)
    worker.wait(10)
    await asyncio.sleep(3.5)  # the emulator's delay is over: the dead worker's call is not run
    assert _get(f"{shopify_url}/_emulator/flow")["triggers"] == []
    spawn(worker_command(), env, "worker-2")
    [trigger] = await _wait_triggers(shopify_url, 1)
    assert trigger["payload"]["message"] == "killed mid-send"
    await _wait_status(database, "flow_trigger", "completed", timeout=40)
    await asyncio.sleep(1.0)
    assert len(_get(f"{shopify_url}/_emulator/flow")["triggers"]) == 1
