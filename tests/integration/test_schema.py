"""schema.sql: what it constrains, and that it upgrades a database the previous release made."""

import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from databases import Database

from service import store
from service.core.db import apply_schema, create_database
from service.core.states import ClaimResult, JobStatus
from tests.support.config import ROOT
from tests.support.jobs import shop_with_tokens

# schema.sql as the release before the fault suite's echo_effects table left it (commit 6981a7e).
PREVIOUS_SCHEMA = ROOT / "tests" / "support" / "fixtures" / "schema_previous.sql"
# schema.sql as the last release left it (commit ba68d5e: batches, schedules, bulk operations,
# the embedded admin), before `jobs.error_public`.
LAST_RELEASE_SCHEMA = ROOT / "tests" / "support" / "fixtures" / "schema_wave2_start.sql"


async def test_schema_applies_twice(database: Database) -> None:
    await apply_schema(database)
    await apply_schema(database)
    tables = {
        r._mapping["tablename"]
        for r in await database.fetch_all(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
    }
    assert {"shops", "jobs"} <= tables


async def test_status_is_constrained(database: Database) -> None:
    shop = await store.upsert_shop(database, "a-shop.myshopify.com", "tok", "")
    with pytest.raises(asyncpg.CheckViolationError):
        await database.execute(
            "INSERT INTO jobs (id, shop_id, type, status) VALUES (:id, :shop, 'echo', 'lost')",
            {"id": uuid.uuid4(), "shop": shop.id},
        )


async def test_shop_domain_is_constrained(database: Database) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await store.upsert_shop(database, "evil.example.com", "tok", "")


async def test_indexes_exist(database: Database) -> None:
    names = {
        r._mapping["indexname"]
        for r in await database.fetch_all(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'"
        )
    }
    assert {"jobs_shop_created_idx", "jobs_status_updated_idx", "jobs_idempotency"} <= names


async def test_status_check_lists_exactly_the_job_statuses(database: Database) -> None:
    """The CHECK on jobs.status, as the live database holds it, allows JobStatus and no more."""
    definition = await database.fetch_val(
        """SELECT pg_get_constraintdef(c.oid) FROM pg_constraint AS c
            WHERE c.conrelid = 'jobs'::regclass AND c.contype = 'c'
              AND pg_get_constraintdef(c.oid) LIKE '%status%'"""
    )
    assert set(re.findall(r"'([a-z_]+)'::text", definition)) == set(JobStatus)


def _database_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@asynccontextmanager
async def _scratch_database(
    database: Database, env: dict[str, str]
) -> AsyncIterator[tuple[Database, str]]:
    """A database of its own on the test server, connected: (it, its URL); dropped after."""
    name = f"upgrade_{uuid.uuid4().hex[:12]}"
    await database.execute(f"CREATE DATABASE {name}")
    url = _database_url(env["DATABASE_URL"], name)
    scratch = create_database(url, min_size=1, max_size=2)
    await scratch.connect()
    try:
        yield scratch, url
    finally:
        await scratch.disconnect()
        await database.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _make_db(env: dict[str, str], url: str) -> None:
    """What `make db` runs (python -m service db apply), against `url`."""
    applied = subprocess.run(
        [sys.executable, "-m", "service", "db", "apply"],
        env={**env, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr


async def test_a_database_made_by_the_previous_schema_upgrades_in_place(
    database: Database, env: dict[str, str]
) -> None:
    """`make db` (python -m service db apply) over a database the previous release made, with
    rows in it: the rows stay, the fault suite's echo_effects table is dropped, and the store
    works on the result."""
    async with _scratch_database(database, env) as (old, url):
        async with old.connection() as connection:
            raw = connection.raw_connection
            await raw.execute(PREVIOUS_SCHEMA.read_text())
            shop_id = await raw.fetchval(
                "INSERT INTO shops (domain, access_token, scopes) "
                "VALUES ('old-shop.myshopify.com', 'tok', 'read_products') RETURNING id"
            )
            done, waiting = uuid.uuid4(), uuid.uuid4()
            await raw.execute(
                """INSERT INTO jobs (id, shop_id, type, input, status, result, finished_at)
                   VALUES ($1, $3, 'echo', '{"message": "done"}', 'completed',
                           '{"message": "done"}', now()),
                          ($2, $3, 'echo', '{"message": "waiting"}', 'pending', NULL, NULL)""",
                done, waiting, shop_id,
            )  # fmt: skip
            cancelled, crashed = uuid.uuid4(), uuid.uuid4()
            await raw.execute(
                """INSERT INTO jobs (id, shop_id, type, status, error_message)
                   VALUES ($1, $3, 'echo', 'failed', 'Cancelled'),
                          ($2, $3, 'echo', 'failed', 'connection to 10.0.0.7 refused')""",
                cancelled, crashed, shop_id,
            )  # fmt: skip
            await raw.execute(
                "INSERT INTO webhook_events (event_id, topic, shop_domain) "
                "VALUES ('ev-1', 'products/update', 'old-shop.myshopify.com')"
            )
            await raw.execute(
                "INSERT INTO echo_effects (job_id, run, mode) VALUES ($1, 1, 'with_completion')",
                done,
            )

        _make_db(env, url)

        shop = await shop_with_tokens(old, "old-shop.myshopify.com")  # decrypted if encrypted
        assert shop is not None and shop.id == shop_id and shop.access_token == "tok"
        finished = await store.get_job(old, done)
        assert finished is not None
        assert (finished.status, finished.result) == (JobStatus.COMPLETED, {"message": "done"})
        assert finished.staff_user_id is None  # the embedded admin's column, added in place
        # error_public, added in place: a cancel is the worker's own word, anything else the
        # generic text (its origin is unknown).
        old_cancel, old_crash = (
            await store.get_job(old, cancelled),
            await store.get_job(old, crashed),
        )
        assert old_cancel is not None and old_cancel.shown_error == "Cancelled"
        assert old_crash is not None and old_crash.shown_error == "The job failed"
        assert not finished.error_public
        tables = {
            r._mapping["tablename"]
            for r in await old.fetch_all(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        assert tables == {"shops", "jobs", "webhook_events", "schedule_ticks"}
        assert not await store.record_webhook_event(
            old,
            event_id="ev-1",
            topic="products/update",
            shop_domain=shop.domain,
            webhook_id=None,
            api_version=None,
        )
        # The new column is there, empty for old rows, and usable (bulk operations).
        assert await store.bulk_operation_of(old, waiting) is None
        await store.keep_bulk_operation(old, waiting, "gid://shopify/BulkOperation/1")
        assert await store.bulk_operation_of(old, waiting) == "gid://shopify/BulkOperation/1"
        # The pending job runs to completion on the upgraded schema.
        claims, unclaimed = await store.claim_jobs(old, [waiting, done], "upgrade-test", 30)
        assert [c.id for c in claims] == [waiting] and unclaimed == {done: ClaimResult.SKIP}
        assert await store.complete_jobs(old, [(waiting, "upgrade-test", '{"ok": true}')]) == [True]
        ran = await store.get_job(old, waiting)
        assert ran is not None and (ran.status, ran.result) == (JobStatus.COMPLETED, {"ok": True})
        # The old rows have no parent and are no batch; the new columns and table take rows.
        assert (ran.parent_id, ran.batch, finished.parent_id, finished.batch) == (None,) * 4
        child, created = await store.create_job(
            old, shop_id=shop_id, job_type="echo", job_input={}, parent_id=waiting
        )
        assert created and child.parent_id == waiting
        assert (await store.batch_counts(old, waiting))["total"] == 1
        assert await store.create_tick_jobs(
            old, "echo", datetime(2030, 1, 1, tzinfo=UTC), per_shop=True, input_json="{}",
            interval_seconds=60,
        ) == []  # fmt: skip
        assert await store.schedule_ticks(old) == {"echo": datetime(2030, 1, 1, tzinfo=UTC)}


async def test_a_database_made_by_the_last_release_upgrades_in_place(
    database: Database, env: dict[str, str]
) -> None:
    """`make db` twice over a database the last release made, with a batch, failed jobs and a
    schedule tick in it: they stay as they were, and `error_public` is added in place."""
    async with _scratch_database(database, env) as (old, url):
        parent, child, cancelled, refused, crashed = (uuid.uuid4() for _ in range(5))
        async with old.connection() as connection:
            raw = connection.raw_connection
            await raw.execute(LAST_RELEASE_SCHEMA.read_text())
            shop_id = await raw.fetchval(
                "INSERT INTO shops (domain, access_token, scopes) "
                "VALUES ('last-shop.myshopify.com', 'tok', 'read_products') RETURNING id"
            )
            await raw.execute(
                """INSERT INTO jobs (id, shop_id, type, status, batch, staff_user_id)
                   VALUES ($1, $2, 'echo', 'processing', '{"total": 1}', '42')""",
                parent, shop_id,
            )  # fmt: skip
            await raw.execute(
                """INSERT INTO jobs (id, shop_id, type, status, parent_id, run_at)
                   VALUES ($1, $2, 'echo', 'pending', $3, now())""",
                child, shop_id, parent,
            )  # fmt: skip
            await raw.execute(
                """INSERT INTO jobs (id, shop_id, type, status, error_message)
                   VALUES ($1, $4, 'echo', 'failed', 'Cancelled'),
                          ($2, $4, 'echo', 'failed', 'Product 7 not found'),
                          ($3, $4, 'echo', 'failed', 'connection to 10.0.0.7 refused')""",
                cancelled, refused, crashed, shop_id,
            )  # fmt: skip
            await raw.execute(
                "INSERT INTO schedule_ticks (job_type, tick) VALUES ('catalogue_audit', $1)",
                datetime(2030, 1, 1, tzinfo=UTC),
            )

        for _ in range(2):  # `make db` is idempotent: the second run changes nothing
            _make_db(env, url)

        shown = {}
        for job_id in (cancelled, refused, crashed):
            job = await store.get_job(old, job_id)
            assert job is not None and job.status == JobStatus.FAILED
            shown[job_id] = (job.error_message, job.shown_error)
        # Only the cancel is known to be the worker's own word; the others' origin is unknown.
        assert shown == {
            cancelled: ("Cancelled", "Cancelled"),
            refused: ("Product 7 not found", "The job failed"),
            crashed: ("connection to 10.0.0.7 refused", "The job failed"),
        }
        kid = await store.get_job(old, child)
        top = await store.get_job(old, parent)
        assert kid is not None and kid.parent_id == parent and kid.run_at is not None
        assert top is not None and top.staff_user_id == "42" and top.batch == {"total": 1}
        assert (await store.batch_counts(old, parent))["total"] == 1
        assert await store.schedule_ticks(old) == {
            "catalogue_audit": datetime(2030, 1, 1, tzinfo=UTC)
        }
        shop = await shop_with_tokens(old, "last-shop.myshopify.com")
        assert shop is not None and shop.access_token == "tok"
        claims, _ = await store.claim_jobs(old, [child], "upgrade-test", 30)
        assert [c.id for c in claims] == [child]
