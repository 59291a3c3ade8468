"""The schema: what it constrains, its migrations, and that they upgrade every earlier release's
database in place to exactly what schema.sql describes."""

import asyncio
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from databases import Database

from service import store
from service.core.db import create_database
from service.core.settings import Settings
from service.core.states import ClaimResult, JobStatus
from service.migrations import MIGRATIONS, Migration, MigrationError, apply_migrations
from tests.support.config import ROOT
from tests.support.jobs import shop_with_tokens

FIXTURES = ROOT / "tests" / "support" / "fixtures"
SCHEMA = ROOT / "schema.sql"
# schema.sql as the release before the fault suite's echo_effects table left it (commit 6981a7e).
PREVIOUS_SCHEMA = FIXTURES / "schema_previous.sql"
# schema.sql as the last release left it (commit ba68d5e: batches, schedules, bulk operations,
# the embedded admin), before `jobs.error_public`.
LAST_RELEASE_SCHEMA = FIXTURES / "schema_wave2_start.sql"
# schema.sql as the last release without migrations left it (commit 120a921): what 0001 is.
UNVERSIONED_SCHEMA = FIXTURES / "schema_wave2_end.sql"
EARLIER_RELEASES = [PREVIOUS_SCHEMA, LAST_RELEASE_SCHEMA, UNVERSIONED_SCHEMA]


async def test_migrations_apply_once(database: Database) -> None:
    """The test database was migrated at start-up: every version is recorded, nothing runs again."""
    assert await apply_migrations(database) == []
    assert await apply_migrations(database) == []
    assert await _versions(database) == [(m.version, m.name) for m in MIGRATIONS]


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


def _make_db(env: dict[str, str], url: str) -> str:
    """What `make db` runs (python -m service db apply), against `url`; what it printed."""
    applied = subprocess.run(
        [sys.executable, "-m", "service", "db", "apply"],
        env={**env, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr
    return applied.stdout


async def _versions(database: Database) -> list[tuple[int, str]]:
    rows = await database.fetch_all("SELECT version, name FROM schema_migrations ORDER BY version")
    return [(r._mapping["version"], r._mapping["name"]) for r in rows]


async def _run_script(database: Database, sql: str) -> None:
    """A whole SQL file, as psql would run it (several statements, DO blocks)."""
    async with database.connection() as connection:
        await connection.raw_connection.execute(sql)


# What makes two schemas the same, read from the catalogue in Postgres' own normalised text,
# in a fixed order (columns in table order: `SELECT *` and COPY depend on it).
CATALOGUE = {
    "relations": """
        SELECT c.relname, c.relkind FROM pg_class AS c
          JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' ORDER BY 1""",
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, a.attcollation
          FROM pg_attribute AS a
          JOIN pg_class AS c ON c.oid = a.attrelid
          JOIN pg_namespace AS n ON n.oid = c.relnamespace
          LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
           AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY c.relname, a.attnum""",
    "constraints": """
        SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid)
          FROM pg_constraint AS k
          JOIN pg_class AS c ON c.oid = k.conrelid
          JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
         WHERE schemaname = 'public' ORDER BY 1, 2""",
    "sequences": """
        SELECT s.sequencename, s.data_type::text, s.start_value, s.increment_by, s.max_value,
               pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid)
          FROM pg_sequences AS s
          LEFT JOIN pg_depend AS d
            ON d.objid = format('%I.%I', s.schemaname, s.sequencename)::regclass
           AND d.classid = 'pg_class'::regclass AND d.deptype = 'a'
         WHERE s.schemaname = 'public' ORDER BY 1""",
    "triggers": """
        SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger AS t
          JOIN pg_class AS c ON c.oid = t.tgrelid
          JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND NOT t.tgisinternal ORDER BY 1, 2""",
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc AS p
          JOIN pg_namespace AS n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' ORDER BY 1, 2""",
}


