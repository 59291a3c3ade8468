"""Jobs written by the previous release run under this one (docs/upgrading.md).

The rows are release 120a921's own (tests/support/fixtures/previous_release_rows.json, made by
running that release's code: make_previous_rows.py beside it): every shipped job type, stored
the way its web, webhook receiver and JobsClient stored them, every default included. They are
put in the database as queued, delayed and retrying jobs, and a real worker process of this
release must complete every one. Beside them, an input carrying a field since removed, as an
older release's echo stored `"record_effect": null`: before stored inputs were read leniently,
it failed at once with `extra_forbidden` (issue 26, finding 1).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import orjson
from arq.connections import ArqRedis
from databases import Database

from jobs.registry import job_types
from service import queue, store
from service.core.settings import Settings
from tests.support.jobs import wait_all
from tests.support.processes import Spawn, start_worker

FIXTURE = Path(__file__).parents[1] / "support" / "fixtures" / "previous_release_rows.json"
SHOP = "upgraded-shop.myshopify.com"
TOKEN = "shpat_upgraded"
COMPLIANCE = {"customers_data_request", "customers_redact", "shop_redact"}
CATALOGUE = {"products": 6, "max_variants": 3, "seed": 11}


def previous_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(FIXTURE.read_text())["rows"]
    return rows


def test_the_fixture_has_a_row_of_every_shipped_type(settings: Settings) -> None:
    """A type shipped later than the fixture needs no old row; one that both ship does."""
    # Types added since (Shopify Flow's own) have no rows of the previous release to run.
    added_since = {"flow_trigger", "echo_notify", "bulk_action"}
    assert {row["type"] for row in previous_rows()} == set(job_types(settings)) - added_since


async def _insert(
    database: Database,
    redis: ArqRedis,
    shop: store.Shop,
    job_type: str,
    job_input: dict[str, Any],
    *,
    status: str = "pending",
    delay: float = 0.0,
) -> uuid.UUID:
    """A job row as the previous release left it, with its queue entry."""
    job_id = uuid.uuid4()
    failed_before = status == "retrying"
    await database.execute(
        "INSERT INTO jobs (id, shop_id, type, input, status, attempts, retry_count, "
        "error_message, run_at) VALUES (:id, :shop, :type, CAST(:input AS jsonb), :status, "
        ":attempts, :attempts, :error, now() + make_interval(secs => :delay))",
        {
            "id": job_id,
            "shop": shop.id,
            "type": job_type,
            "input": orjson.dumps(job_input).decode(),
            "status": status,
            "attempts": 1 if failed_before else 0,
            "error": "echo: planned failure 1 of 1" if failed_before else None,
            "delay": delay,
        },
    )
    assert await queue.enqueue(redis, job_type, str(job_id), shop=shop.domain, defer_seconds=delay)
    return job_id


async def test_every_previous_release_row_completes_under_the_new_worker(
    emulator,  # type: ignore[no-untyped-def]
    settings: Settings,
    database: Database,
    redis: ArqRedis,
    spawn: Spawn,
    env: dict[str, str],
) -> None:
    shopify = emulator(shops={SHOP: TOKEN}, **CATALOGUE)
    shop = await store.upsert_shop(database, SHOP, TOKEN, "read_products")
    ids: dict[uuid.UUID, str] = {}
    for row in previous_rows():
        owner = shop
        if row["type"] in COMPLIANCE:  # they erase their shop's jobs: each gets a shop of its own
            domain = row["type"].replace("_", "-") + ".myshopify.com"
            owner = await store.upsert_shop(database, domain, TOKEN, "read_products")
        job_id = await _insert(database, redis, owner, row["type"], row["input"])
        ids[job_id] = f"queued {row['how']} {row['type']} {row['input']}"
    echo = next(r["input"] for r in previous_rows() if r["type"] == "echo")
    retrying = next(r["input"] for r in previous_rows() if r["input"].get("fail_times") == 1)
    ids[await _insert(database, redis, shop, "echo", echo, delay=1.0)] = "delayed echo"
    ids[await _insert(database, redis, shop, "echo", retrying, status="retrying")] = "retrying"
    removed = {**echo, "record_effect": None}  # a field an older release's echo had
    ids[await _insert(database, redis, shop, "echo", removed)] = "echo with a removed field"

    worker = start_worker(spawn, {**env, "SHOPIFY_ADMIN_URL": shopify.url}, worker_concurrency=4)
    try:
        await wait_all(database, list(ids), timeout=90)
    except AssertionError as exc:
        failed = await database.fetch_all(
            "SELECT id, status, error_message FROM jobs WHERE id = ANY(:ids) "
            "AND status <> 'completed'",
            {"ids": list(ids)},
        )
        details = [(ids[r._mapping["id"]], r._mapping["status"], r._mapping["error_message"])
                   for r in failed]  # fmt: skip
        raise AssertionError(f"{exc}: {details}\n{worker.output[-3000:]}") from None
