"""Retention that keeps what the docs promise: by age, per shop, and idempotency keys honoured
for IDEMPOTENCY_WINDOW_SECONDS whatever retention does.

Before: COMPLETED_RETENTION_COUNT=1000 counted across every shop, so on a busy app a job was
deleted seconds after it completed: the storefront's poll lost its result, and the same
Idempotency-Key sent again created a second job.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from databases import Database

from jobs.worker import maintenance
from service import store
from service.core.settings import Settings
from tests.support.processes import start_web
from tests.support.proxy import proxy_url

BUSY = "busy-shop.myshopify.com"
QUIET = "quiet-shop.myshopify.com"


async def _finished_rows(database: Database, shop_id: int, count: int, ago: timedelta) -> None:
    await database.execute(
        """INSERT INTO jobs (id, shop_id, type, status, finished_at, created_at)
           SELECT gen_random_uuid(), :shop, 'echo', 'completed',
                  now() - make_interval(secs => :ago), now() - make_interval(secs => :ago)
             FROM generate_series(1, :n)""",
        {"shop": shop_id, "ago": ago.total_seconds(), "n": count},
    )


async def test_a_busy_shop_never_prunes_fresh_results(database: Database, settings) -> None:
    """With the default settings, 2,000 fresh completions of one shop prune nothing, theirs or
    another shop's; what is older than COMPLETED_RETENTION_SECONDS goes."""
    busy = await store.upsert_shop(database, BUSY, "shpat_busy", "")
    quiet = await store.upsert_shop(database, QUIET, "shpat_quiet", "")
    await _finished_rows(database, busy.id, 2_000, timedelta(seconds=8))
    await _finished_rows(database, quiet.id, 3, timedelta(seconds=8))
    await _finished_rows(database, busy.id, 5, timedelta(days=2))
    defaults = Settings.model_fields
    retention = settings.model_copy(
        update={
            name: defaults[name].default
            for name in (
                "completed_retention_seconds",
                "completed_retention_count",
                "failed_retention_seconds",
                "failed_retention_count",
                "idempotency_window_seconds",
            )
            if name in defaults
        }
    )
    assert await maintenance.delete_expired(database, retention) == 5
    assert await database.fetch_val("SELECT count(*) FROM jobs") == 2_003

    # A count, when set, is per shop: the busy shop keeps its newest 100, the quiet one all 3.
    per_shop = retention.model_copy(update={"completed_retention_count": 100})
    assert await maintenance.delete_expired(database, per_shop) == 1_900
    rows = await database.fetch_all(
        "SELECT shop_id, count(*) AS n FROM jobs GROUP BY shop_id ORDER BY shop_id"
    )
    assert {r._mapping["shop_id"]: r._mapping["n"] for r in rows} == {busy.id: 100, quiet.id: 3}


async def test_idempotency_keys_are_honoured_across_retention(
    env: dict[str, str], spawn, database: Database, settings
) -> None:
    """A storefront job created with an Idempotency-Key, completed and past every retention
    limit, is kept for the window: the same key gets the same job. Past the window it is
    pruned, its poll answers 404, and the key starts a new job."""
    await store.upsert_shop(database, QUIET, "shpat_quiet", "")
    _, base = start_web(spawn, env)
    key = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    request = {"type": "echo", "input": {"message": "once"}}
    retention = settings.model_copy(
        update={"completed_retention_seconds": 1, "completed_retention_count": 1}
    )
    async with httpx.AsyncClient(timeout=10) as client:

        async def create() -> str:
            response = await client.post(
                proxy_url(base, "/proxy/process", shop=QUIET), json=request, headers=key
            )
            assert response.status_code == 200, response.text
            return str(response.json()["jobId"])

        async def poll(job_id: str) -> httpx.Response:
            return await client.get(proxy_url(base, f"/proxy/status?jobId={job_id}", shop=QUIET))

        first = await create()
        # It ran and finished long ago, and newer jobs of the shop exceed any count.
        done_long_ago = datetime.now(UTC) - timedelta(days=3)
        await database.execute(
            "UPDATE jobs SET status = 'completed', result = '{\"ok\": 1}', finished_at = :t",
            {"t": done_long_ago},
        )
        shop = await store.get_shop(database, QUIET)
        assert shop is not None
        await _finished_rows(database, shop.id, 5, timedelta(seconds=1))

        assert await maintenance.delete_expired(database, retention) == 5  # every row but it
        assert await create() == first  # the same key, the same job
        polled = await poll(first)
        assert polled.status_code == 200 and polled.json()["result"] == {"ok": 1}

        # Past the window (created longer ago than IDEMPOTENCY_WINDOW_SECONDS): pruned.
        await database.execute(
            "UPDATE jobs SET created_at = :t WHERE id = :id",
            {
                "t": datetime.now(UTC)
                - timedelta(seconds=settings.idempotency_window_seconds + 60),
                "id": uuid.UUID(first),
            },
        )
        assert await maintenance.delete_expired(database, retention) == 1
        gone = await poll(first)
        assert (gone.status_code, gone.json()) == (404, {"error": "Job not found"})
        assert await create() != first