async def _catalogue(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    async with database.connection() as connection:
        raw = connection.raw_connection
        return {name: [tuple(r) for r in await raw.fetch(sql)] for name, sql in CATALOGUE.items()}


async def test_schema_sql_describes_every_table_in_one_statement() -> None:
    """schema.sql is for reading: one CREATE TABLE per table, nothing added on later."""
    sql = SCHEMA.read_text()
    created = re.findall(r"^CREATE TABLE (\w+) \(", sql, re.MULTILINE)
    assert sorted(created) == sorted(set(created))
    assert set(created) == {
        "shops",
        "jobs",
        "webhook_events",
        "schedule_ticks",
        "job_steps",
        "job_events",
        "schema_migrations",
    }
    assert not re.search(r"^\s*(ALTER|DROP|DO|UPDATE|INSERT)\b", sql, re.MULTILINE | re.I)


@pytest.mark.parametrize(
    "origin", [None, *EARLIER_RELEASES], ids=lambda p: p.stem if p else "empty"
)
async def test_a_migrated_database_equals_schema_sql(
    database: Database, env: dict[str, str], origin: Path | None
) -> None:
    """`make db` over an empty database, and over each earlier release's, gives exactly the
    schema that schema.sql builds on an empty one (tables, columns and their order, types,
    defaults, NOT NULL, CHECK/FK/UNIQUE/PK constraints, indexes, sequences), and records every
    migration."""
    async with _scratch_database(database, env) as (reference, _):
        await _run_script(reference, SCHEMA.read_text())
        expected = await _catalogue(reference)
    async with _scratch_database(database, env) as (migrated, url):
        if origin is not None:
            await _run_script(migrated, origin.read_text())
        printed = _make_db(env, url)
        assert printed.splitlines() == [f"applied {m.label}" for m in MIGRATIONS]
        assert await _catalogue(migrated) == expected
        assert await _versions(migrated) == [(m.version, m.name) for m in MIGRATIONS]


async def test_concurrent_appliers_run_each_migration_once(
    database: Database, env: dict[str, str]
) -> None:
    """The web's and the worker's release commands at once: they take turns, each migration
    runs once, and both end without error."""
    async with _scratch_database(database, env) as (empty, url):
        other = create_database(url, min_size=1, max_size=1)
        await other.connect()
        try:
            first, second = await asyncio.gather(apply_migrations(empty), apply_migrations(other))
        finally:
            await other.disconnect()
        assert sorted(m.version for m in first + second) == [m.version for m in MIGRATIONS]
        assert await _versions(empty) == [(m.version, m.name) for m in MIGRATIONS]


async def test_a_failed_migration_leaves_only_the_ones_before_it(
    database: Database, env: dict[str, str]
) -> None:
    """Each migration is one transaction with its record: a failure undoes its own statements
    and is not recorded; fixed, it runs at the next apply. A version recorded under another
    name (renumbered, or two branches' 0002) is refused before anything runs."""
    added = Migration(len(MIGRATIONS) + 1, "adds_a_table", "CREATE TABLE later (id int)")
    broken = Migration(added.version + 1, "breaks", "CREATE TABLE half (id int); SELECT 1 / 0")
    fixed = Migration(broken.version, "breaks", "CREATE TABLE half (id int)")
    async with _scratch_database(database, env) as (db, _):
        with pytest.raises(asyncpg.DivisionByZeroError):
            await apply_migrations(db, (*MIGRATIONS, added, broken))
        assert [v for v, _ in await _versions(db)] == [
            *(m.version for m in MIGRATIONS),
            added.version,
        ]
        assert await db.fetch_val("SELECT to_regclass('later') IS NOT NULL")
        assert await db.fetch_val("SELECT to_regclass('half') IS NULL")

        renamed = Migration(added.version, "something_else", "CREATE TABLE other (id int)")
        with pytest.raises(MigrationError, match="adds_a_table"):
            await apply_migrations(db, (*MIGRATIONS, renamed, fixed))
        assert await db.fetch_val("SELECT to_regclass('half') IS NULL")

        assert await apply_migrations(db, (*MIGRATIONS, added, fixed)) == [fixed]
        assert await db.fetch_val("SELECT to_regclass('half') IS NOT NULL")


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
        assert tables == {
            "shops",
            "jobs",
            "webhook_events",
            "schedule_ticks",
            "job_steps",
            "job_events",
            "schema_migrations",
        }
        assert (
            await store.record_webhook_event(
                old,
                event_id="ev-1",
                topic="products/update",
                shop_domain=shop.domain,
                webhook_id=None,
                api_version=None,
                body_sha256=b"\0" * 32,
            )
            is store.WebhookRecord.DUPLICATE_EVENT
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


TABLES_WITH_ROWS = ("shops", "jobs", "webhook_events", "schedule_ticks")


async def _rows(database: Database) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table but the migration record, column by column, in key order."""
    return {
        table: [
            dict(r._mapping) for r in await database.fetch_all(f"SELECT * FROM {table} ORDER BY 1")
        ]
        for table in TABLES_WITH_ROWS
    }


async def test_the_first_migration_keeps_every_row_of_an_unversioned_database(
    database: Database, env: dict[str, str], settings: Settings
) -> None:
    """`make db` twice over a database release 120a921 made (no version recorded), with jobs in
    every state, a lease held, a batch half done: every row is as it was, column for column,
    the versions are recorded, and the work goes on."""
    now = datetime.now(UTC)
    ids = {name: uuid.uuid4() for name in (
        "pending", "running", "retrying", "completed", "failed", "parent", "child_done",
        "child_waiting", "child_failed",
    )}  # fmt: skip
    async with _scratch_database(database, env) as (old, url):
        async with old.connection() as connection:
            raw = connection.raw_connection
            await raw.execute(UNVERSIONED_SCHEMA.read_text())
            token = settings.token_cipher.encrypt("shpat_kept")  # `make db` leaves it as it is
            shop_id, gone_id = [
                await raw.fetchval(
                    "INSERT INTO shops (domain, access_token, scopes, uninstalled_at) "
                    "VALUES ($1, $2, 'read_products', $3) RETURNING id",
                    domain, token, uninstalled,
                )
                for domain, uninstalled in (
                    ("kept-shop.myshopify.com", None), ("gone-shop.myshopify.com", now),
                )
            ]  # fmt: skip
            await raw.executemany(
                """INSERT INTO jobs (id, shop_id, type, input, status, progress, progress_message,
                                     result, error_message, error_public, attempts, retry_count,
                                     customer_id, idempotency_key, source, lease_owner,
                                     lease_expires_at, run_at, started_at, finished_at,
                                     staff_user_id, bulk_operation_id, parent_id, batch)
                   VALUES ($1, $2, 'echo', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                           $15, $16, $17, $18, $19, $20, $21, $22, $23)""",
                [
                    (ids["pending"], shop_id, '{"message": "queued"}', "pending", 0, None, None,
                     None, False, 0, 0, "7", "key-1", "proxy", None, None, None, None, None,
                     None, None, None, None),
                    (ids["running"], shop_id, "{}", "processing", 40, "halfway", None, None,
                     False, 1, 0, None, None, "admin", "worker-a:1", now + timedelta(seconds=30),
                     None, now, None, "staff-9", "gid://shopify/BulkOperation/5", None, None),
                    (ids["retrying"], shop_id, "{}", "retrying", 0, None, None,
                     "timeout talking to Shopify", False, 2, 1, None, None, "webhook", None,
                     None, now + timedelta(minutes=5), now, None, None, None, None, None),
                    (ids["completed"], gone_id, "{}", "completed", 100, "done", '{"ok": true}',
                     None, False, 1, 0, None, None, "proxy", None, None, None, now, now, None,
                     None, None, None),
                    (ids["failed"], shop_id, "{}", "failed", 10, None, None, "Product 7 not found",
                     True, 3, 2, None, None, "proxy", None, None, None, now, now, None, None,
                     None, None),
                    (ids["parent"], shop_id, "{}", "processing", 33, None, None, None, False, 1, 0,
                     None, None, "app", "worker-b:2", now + timedelta(seconds=30), None, now,
                     None, None, None, None, '{"then": "echo", "fail_on_child": false}'),
                    (ids["child_done"], shop_id, "{}", "completed", 100, None, '{"n": 1}', None,
                     False, 1, 0, None, None, "app", None, None, None, now, now, None, None,
                     ids["parent"], None),
                    (ids["child_waiting"], shop_id, "{}", "pending", 0, None, None, None, False,
                     0, 0, None, None, "app", None, None, None, None, None, None, None,
                     ids["parent"], None),
                    (ids["child_failed"], shop_id, "{}", "failed", 0, None, None, "Cancelled",
                     True, 1, 0, None, None, "app", None, None, None, now, now, None, None,
                     ids["parent"], None),
                ],
            )  # fmt: skip
            await raw.execute(
                "INSERT INTO webhook_events (event_id, topic, shop_domain, job_id) "
                "VALUES ('ev-9', 'products/update', 'kept-shop.myshopify.com', $1)",
                ids["pending"],
            )
            await raw.execute(
                "INSERT INTO schedule_ticks (job_type, tick) VALUES ('catalogue_audit', $1)", now
            )
        before = await _rows(old)
        assert len(before["jobs"]) == len(ids)

        first, second = _make_db(env, url), _make_db(env, url)

        assert first.splitlines() == [f"applied {m.label}" for m in MIGRATIONS]
        assert second.splitlines() == [f"schema up to date at {MIGRATIONS[-1].label}"]
        after = await _rows(old)
        for event in after["webhook_events"]:
            assert event.pop("body_sha256") is None  # added by 0002, empty for older rows
        for job in after["jobs"]:  # added by 0003: no job of an older release waits
            assert (job.pop("wait_for"), job.pop("wait_until"), job.pop("wait_name")) == (
                None,
                None,
                None,
            )
            assert job.pop("trace_context") is None  # added by 0004: no trace context before
        for job in after["jobs"]:  # added by 0005: no job of an older release holds a key
            keys = (job.pop("debounce_key"), job.pop("debounce_until"), job.pop("unique_key"))
            assert keys == (None, None, None)
        for shop in after["shops"]:  # added by 0005: no shop of an older release is paused
            assert shop.pop("paused_at") is None
        assert after == before
        assert await _versions(old) == [(m.version, m.name) for m in MIGRATIONS]
        # The work goes on: the lease is still honoured, the waiting child runs, the batch counts.
        claims, refused = await store.claim_jobs(
            old, [ids["running"], ids["child_waiting"]], "upgrade-test", 30
        )
        assert [c.id for c in claims] == [ids["child_waiting"]]
        assert refused == {ids["running"]: ClaimResult.HELD}
        counts = await store.batch_counts(old, ids["parent"])
        assert [counts[s] for s in ("completed", "processing", "failed", "total")] == [1, 1, 1, 3]
