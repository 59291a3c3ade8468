"""Fault suite, abuse side: what a hostile queue entry, a replayed URL or another tenant gets,
and what the logs of a whole run never contain (issue 8)."""

from __future__ import annotations

import pickle
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
from tests.conftest import wait_for_http
from tests.faults_helpers import record, signed, wait_until
from tests.jobs_helpers import add_job, make_shop, wait_for_status
from tests.test_worker import start_worker

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

    Before the fix, the wrong-typed `t` and `et` killed the worker (arq reads them outside its
    error handling) and the malformed job ids were deferred and retried forever.
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
