"""Flow control (issue 28, docs/starting-jobs.md, docs/operations.md), against real web and
worker processes: debounce (last input wins, the longest wait, concurrent deliveries on two
web processes collapse), keep-one-pending, a job type's rate limit per shop, pausing a shop
(its plumbing: Postgres, the queue's paused set, status reads, CLI, dashboard), an uninstalled
shop's unfinished jobs failed, and retry and cancel by filter with counts.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from arq.connections import ArqRedis
from databases import Database
from pydantic import SecretStr

from jobs import Debounce
from service import store
from service.core.settings import Settings
from service.jobs_client import JobsClient
from service.queue.keys import PAUSED
from service.shopify.signatures import webhook_hmac
from service.web.dashboard import csrf_token
from tests.support.config import ROOT, TEST_SECRET
from tests.support.flow_jobs import flow_command
from tests.support.flow_jobs import job_types as flow_types
from tests.support.jobs import add_job, make_shop, wait_for_status
from tests.support.processes import start_web, start_worker
from tests.support.queue_entries import queued_score

SHOP = "flow-shop.myshopify.com"
OTHER = "flow-other.myshopify.com"


async def deliver(base: str, topic: str, payload: dict[str, Any], shop: str = SHOP) -> str:
    """One signed webhook delivery, as Shopify sends it; its answer's `status`."""
    body = orjson.dumps(payload)
    headers = {
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Hmac-Sha256": webhook_hmac(body, TEST_SECRET),
        "Content-Type": "application/json",
    }
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        answer = await client.post("/webhooks", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["status"])


async def flow_jobs(database: Database) -> list[store.Job]:
    rows = await database.fetch_all(
        f"SELECT {store.JOB_COLUMNS} FROM jobs WHERE type = 'flow_echo' ORDER BY created_at"
    )
    return [store.job_from_row(row._mapping) for row in rows]  # type: ignore[misc]


