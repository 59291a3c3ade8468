"""The Postgres-side guards of the claim, the batch's end and a run's outcome, each proved on its
own against the real Postgres (service/store/): a job under a live lease is not claimed; two
claims of one job at the same moment on two connections make one winner; a batch does not end
while a child is still to run; a worker that lost its lease writes no `failed` or `retrying`.

Each test fails when its guard is removed from the SQL (a hand mutation audit, issue 23):
CLAIMABLE's live-lease clause, `FOR UPDATE SKIP LOCKED` in the batch claim, the unfinished
child statuses in the batch's end, HELD_BY_OWNER in the fail, retry and give-back writes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest
from databases import Database

from service import store
from service.core.settings import Settings
from service.core.states import ClaimResult
from tests.support.faults import wait_until

LEASE_SECONDS = 30.0  # long: no lease here lapses by itself while a test runs


async def add_job(
    database: Database,
    shop: store.Shop,
    status: str = "pending",
    parent_id: uuid.UUID | None = None,
    batch: dict[str, Any] | None = None,
) -> uuid.UUID:
    """A job row as the web (or a parent's batch) writes it, in `status`."""
    job_id = uuid.uuid4()
    await database.execute(
        """INSERT INTO jobs (id, shop_id, type, input, status, parent_id, batch)
           VALUES (:id, :shop, 'echo', '{}'::jsonb, :status, :parent, CAST(:batch AS jsonb))""",
        {
            "id": job_id,
            "shop": shop.id,
            "status": status,
            "parent": parent_id,
            "batch": None if batch is None else orjson.dumps(batch).decode(),
        },
    )
    return job_id


async def row(database: Database, job_id: uuid.UUID) -> dict[str, Any]:
    found = await database.fetch_one(
        """SELECT status, lease_owner, lease_expires_at, attempts, retry_count, error_message,
                  run_at, finished_at
             FROM jobs WHERE id = :id""",
        {"id": job_id},
    )
    assert found is not None
    return dict(found._mapping)


async def claim_one(database: Database, job_id: uuid.UUID, owner: str) -> store.Claim:
    claims, unclaimed = await store.claim_jobs(database, [job_id], owner, LEASE_SECONDS)
    assert unclaimed == {} and [c.id for c in claims] == [job_id]
    return claims[0]


async def expire_lease(database: Database, job_id: uuid.UUID) -> None:
    """The holder stalled past its lease (or died): as the clock would leave it."""
    await database.execute(
        "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = :id",
        {"id": job_id},
    )


@pytest.fixture
async def shop(database: Database) -> store.Shop:
    return await store.upsert_shop(database, "guards.myshopify.com", "shpat_test", "read_products")


# -- a2: a job whose row a writer has locked, not a worker ----------------------------------


async def test_a_job_locked_by_an_uncommitted_wake_is_busy_not_held(
    database: Database, settings: Settings, shop: store.Shop
) -> None:
    """A wake (or a cancel) updates a waiting job's row in a transaction: a worker that takes
    the job's entry before it commits finds the row locked. That is BUSY (claim again in a
    moment), not HELD (a live worker runs it: look again a whole lease later), which made a
    bulk report woken by its webhook start a lease late."""
    job_id = await add_job(database, shop, status="processing")
    await database.execute(
        "UPDATE jobs SET wait_for = 'event', wait_name = 'go' WHERE id = :id", {"id": job_id}
    )
    writer = await asyncpg.connect(settings.database_url)
    try:
        locking = writer.transaction()
        await locking.start()
        await writer.execute("UPDATE jobs SET run_at = now() WHERE id = $1", job_id)
        claims, unclaimed = await store.claim_jobs(database, [job_id], "worker-a", LEASE_SECONDS)
        assert claims == [] and unclaimed == {job_id: ClaimResult.BUSY}
        await locking.commit()
    finally:
        await writer.close()
    await claim_one(database, job_id, "worker-a")  # committed: the same claim takes it


# -- a: a job under a live lease -------------------------------------------------------------


async def test_a_job_under_a_live_lease_is_not_claimed(
    database: Database, shop: store.Shop
) -> None:
    job_id = await add_job(database, shop)
    await claim_one(database, job_id, "worker-a")
    held = await row(database, job_id)

    claims, unclaimed = await store.claim_jobs(database, [job_id], "worker-b", LEASE_SECONDS)
    assert claims == [] and unclaimed == {job_id: ClaimResult.HELD}
    assert await row(database, job_id) == held  # lease, owner and start count untouched
    assert (held["status"], held["lease_owner"], held["attempts"]) == ("processing", "worker-a", 1)

    # The same claim once that lease has expired recovers the job: the lease alone refused it.
    await expire_lease(database, job_id)
    claims, _ = await store.claim_jobs(database, [job_id], "worker-b", LEASE_SECONDS)
    assert [(c.id, c.recovered) for c in claims] == [(job_id, True)]


# -- b: two claims of one job at the same moment --------------------------------------------


async def test_two_claims_of_one_job_at_the_same_moment_make_one_winner(
    database: Database, shop: store.Shop
) -> None:
    """Connection A has claimed the job and not yet committed (its row lock held) when
    connection B claims it. B must skip the locked row (SKIP LOCKED): it neither waits for A
    nor, had it read the row without locking it, claims the job a second time once A commits.
    The order is forced by A's open transaction, not by timing: B is awaited until it is done
    or seen waiting for A's lock in pg_stat_activity, and only then does A commit."""
    job_id = await add_job(database, shop)
    a_claimed = asyncio.Event()
    a_commit = asyncio.Event()
    pids: dict[str, int] = {}
    b_waited_for_a = False

    async def claim_and_hold() -> list[store.Claim]:
        try:
            async with database.connection() as conn, conn.transaction():
                pids["a"] = await conn.fetch_val("SELECT pg_backend_pid()")
                claims, _ = await store.claim_jobs(database, [job_id], "worker-a", LEASE_SECONDS)
                a_claimed.set()
                await a_commit.wait()
        finally:
            a_claimed.set()  # also when A failed: the test then stops at `await a`
        return claims

    async def claim_meanwhile() -> tuple[list[store.Claim], dict[uuid.UUID, ClaimResult]]:
        async with database.connection() as conn:
            pids["b"] = await conn.fetch_val("SELECT pg_backend_pid()")
            return await store.claim_jobs(database, [job_id], "worker-b", LEASE_SECONDS)

    a = asyncio.create_task(claim_and_hold())
    tasks = [a]
    try:
        await a_claimed.wait()
        b = asyncio.create_task(claim_meanwhile())
        tasks.append(b)

        async def b_done_or_blocked() -> bool:
            nonlocal b_waited_for_a
            if b.done():
                return True
            b_waited_for_a = bool(
                await database.fetch_val(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :pid",
                    {"pid": pids.get("b", -1)},
                )
            )
            return b_waited_for_a

        await wait_until(b_done_or_blocked, 30, "B's claim returns or waits for A's lock")
        a_commit.set()
        a_claims = await a
        b_claims, b_unclaimed = await b
    finally:
        a_commit.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert pids["a"] != pids["b"]
    assert [c.id for c in a_claims] == [job_id]
    # B saw the row locked by a claim not yet committed: BUSY, claim again in a moment; by
    # then A has committed and B is told a live worker holds it.
    assert b_claims == [] and b_unclaimed == {job_id: ClaimResult.BUSY}
    won = await row(database, job_id)
    assert (won["lease_owner"], won["attempts"]) == ("worker-a", 1)
    assert not b_waited_for_a, "B waited for A's row lock instead of skipping the row"
    again = await store.claim_jobs(database, [job_id], "worker-b", LEASE_SECONDS)
    assert again == ([], {job_id: ClaimResult.HELD})


# -- c: a batch whose child is still to run --------------------------------------------------


@pytest.mark.parametrize("unfinished", ["retrying", "pending", "processing"])
async def test_a_batch_does_not_end_while_a_child_is_still_to_run(
    database: Database, shop: store.Shop, unfinished: str
) -> None:
    spec = {"on_complete": "echo", "fail_on_child_failure": False}
    parent = await add_job(database, shop, status="processing", batch=spec)
    await add_job(database, shop, status="completed", parent_id=parent)
    await add_job(database, shop, status="failed", parent_id=parent)
    child = await add_job(database, shop, status=unfinished, parent_id=parent)

    # Neither the worker's look (its parent named) nor the reconciler's (any parent) ends it.
    assert await store.finish_batches(database, [parent]) == (0, [])
    assert await store.finish_batches(database, None) == (0, [])
    waiting = await row(database, parent)
    assert (waiting["status"], waiting["finished_at"]) == ("processing", None)
    # No follow-up written either: the parent is still the only job outside the batch.
    assert await database.fetch_val("SELECT count(*) FROM jobs WHERE parent_id IS NULL") == 1

    # Its last child final, the same look ends it: only that child held it back.
    await database.execute("UPDATE jobs SET status = 'completed' WHERE id = :id", {"id": child})
    finished, follow_ups = await store.finish_batches(database, [parent])
    assert finished == 1 and [f.type for f in follow_ups] == ["echo"]
    job = await store.get_job(database, parent)
    assert job is not None and job.status == "completed"
    assert job.result == {"completed": 2, "failed": 1, "result": None}


# -- d: a run that lost its lease ------------------------------------------------------------

LostWrite = Callable[[Database, uuid.UUID, str], Awaitable[bool]]


async def _fail(database: Database, job_id: uuid.UUID, owner: str) -> bool:
    return await store.fail_job(database, job_id, owner, 1, "boom")


async def _retry(database: Database, job_id: uuid.UUID, owner: str) -> bool:
    return await store.schedule_retry(database, job_id, owner, 1, "boom", 0.0)


async def _give_back(database: Database, job_id: uuid.UUID, owner: str) -> bool:
    return await store.release_job(database, job_id, owner)


@pytest.mark.parametrize(
    ("write", "status"),
    [(_fail, "failed"), (_retry, "retrying"), (_give_back, "retrying")],
    ids=["fail", "retry", "give-back"],
)
async def test_a_run_that_lost_its_lease_writes_no_failed_or_retrying(
    database: Database, shop: store.Shop, write: LostWrite, status: str
) -> None:
    job_id = await add_job(database, shop)
    await claim_one(database, job_id, "worker-a")
    # worker-a stalled past its lease; worker-b's claim took the job over.
    await expire_lease(database, job_id)
    assert (await claim_one(database, job_id, "worker-b")).recovered
    taken_over = await row(database, job_id)

    assert await write(database, job_id, "worker-a") is False
    assert await row(database, job_id) == taken_over  # worker-b's run is untouched
    assert (taken_over["status"], taken_over["lease_owner"]) == ("processing", "worker-b")

    # The holder's own write of the same outcome goes through: only the owner was wrong.
    assert await write(database, job_id, "worker-b") is True
    written = await row(database, job_id)
    assert (written["status"], written["lease_owner"]) == (status, None)
