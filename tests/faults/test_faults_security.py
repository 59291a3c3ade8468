"""Fault suite, abuse side: what a hostile queue entry, a replayed URL or another tenant gets,
and what the logs of a whole run never contain (issue 8)."""

from __future__ import annotations

import base64
import pickle
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from arq.connections import ArqRedis
from arq.constants import job_key_prefix
from databases import Database

from service import queue, store
from tests.support.config import TEST_API_KEY, TEST_SECRET, TEST_TOKEN_KEYS
from tests.support.faults import record, signed, wait_until
from tests.support.jobs import add_job, make_shop, shop_with_tokens, wait_for_status
from tests.support.net import free_port, wait_for_http
from tests.support.processes import start_worker, web_command

ECHO = {"type": "echo", "input": {"message": "hello"}}


class CreatesFile:
    """Unpickling this creates a file: the proof that a payload was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def pickled_job(marker: Path, job_id: str, shop: str) -> bytes:
    """An arq job as arq's default (pickle) serializer writes it, carrying CreatesFile."""
    return pickle.dumps(
        {
            "t": 1,
            "f": "echo",
            "a": (job_id, shop),
            "k": {},
            "et": int(time.time() * 1000),
            "x": CreatesFile(marker),
        }
    )


async def push_raw(redis: ArqRedis, job_id: str, payload: bytes) -> None:
    """Write a queue entry straight into Redis, as anyone who can reach Redis could."""
    await redis.set(job_key_prefix + job_id, payload)
    await redis.zadd(queue.QUEUE_NAME, {job_id: int(time.time() * 1000)})


def poison_entries(shop: str) -> dict[str, bytes]:
    """Queue entries that are JSON but not a job this project ever writes.

    Before the fixes, a wrong-typed `t` or `et` in an entry that arq runs itself (a cron
    function's) killed the worker, as arq reads them outside its error handling; and an entry
    whose id is not a job id failed the claim of its whole batch, again every second, forever.
    """
    now = int(time.time() * 1000)
    some_id = str(uuid.uuid4())

    def job(**fields: object) -> bytes:
        return orjson.dumps(
            {"t": 1, "f": "echo", "a": [some_id, shop], "k": {}, "et": now, **fields}
        )

    return {
        "not-a-uuid": job(a=["not-a-uuid", shop]),
        "number-id": job(a=[12345, shop]),
        "list-shop": job(a=[some_id, ["x"]]),
        "no-args": job(a=[]),
        "text-args": job(a="abc"),
        "text-kwargs": job(k="abc"),
        "text-try": job(t="1"),
        "cron-text-try": job(f="cron:retention", t="1"),
        "cron-text-enqueue-time": job(f="cron:retention", et="yesterday"),
        "cron-far-enqueue-time": job(f="cron:retention", et=1e300),
        "text-enqueue-time": job(et="yesterday"),
        "far-enqueue-time": job(et=1e300),
        "bool-try": job(t=True),
        "unknown-function": job(f="os.system"),
        "json-list": orjson.dumps([1, 2, 3]),
        "json-string": orjson.dumps("echo"),
        "not-json": b"\x80\x04garbage",
    }