async def settled(database: Database, count: int, timeout: float = 30) -> list[store.Job]:
    """The flow_echo jobs once `count` of them are final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = await flow_jobs(database)
        if len(jobs) >= count and all(j.status in ("completed", "failed") for j in jobs):
            return jobs
        await asyncio.sleep(0.05)
    raise AssertionError(f"flow jobs not settled: {await flow_jobs(database)}")


def client_of(database: Database, redis: ArqRedis, settings: Settings) -> JobsClient:
    return JobsClient(database, redis, flow_types(settings))


# -- debounce ------------------------------------------------------------------------------


async def test_a_burst_on_two_web_processes_is_one_job_with_the_last_input(
    spawn, env, database: Database, redis: ArqRedis
) -> None:
    await make_shop(database, SHOP)
    flow_env = {**env, "FLOW_DEBOUNCE_SECONDS": "2", "FLOW_DEBOUNCE_MAX_SECONDS": "30"}
    _, web_a = start_web(spawn, flow_env, "web-a", wrap=flow_command)
    _, web_b = start_web(spawn, flow_env, "web-b", wrap=flow_command)
    start_worker(spawn, flow_env, wrap=flow_command)
    product = {"id": 77}
    # Concurrent deliveries on both processes: they meet on the pending row's unique index.
    answers = await asyncio.gather(
        *(deliver((web_a, web_b)[i % 2], "products/update", {**product, "n": i}) for i in range(16))
    )
    assert answers.count("queued") == 1 and answers.count("debounced") == 15
    # Then in order, alternating processes: the last one's input must win.
    for n in range(100, 106):
        await deliver((web_a, web_b)[n % 2], "products/update", {**product, "n": n})
        await asyncio.sleep(0.2)
    last = datetime.now(UTC)
    [job] = await settled(database, 1)
    assert job.status == "completed" and job.attempts == 1
    assert job.input == {"product": "77", "n": 105} and job.result["n"] == 105
    assert job.started_at is not None
    # Held for the debounce after the last event (2 s); the upper bound only says it ran then.
    assert last + timedelta(seconds=1.5) <= job.started_at <= last + timedelta(seconds=15)
    assert await database.fetch_val("SELECT count(*) FROM webhook_events") == 22
    linked = await database.fetch_val("SELECT count(DISTINCT job_id) FROM webhook_events")
    assert linked == 1
    # Another product is another key: its own job.
    await deliver(web_a, "products/update", {"id": 78, "n": 1})
    jobs = await settled(database, 2)
    assert sorted(j.input["product"] for j in jobs) == ["77", "78"]


async def test_a_debounce_runs_at_most_max_seconds_after_the_first_event(
    spawn, env, database: Database, redis: ArqRedis
) -> None:
    await make_shop(database, SHOP)
    flow_env = {**env, "FLOW_DEBOUNCE_SECONDS": "1.5", "FLOW_DEBOUNCE_MAX_SECONDS": "3"}
    _, web = start_web(spawn, flow_env, wrap=flow_command)
    start_worker(spawn, flow_env, wrap=flow_command)
    first = datetime.now(UTC)
    n = 0
    while datetime.now(UTC) < first + timedelta(seconds=7):  # never quiet for 1.5 s
        await deliver(web, "products/update", {"id": 5, "n": n})
        n += 1
        await asyncio.sleep(0.4)
    jobs = await settled(database, 2, timeout=20)
    assert len(jobs) >= 2  # the window closed at its max; later events started another
    opened = jobs[0]
    assert opened.started_at is not None
    # Without the 3 s maximum it could not start before the events stop (7 s) plus 1.5 s.
    assert opened.started_at <= first + timedelta(seconds=7)
    assert all(j.attempts == 1 and j.status == "completed" for j in jobs)
    assert jobs[-1].input["n"] == n - 1  # the last event's input, in the last window
    assert await database.fetch_val("SELECT count(*) FROM webhook_events") == n


async def test_enqueue_with_debounce_collapses_and_returns_the_job(
    database: Database, redis: ArqRedis, settings: Settings
) -> None:
    await make_shop(database, SHOP)
    client = client_of(database, redis, settings)
    bounce = Debounce(key="p-1", seconds=30, max_seconds=60)
    first = await client.enqueue("flow_echo", shop=SHOP, input={"product": "1"}, debounce=bounce)
    again = await client.enqueue(
        "flow_echo", shop=SHOP, input={"product": "1", "n": 2}, debounce=bounce
    )
    assert first.created and not again.created and again.id == first.id
    assert again.run_at is not None and first.run_at is not None
    assert again.run_at >= first.run_at
    job = await store.get_job(database, first.id)
    assert job is not None and job.input == {"product": "1", "n": 2}
    # The queue entry moved with the row: due no earlier than its run_at.
    score = await queued_score(redis, str(first.id))
    assert score is not None and score / 1000 >= again.run_at.timestamp()


# -- keep one pending ----------------------------------------------------------------------


async def test_unique_key_keeps_one_pending_job_until_it_runs(
    spawn, env, database: Database, redis: ArqRedis, settings: Settings
) -> None:
    await make_shop(database, SHOP)
    client = client_of(database, redis, settings)
    one = await client.enqueue("flow_echo", shop=SHOP, input={"product": "a"}, unique_key="a")
    two = await client.enqueue("flow_echo", shop=SHOP, input={"product": "a", "n": 9},
                               unique_key="a")  # fmt: skip
    other = await client.enqueue("flow_echo", shop=SHOP, input={"product": "b"}, unique_key="b")
    assert one.created and not two.created and two.id == one.id and other.id != one.id
    _, web = start_web(spawn, env, wrap=flow_command)
    # A webhook route with a unique key: the second delivery joins the pending job.
    assert await deliver(web, "products/create", {"id": 300}) == "queued"
    assert await deliver(web, "products/create", {"id": 300, "n": 1}) == "already pending"
    assert len(await flow_jobs(database)) == 3
    start_worker(spawn, env, wrap=flow_command)
    done = await wait_for_status(database, one.id, {"completed"})
    assert done.input == {"product": "a"}  # the first's input (as given): kept, not replaced
    await settled(database, 3)
    three = await client.enqueue("flow_echo", shop=SHOP, input={"product": "a"}, unique_key="a")
    assert three.created and three.id != one.id
    assert await deliver(web, "products/create", {"id": 300, "n": 2}) == "queued"
    await settled(database, 5)


# -- rate limit keyed by type and shop -----------------------------------------------------


async def test_a_types_rate_limit_holds_each_shop_and_says_until_when(
    spawn, env, database: Database, redis: ArqRedis, settings: Settings
) -> None:
    shops = [await make_shop(database, SHOP), await make_shop(database, OTHER)]
    ids = {s.domain: [await add_job(database, redis, s, {"n": i}, "limited") for i in range(3)]
           for s in shops}  # fmt: skip
    start_worker(spawn, env, wrap=flow_command)
    seen_note = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = await database.fetch_all(
            "SELECT status, progress_message FROM jobs WHERE type = 'limited'"
        )
        for row in rows:
            if row["progress_message"] and row["status"] == "pending":
                seen_note = row["progress_message"]
        if all(r["status"] == "completed" for r in rows):
            break
        await asyncio.sleep(0.05)
    assert seen_note is not None and seen_note.startswith("Rate limited until ")
    datetime.fromisoformat(seen_note.removeprefix("Rate limited until "))
    every: list[datetime] = []
    for domain, job_ids in ids.items():
        starts = sorted(
            [(await wait_for_status(database, j, {"completed"})).started_at for j in job_ids]
        )
        # At most two in any 3 s: the third only once the first's window has passed.
        assert (starts[2] - starts[0]).total_seconds() >= 2.9, (domain, starts)
        every += starts
    # Per shop: each shop has its own log. One log for the type would need three windows
    # (2 + 2 + 2 starts, 6 s and more) for the six jobs; two logs, two windows.
    assert (max(every) - min(every)).total_seconds() < 5.5, sorted(every)
    messages = await database.fetch_all("SELECT progress_message FROM jobs WHERE type = 'limited'")
    assert all(m["progress_message"] is None for m in messages)  # the claim cleared it


# -- pause and resume ----------------------------------------------------------------------

USER, PASSWORD = "operator", "correct-horse-battery"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


async def test_pause_and_resume_from_client_cli_and_dashboard(
    spawn, env, database: Database, redis: ArqRedis, settings: Settings
) -> None:
    shop = await make_shop(database, SHOP)
    client = client_of(database, redis, settings)
    job = await client.enqueue("flow_echo", shop=SHOP, input={"product": "p"})
    await client.pause_shop(SHOP)
    assert (await store.get_shop(database, SHOP)).paused  # type: ignore[union-attr]
    assert await redis.sismember(PAUSED, SHOP)
    assert await store.paused_shops(database) == [SHOP]
    view = await client.get(job.id)
    assert view is not None and view.paused and view.status == "pending"
    await client.resume_shop(SHOP)
    assert not await redis.sismember(PAUSED, SHOP)
    assert not (await client.get(job.id)).paused  # type: ignore[union-attr]

    paused = cli(env, "shops", "pause", SHOP)
    assert paused.returncode == 0, paused.stderr
    assert await redis.sismember(PAUSED, SHOP) and await store.paused_shops(database) == [SHOP]
    shown = cli(env, "jobs", "show", str(job.id))
    assert orjson.loads(shown.stdout.splitlines()[-1])["paused"] is True
    assert cli(env, "shops", "resume", SHOP).returncode == 0
    assert not await redis.sismember(PAUSED, SHOP) and await store.paused_shops(database) == []
    assert cli(env, "shops", "pause", "nobody.myshopify.com").returncode == 2

    admin_env = {**env, "DASHBOARD_USERNAME": USER, "DASHBOARD_PASSWORD": PASSWORD}
    _, web = start_web(spawn, admin_env)
    admin = settings.model_copy(
        update={"dashboard_username": USER, "dashboard_password": SecretStr(PASSWORD)}
    )
    auth = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
    form = {"csrf": csrf_token(admin), "shop": SHOP}
    async with httpx.AsyncClient(base_url=web, headers=auth) as http:
        answer = await http.post("/admin/shops/pause", data=form)
        assert answer.status_code == 303 and "shop-paused" in answer.headers["location"]
        assert await redis.sismember(PAUSED, SHOP)
        page = await http.get("/admin/")
        assert 'data-paused="true"' in page.text and 'id="paused-shops"' in page.text
        assert (await http.post("/admin/shops/resume", data=form)).status_code == 303
    assert not await redis.sismember(PAUSED, SHOP) and await store.paused_shops(database) == []
    assert shop.id  # the shop row is the same one throughout


# -- uninstalled shops ---------------------------------------------------------------------


async def test_uninstall_fails_the_shops_unfinished_jobs(
    database: Database, redis: ArqRedis, settings: Settings
) -> None:
    shop = await make_shop(database, SHOP)
    other = await make_shop(database, OTHER)
    client = client_of(database, redis, settings)
    due = await client.enqueue("flow_echo", shop=SHOP, input={"product": "1"})
    later = await client.enqueue("flow_echo", shop=SHOP, input={"product": "2"}, delay=3600)
    kept = await client.enqueue("flow_echo", shop=OTHER, input={"product": "3"})
    assert await store.mark_shop_uninstalled(database, SHOP)
    for job_id in (due.id, later.id):
        job = await store.get_job(database, job_id)
        assert job is not None and job.status == "failed"
        assert job.error_message == "Shop uninstalled" and job.error_public
    assert (await store.get_job(database, kept.id)).status == "pending"  # type: ignore[union-attr]
    assert shop.id != other.id


async def test_a_job_that_slips_past_the_uninstall_fails_at_its_claim(
    spawn, env, database: Database, redis: ArqRedis
) -> None:
    shop = await make_shop(database, SHOP)
    job_id = await add_job(database, redis, shop, {"product": "x"}, "flow_echo")
    # Uninstalled behind the uninstall's back (a claim racing it): the job is still pending.
    await database.execute(
        "UPDATE shops SET uninstalled_at = now() WHERE id = :id", {"id": shop.id}
    )
    start_worker(spawn, env, wrap=flow_command)
    job = await wait_for_status(database, job_id, {"failed", "completed"})
    assert job.status == "failed" and job.error_message == "Shop uninstalled"


# -- retry and cancel by filter ------------------------------------------------------------


async def _failed(database: Database, redis: ArqRedis, shop: store.Shop, n: int, job_type: str,
                  message: str = "boom") -> list[uuid.UUID]:  # fmt: skip
    ids = [await add_job(database, redis, shop, {"product": str(i)}, job_type, enqueue=False)
           for i in range(n)]  # fmt: skip
    await database.execute(
        "UPDATE jobs SET status = 'failed', error_message = :m, finished_at = now() "
        "WHERE id = ANY(CAST(:ids AS uuid[]))",
        {"m": message, "ids": [str(i) for i in ids]},
    )
    return ids


async def test_retry_and_cancel_by_filter_from_the_cli(
    spawn, env, database: Database, redis: ArqRedis, settings: Settings
) -> None:
    shop, other = await make_shop(database, SHOP), await make_shop(database, OTHER)
    mine = await _failed(database, redis, shop, 7, "flow_echo")
    await _failed(database, redis, shop, 2, "flow_echo", message="Cancelled")
    await _failed(database, redis, other, 3, "flow_echo")
    await _failed(database, redis, shop, 4, "limited")
    old = datetime.now(UTC) - timedelta(days=2)
    await database.execute(
        "UPDATE jobs SET created_at = :t WHERE id = :id", {"t": old, "id": mine[0]}
    )
    after = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    args = ["jobs", "retry", "--shop", SHOP, "--type", "flow_echo", "--created-after", after]
    dry = cli(env, *args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert orjson.loads(dry.stdout.splitlines()[-1])["matched"] == 6
    assert await database.fetch_val("SELECT count(*) FROM jobs WHERE status = 'pending'") == 0
    done = cli(env, *args)
    assert orjson.loads(done.stdout.splitlines()[-1])["retried"] == 6
    counts = dict(
        (r["status"], r["n"])
        for r in await database.fetch_all("SELECT status, count(*) AS n FROM jobs GROUP BY status")
    )
    assert counts == {"pending": 6, "failed": 16 - 6}
    assert (await store.get_job(database, mine[0])).status == "failed"  # type: ignore[union-attr]
    # The retried jobs are queued again: a worker runs them.
    start_worker(spawn, env, wrap=flow_command)
    for job_id in mine[1:]:
        await wait_for_status(database, job_id, {"completed"})

    # Cancel by filter: the waiting jobs of one type and shop.
    client = client_of(database, redis, settings)
    waiting = [await client.enqueue("limited", shop=OTHER, input={"n": i}, delay=3600)
               for i in range(5)]  # fmt: skip
    mine_later = await client.enqueue("limited", shop=SHOP, input={}, delay=3600)
    cancel = ["jobs", "cancel", "--shop", OTHER, "--type", "limited"]
    assert orjson.loads(cli(env, *cancel, "--dry-run").stdout.splitlines()[-1])["matched"] == 5
    assert orjson.loads(cli(env, *cancel).stdout.splitlines()[-1])["cancelled"] == 5
    for job in waiting:
        row = await store.get_job(database, job.id)
        assert row is not None and row.status == "failed" and row.error_message == "Cancelled"
    assert (await store.get_job(database, mine_later.id)).status == "pending"  # type: ignore[union-attr]


async def test_retry_and_cancel_by_filter_in_bounded_batches_and_from_the_dashboard(
    spawn, env, database: Database, redis: ArqRedis, settings: Settings, monkeypatch
) -> None:
    shop = await make_shop(database, SHOP)
    ids = await _failed(database, redis, shop, 12, "limited")
    from service.store import control

    sizes: list[int] = []
    real = control.retry_matching

    async def counted(db: Database, filters: store.FlowFilter) -> list[tuple[uuid.UUID, str, str]]:
        batch = await real(db, filters)
        sizes.append(len(batch))
        return batch

    monkeypatch.setattr(control, "BATCH_SIZE", 5)
    monkeypatch.setattr(store, "BATCH_SIZE", 5)
    monkeypatch.setattr(store, "retry_matching", counted)
    client = client_of(database, redis, settings)
    assert await client.retry_matching(store.FlowFilter(job_type="limited")) == 12
    assert sizes == [5, 5, 2]
    statuses = await database.fetch_all(
        "SELECT DISTINCT status FROM jobs WHERE id = ANY(CAST(:ids AS uuid[]))",
        {"ids": [str(i) for i in ids]},
    )
    assert [r["status"] for r in statuses] == ["pending"]
    monkeypatch.undo()

    await database.execute("UPDATE jobs SET status = 'failed', error_message = 'x'")
    admin_env = {**env, "DASHBOARD_USERNAME": USER, "DASHBOARD_PASSWORD": PASSWORD}
    _, web = start_web(spawn, admin_env)
    admin = settings.model_copy(
        update={"dashboard_username": USER, "dashboard_password": SecretStr(PASSWORD)}
    )
    auth = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
    query = {"action": "retry", "shop": SHOP, "type": "limited", "status": "failed"}
    async with httpx.AsyncClient(base_url=web, headers=auth) as http:
        page = await http.get("/admin/bulk", params=query)
        assert page.status_code == 200 and 'data-count="12"' in page.text
        assert await database.fetch_val("SELECT count(*) FROM jobs WHERE status = 'pending'") == 0
        answer = await http.post("/admin/bulk", data={**query, "csrf": csrf_token(admin)})
        assert answer.status_code == 303 and "n=12" in answer.headers["location"]
        assert await database.fetch_val("SELECT count(*) FROM jobs WHERE status = 'pending'") == 12
        cancel = {"action": "cancel", "shop": SHOP}
        page = await http.get("/admin/bulk", params=cancel)
        assert 'data-count="12"' in page.text
        answer = await http.post("/admin/bulk", data={**cancel, "csrf": csrf_token(admin)})
        assert "n=12" in answer.headers["location"]
        refused = await http.post("/admin/bulk", data=cancel)
        assert refused.status_code == 403  # no CSRF token: nothing done
    assert (
        await database.fetch_val("SELECT count(*) FROM jobs WHERE error_message = 'Cancelled'")
        == 12
    )