async def test_a_pickled_payload_is_never_unpickled_and_the_worker_keeps_going(
    env, spawn, database: Database, redis: ArqRedis, tmp_path: Path
) -> None:
    shop = await make_shop(database)
    # The payload is live: unpickled by plain pickle, it creates its file.
    control = tmp_path / "control-marker"
    subprocess.run(
        [sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
        input=pickled_job(control, str(uuid.uuid4()), shop.domain),
        check=True,
    )
    assert control.exists()

    worker = start_worker(spawn, env)
    marker = tmp_path / "marker"
    real = await add_job(database, redis, shop, {"message": "real"}, enqueue=False)
    hostile = {str(real): pickled_job(marker, str(real), shop.domain)}
    hostile |= {
        f"{name}-{uuid.uuid4()}": payload for name, payload in poison_entries(shop.domain).items()
    }
    for job_id, payload in hostile.items():
        await push_raw(redis, job_id, payload)

    async def all_taken() -> bool:
        members = {m.decode() for m in await redis.zrange(queue.QUEUE_NAME, 0, -1)}
        return not members & set(hostile)

    await wait_until(all_taken, 20, "every hostile queue entry dropped")
    assert not marker.exists(), "the worker unpickled a payload from Redis"
    assert worker.popen.poll() is None, worker.output[-3000:]
    wait_for_http(f"http://127.0.0.1:{env['WORKER_HEALTH_PORT']}/healthz", timeout=5)
    # The job whose entry was replaced by a pickle is still pending in Postgres (the
    # reconciler queues it again); a job queued properly runs as usual.
    assert (await store.get_job(database, real)).status == "pending"
    fine = await add_job(database, redis, shop, {"message": "after"})
    assert (await wait_for_status(database, fine, {"completed"}, timeout=20)).result == {
        "message": "after"
    }
    assert worker.popen.poll() is None
    record("hostile queue entries", pickled=1, malformed=len(hostile) - 1, unpickled=0)


@pytest.fixture
async def tenants(database: Database) -> tuple[store.Shop, store.Shop]:
    one = await store.upsert_shop(database, "tenant-one.myshopify.com", "shpat_one", "")
    two = await store.upsert_shop(database, "tenant-two.myshopify.com", "shpat_two", "")
    return one, two


async def test_status_reads_across_shops_and_customers_are_404(
    app_client: httpx.AsyncClient, tenants: tuple[store.Shop, store.Shop]
) -> None:
    one, two = tenants
    jobs = {}
    for shop in (one, two):
        for customer in ("", "7", "8"):
            made = await app_client.post(signed("/proxy/process", shop.domain, customer), json=ECHO)
            assert made.status_code == 200, made.text
            jobs[(shop.domain, customer)] = made.json()["jobId"]
    checked = 0
    for (owner_shop, owner_customer), job_id in jobs.items():
        for reader_shop in (one.domain, two.domain):
            for reader in ("", "7", "8", "9"):
                answer = await app_client.get(
                    signed(f"/proxy/status?jobId={job_id}", reader_shop, reader)
                )
                allowed = reader_shop == owner_shop and owner_customer in ("", reader)
                checked += 1
                if allowed:
                    assert answer.status_code == 200 and answer.json()["jobId"] == job_id
                else:
                    assert (answer.status_code, answer.json()) == (
                        404,
                        {"error": "Job not found"},
                    ), (owner_shop, owner_customer, reader_shop, reader)
    record("cross-tenant reads", reads=checked)


async def test_a_signed_url_replayed_outside_90_seconds_is_refused(
    app_client: httpx.AsyncClient, database: Database, tenants: tuple[store.Shop, store.Shop]
) -> None:
    one, _ = tenants
    made = await app_client.post(signed("/proxy/process", one.domain), json=ECHO)
    job_id = made.json()["jobId"]
    rows = await database.fetch_val("SELECT count(*) FROM jobs")
    # A URL captured `age` seconds ago is exactly one signed with that old timestamp.
    for age in (91, 120, 3600, 86_400 * 365, -91, -3600):
        for answer in (
            await app_client.post(signed("/proxy/process", one.domain, skew=-age), json=ECHO),
            await app_client.get(signed(f"/proxy/status?jobId={job_id}", one.domain, skew=-age)),
        ):
            assert (answer.status_code, answer.json()) == (401, {"error": "Stale timestamp"}), age
    assert await database.fetch_val("SELECT count(*) FROM jobs") == rows
    fresh = await app_client.get(signed(f"/proxy/status?jobId={job_id}", one.domain, skew=-80))
    assert fresh.status_code == 200


CUSTOM_SHOP = "logs-custom.myshopify.com"
CUSTOM_TOKEN = "shpat_custom_0123456789abcdef0123456789abcdef"
INSTALLED_SHOP = "logs-installed.myshopify.com"
# What a signature or an HMAC looks like in a log, whichever value it has: hex SHA-256 (app
# proxy, OAuth) or base64 SHA-256 (webhooks).
HEX_DIGEST = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
B64_DIGEST = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{43}=")


async def test_no_secret_token_or_signature_reaches_any_log(
    env, spawn, database: Database, redis: ArqRedis
) -> None:
    """A whole run (install, storefront calls, an Admin API job, token refresh, webhooks, bad
    requests) with every process's output captured: none of it holds a credential."""
    web_port, shopify_port = free_port(), free_port()
    web_url, shopify_url = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{shopify_port}"
    env = {**env, "SHOPIFY_APP_URL": web_url, "SHOPIFY_ADMIN_URL": shopify_url}
    shopify = spawn(
        [
            sys.executable,
            "-m",
            "shopify_emulator",
            "--port",
            str(shopify_port),
            "--app-url",
            web_url,
            "--api-key",
            TEST_API_KEY,
            "--api-secret",
            TEST_SECRET,
            "--shop",
            f"{CUSTOM_SHOP}={CUSTOM_TOKEN}",
            "--webhook-retry-delays",
            "0.05,0.1",
            "--token-lifetime",
            "30",  # inside the refresh margin: the worker refreshes before its first call
        ],
        env,
        "shopify",
    )
    wait_for_http(f"{shopify_url}/_emulator/stats", timeout=30)
    web = spawn(web_command(web_port), env, "web")
    wait_for_http(f"{web_url}/healthz", timeout=30)
    worker = start_worker(spawn, env)
    await store.upsert_shop(database, CUSTOM_SHOP, CUSTOM_TOKEN, "read_products")
    seen: set[str] = {TEST_SECRET, TEST_TOKEN_KEYS, CUSTOM_TOKEN}

    async with httpx.AsyncClient(timeout=20) as client:
        # Install through OAuth: a code, an hmac, a state nonce and its cookie cross the logs'
        # way, and an expiring token with a refresh token is stored.
        landed = await client.get(
            f"{web_url}/auth", params={"shop": INSTALLED_SHOP}, follow_redirects=True
        )
        assert landed.status_code == 200, landed.text
        for hop in landed.history:
            for key, value in hop.url.params.multi_items():
                if key in ("code", "hmac", "state", "signature"):
                    seen.add(value)
            seen.update(c.value for c in hop.cookies.jar if c.value)
        installed = await shop_with_tokens(database, INSTALLED_SHOP)
        assert installed is not None and installed.access_token and installed.refresh_token
        seen |= {installed.access_token, installed.refresh_token}

        # Storefront calls through the emulated app proxy (signed there), and signed directly.
        product = (await client.get(f"{shopify_url}/_emulator/products")).json()[0]["id"]
        made = []
        for shop in (INSTALLED_SHOP, CUSTOM_SHOP):
            answer = await client.post(
                f"{shopify_url}/apps/jobs/process",
                json={"type": "product_summary", "input": {"product_id": product}},
                headers={"X-Emulator-Shop": shop, "X-Emulator-Customer": "42"},
            )
            assert answer.status_code == 200, answer.text
            made.append((shop, answer.json()["jobId"]))
        url = signed("/proxy/process", CUSTOM_SHOP)
        seen.add(httpx.URL(url).params["signature"])
        assert (await client.post(f"{web_url}{url}", json=ECHO)).status_code == 200
        forged = url.replace(url[-8:], "deadbeef")
        assert (await client.post(f"{web_url}{forged}", json=ECHO)).status_code == 401
        stale = signed("/proxy/process", CUSTOM_SHOP, skew=-600)
        seen.add(httpx.URL(stale).params["signature"])
        assert (await client.post(f"{web_url}{stale}", json=ECHO)).status_code == 401

        # Webhooks, signed by the emulator, and one with a wrong HMAC.
        sent = await client.post(
            f"{shopify_url}/_emulator/webhooks/send",
            json={
                "topic": "products/update",
                "shop": CUSTOM_SHOP,
                "payload": {"id": 1, "admin_graphql_api_id": product},
                "wait": True,
            },
        )
        assert sent.status_code == 200, sent.text
        bad = await client.post(
            f"{web_url}/webhooks",
            content=b"{}",
            headers={
                "X-Shopify-Hmac-Sha256": base64.b64encode(b"x" * 32).decode(),
                "X-Shopify-Topic": "products/update",
                "X-Shopify-Shop-Domain": CUSTOM_SHOP,
                "X-Shopify-Event-Id": "bad-1",
            },
        )
        assert bad.status_code == 401

        for _, job_id in made:
            job = await wait_for_status(database, uuid.UUID(job_id), {"completed", "failed"}, 60)
            assert job.status == "completed", job.error_message
    webhook_jobs = await database.fetch_all("SELECT id FROM jobs WHERE source = 'webhook'")
    for row in webhook_jobs:
        await wait_for_status(database, row._mapping["id"], {"completed", "failed"}, 60)

    for shop in (INSTALLED_SHOP, CUSTOM_SHOP):
        stored = await shop_with_tokens(database, shop)
        assert stored is not None and stored.access_token
        seen |= {stored.access_token, stored.refresh_token or stored.access_token}
    refreshed = await shop_with_tokens(database, INSTALLED_SHOP)
    assert refreshed is not None and refreshed.access_token != installed.access_token

    for proc in (worker, web, shopify):
        proc.stop()
    logs = {
        name: proc.output for name, proc in (("worker", worker), ("web", web), ("shopify", shopify))
    }
    assert all(logs.values())
    found = []
    for name, text in logs.items():
        found += [(name, secret[:12] + "…") for secret in seen if secret in text]
        found += [(name, m[:12] + "…") for m in HEX_DIGEST.findall(text)]
        found += [(name, m[:12] + "…") for m in B64_DIGEST.findall(text)]
    leaked = len(set(found))
    assert not found, f"credentials in the logs: {sorted(set(found))}"
    record(
        "logs",
        processes=len(logs),
        log_lines=sum(text.count("\n") for text in logs.values()),
        credentials_checked=len(seen),
        leaked=leaked,
    )
