"""Every SQL statement the project runs against shops and jobs, in one place.

Functions take the `databases.Database` they act on; nothing else in the tree writes SQL for
these tables, so a reader reviews all of it here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import orjson
from databases import Database

from jobs.types import CompletionWrite
from service.core.token_cipher import TokenCipher, TokenDecryptError


@dataclass(frozen=True)
class Shop:
    id: int
    domain: str
    access_token: str | None
    scopes: str
    uninstalled_at: datetime | None
    token_expires_at: datetime | None = None  # None: a non-expiring offline token
    refresh_token: str | None = None
    refresh_token_expires_at: datetime | None = None

    @property
    def installed(self) -> bool:
        return self.uninstalled_at is None

    def __repr__(self) -> str:  # tokens stay out of logs and tracebacks
        return f"Shop(id={self.id}, domain={self.domain!r}, installed={self.installed})"


SHOP_COLUMNS = (
    "id, domain, access_token, scopes, uninstalled_at, "
    "token_expires_at, refresh_token, refresh_token_expires_at"
)
# The same without the token columns (read as NULL): what the web reads. Only the worker, which
# calls the Admin API, ever reads a token (service/shopify/tokens.py decrypts it).
SHOP_COLUMNS_WITHOUT_TOKENS = (
    "id, domain, NULL::text AS access_token, scopes, uninstalled_at, "
    "token_expires_at, NULL::text AS refresh_token, refresh_token_expires_at"
)


def _fields(row: Any) -> Any:
    """A row's columns by name, from `databases` or from asyncpg directly."""
    return row._mapping if hasattr(row, "_mapping") else row


@asynccontextmanager
async def _raw(database: Database) -> AsyncIterator[asyncpg.Connection]:
    """asyncpg itself, for the hot paths: positional parameters and asyncpg's prepared-statement
    cache, without `databases` compiling an SQLAlchemy `text()` for every call."""
    async with database.connection() as connection:
        yield connection.raw_connection


def _shop(row: object) -> Shop | None:
    if row is None:
        return None
    m = _fields(row)
    return Shop(**{name: m[name] for name in SHOP_COLUMNS.split(", ")})


# -- shops -------------------------------------------------------------------------------


async def upsert_shop(
    database: Database,
    domain: str,
    access_token: str,
    scopes: str,
    *,
    token_expires_at: datetime | None = None,
    refresh_token: str | None = None,
    refresh_token_expires_at: datetime | None = None,
) -> Shop:
    """Register (or re-install) a shop with an offline Admin API token (expiring or not).

    The tokens are stored as given: callers pass them encrypted (`TokenCipher.encrypt`).
    """
    row = await database.fetch_one(
        f"""
        INSERT INTO shops (domain, access_token, scopes, token_expires_at, refresh_token,
                           refresh_token_expires_at)
        VALUES (:domain, :token, :scopes, :expires, :refresh, :refresh_expires)
        ON CONFLICT (domain) DO UPDATE
            SET access_token = EXCLUDED.access_token, scopes = EXCLUDED.scopes,
                token_expires_at = EXCLUDED.token_expires_at,
                refresh_token = EXCLUDED.refresh_token,
                refresh_token_expires_at = EXCLUDED.refresh_token_expires_at,
                installed_at = CASE WHEN shops.uninstalled_at IS NULL
                                    THEN shops.installed_at ELSE now() END,
                uninstalled_at = NULL, updated_at = now()
        RETURNING {SHOP_COLUMNS_WITHOUT_TOKENS}
        """,
        {
            "domain": domain,
            "token": access_token,
            "scopes": scopes,
            "expires": token_expires_at,
            "refresh": refresh_token,
            "refresh_expires": refresh_token_expires_at,
        },
    )
    shop = _shop(row)
    assert shop is not None
    return shop


async def get_shop(database: Database, domain: str, *, tokens: bool = False) -> Shop | None:
    """The shop; its token columns (still encrypted) only when `tokens` asks for them."""
    columns = SHOP_COLUMNS if tokens else SHOP_COLUMNS_WITHOUT_TOKENS
    async with _raw(database) as raw:
        row = await raw.fetchrow(f"SELECT {columns} FROM shops WHERE domain = $1", domain)
    return _shop(row)


async def encrypt_stored_tokens(database: Database, cipher: TokenCipher) -> int:
    """Encrypt, under the first key, every token stored in clear (by an earlier version) or
    under an older key; returns how many shops were rewritten.

    Each row is rewritten only if its tokens are still what was read, so a token refreshed
    meanwhile by another worker is never overwritten with an older one.
    """
    rewritten = 0
    async with _raw(database) as raw:
        rows = await raw.fetch(
            "SELECT id, access_token, refresh_token FROM shops "
            "WHERE access_token IS NOT NULL OR refresh_token IS NOT NULL"
        )
        for row in rows:
            old_access, old_refresh = row["access_token"], row["refresh_token"]
            if cipher.current(old_access) and cipher.current(old_refresh):
                continue
            try:
                access = cipher.encrypt_optional(cipher.decrypt(old_access))
                refresh = cipher.encrypt_optional(cipher.decrypt(old_refresh))
            except TokenDecryptError:
                continue  # no key opens it: its jobs fail saying so (service/shopify/tokens.py)
            status = await raw.execute(
                """
                UPDATE shops SET access_token = $2, refresh_token = $3
                 WHERE id = $1 AND access_token IS NOT DISTINCT FROM $4
                   AND refresh_token IS NOT DISTINCT FROM $5
                """,
                row["id"],
                access,
                refresh,
                old_access,
                old_refresh,
            )
            rewritten += status == "UPDATE 1"
    return rewritten


async def update_shop_token(
    database: Database,
    domain: str,
    access_token: str,
    token_expires_at: datetime | None,
    refresh_token: str | None,
    refresh_token_expires_at: datetime | None,
) -> None:
    """Store a refreshed token pair (encrypted by the caller); a shop uninstalled meanwhile
    stays uninstalled."""
    await database.execute(
        """
        UPDATE shops
           SET access_token = :token, token_expires_at = :expires,
               refresh_token = :refresh, refresh_token_expires_at = :refresh_expires,
               updated_at = now()
         WHERE domain = :domain AND uninstalled_at IS NULL
        """,
        {
            "domain": domain,
            "token": access_token,
            "expires": token_expires_at,
            "refresh": refresh_token,
            "refresh_expires": refresh_token_expires_at,
        },
    )


async def mark_shop_uninstalled(database: Database, domain: str) -> bool:
    """app/uninstalled: Shopify has revoked the tokens; forget them. False if unknown shop."""
    row = await database.fetch_one(
        """
        UPDATE shops
           SET uninstalled_at = COALESCE(uninstalled_at, now()), access_token = NULL,
               token_expires_at = NULL, refresh_token = NULL, refresh_token_expires_at = NULL,
               updated_at = now()
         WHERE domain = :domain
        RETURNING id
        """,
        {"domain": domain},
    )
    return row is not None


# -- jobs ---------------------------------------------------------------------------------

JOB_COLUMNS = (
    "id, shop_id, type, input, status, progress, progress_message, result, error_message, "
    "attempts, retry_count, customer_id, idempotency_key, source, lease_owner, lease_expires_at, "
    "run_at, created_at, updated_at, started_at, finished_at"
)


@dataclass(frozen=True)
class Job:
    id: UUID
    shop_id: int
    type: str
    input: dict[str, Any]
    status: str
    progress: int
    progress_message: str | None
    result: Any
    error_message: str | None
    attempts: int
    retry_count: int
    customer_id: str | None
    idempotency_key: str | None
    source: str
    lease_owner: str | None
    lease_expires_at: datetime | None
    run_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def job_from_row(row: Any) -> Job | None:
    if row is None:
        return None
    return _job(dict(_fields(row)))


def _job(m: dict[str, Any]) -> Job:
    m["input"] = _json(m["input"])
    m["result"] = _json(m["result"])
    return Job(**m)


async def get_job(database: Database, job_id: UUID) -> Job | None:
    async with _raw(database) as raw:
        row = await raw.fetchrow(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1", job_id)
    return job_from_row(row)


async def create_job(
    database: Database,
    *,
    shop_id: int,
    job_type: str,
    job_input: dict[str, Any],
    customer_id: str | None = None,
    idempotency_key: str | None = None,
    source: str = "proxy",
    job_id: UUID | None = None,
) -> tuple[Job, bool]:
    """Write a `pending` job (with `job_id`, or a new id); return it and whether this call
    created it.

    With an idempotency key, the UNIQUE (shop_id, idempotency_key) constraint decides who wins
    among concurrent duplicates: the loser's INSERT does nothing (it waits for the winner's
    commit) and the SELECT then returns the winner's row. If that row vanished in between (its
    enqueue failed and it was deleted), the insert is simply tried again.
    """
    job_id = job_id or uuid4()
    async with _raw(database) as raw:
        for _ in range(3):
            row = await raw.fetchrow(
                f"""
                INSERT INTO jobs (id, shop_id, type, input, status, customer_id,
                                  idempotency_key, source)
                VALUES ($1, $2, $3, $4::jsonb, 'pending', $5, $6, $7)
                ON CONFLICT ON CONSTRAINT jobs_idempotency DO NOTHING
                RETURNING {JOB_COLUMNS}
                """,
                job_id, shop_id, job_type, orjson.dumps(job_input).decode(), customer_id,
                idempotency_key, source,
            )  # fmt: skip
            if row is not None:
                job = job_from_row(row)
                assert job is not None
                return job, True
            existing = await raw.fetchrow(
                f"SELECT {JOB_COLUMNS} FROM jobs WHERE shop_id = $1 AND idempotency_key = $2",
                shop_id, idempotency_key,
            )  # fmt: skip
            if existing is not None:
                job = job_from_row(existing)
                assert job is not None
                return job, False
    raise RuntimeError(f"create_job: idempotency key of shop {shop_id} kept changing hands")


async def insert_jobs(
    database: Database, rows: list[tuple[UUID, int, str, str, str | None, str | None, str]]
) -> set[UUID]:
    """Insert many `pending` jobs (id, shop_id, type, input JSON, customer_id,
    idempotency_key, source) in one statement; return the ids inserted.

    A row whose idempotency key is taken is not inserted (not even by another row of the same
    batch); its caller falls back to `create_job`, which returns the job that holds the key.
    """
    async with _raw(database) as raw:
        inserted = await raw.fetch(
            """
            INSERT INTO jobs (id, shop_id, type, input, status, customer_id, idempotency_key,
                              source)
            SELECT v.id, v.shop_id, v.type, v.input::jsonb, 'pending', v.customer_id, v.key,
                   v.source
              FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                          $6::text[], $7::text[])
                   AS v(id, shop_id, type, input, customer_id, key, source)
            ON CONFLICT ON CONSTRAINT jobs_idempotency DO NOTHING
            RETURNING id
            """,
            *(list(column) for column in zip(*rows, strict=True)),
        )
    return {row["id"] for row in inserted}


async def delete_job(database: Database, job_id: UUID) -> None:
    """Remove a job that never reached the queue, so no orphaned row is left behind."""
    async with _raw(database) as raw:
        await raw.execute("DELETE FROM jobs WHERE id = $1", job_id)


async def get_job_for_shop(database: Database, shop_id: int, job_id: UUID) -> Job | None:
    """A job, only if it belongs to `shop_id`: another shop's job is indistinguishable from none."""
    async with _raw(database) as raw:
        row = await raw.fetchrow(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND shop_id = $2", job_id, shop_id
        )
    return job_from_row(row)


def jsonb_safe(value: Any) -> bool:
    """Whether Postgres jsonb can store `value`: it refuses the NUL character in any string.

    Iterative, so input nested as deep as the JSON parser allows cannot exhaust the stack.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return True


# -- webhooks and compliance --------------------------------------------------------------


async def record_webhook_event(
    database: Database,
    *,
    event_id: str,
    topic: str,
    shop_domain: str,
    webhook_id: str | None,
    api_version: str | None,
) -> bool:
    """Record a webhook event; False if it was recorded before (a duplicate delivery)."""
    row = await database.fetch_one(
        """
        INSERT INTO webhook_events (event_id, topic, shop_domain, webhook_id, api_version)
        VALUES (:event_id, :topic, :shop, :webhook_id, :api_version)
        ON CONFLICT ON CONSTRAINT webhook_events_event DO NOTHING
        RETURNING id
        """,
        {
            "event_id": event_id,
            "topic": topic,
            "shop": shop_domain,
            "webhook_id": webhook_id,
            "api_version": api_version,
        },
    )
    return row is not None


async def link_webhook_job(database: Database, event_id: str, job_id: UUID) -> None:
    await database.execute(
        "UPDATE webhook_events SET job_id = :job_id WHERE event_id = :event_id",
        {"event_id": event_id, "job_id": job_id},
    )


async def forget_webhook_event(database: Database, event_id: str) -> None:
    """Undo a recording whose work could not be queued, so Shopify's retry is not a dup."""
    await database.execute("DELETE FROM webhook_events WHERE event_id = :e", {"e": event_id})


async def prune_webhook_events(database: Database, older_than_seconds: float) -> int:
    rows = await database.fetch_all(
        """
        DELETE FROM webhook_events
         WHERE received_at < now() - make_interval(secs => :age)
        RETURNING id
        """,
        {"age": older_than_seconds},
    )
    return len(rows)


async def customer_jobs(database: Database, shop_id: int, customer_id: str) -> list[Job]:
    """Every job a customer created in a shop (customers/data_request)."""
    rows = await database.fetch_all(
        f"""
        SELECT {JOB_COLUMNS} FROM jobs
         WHERE shop_id = :shop_id AND customer_id = :customer_id
         ORDER BY created_at
        """,
        {"shop_id": shop_id, "customer_id": customer_id},
    )
    return [job for row in rows if (job := job_from_row(row)) is not None]


async def delete_customer_jobs(
    database: Database, shop_id: int, customer_id: str, data_request_type: str
) -> int:
    """customers/redact: the customer's jobs (inputs, results) are all we hold about them,
    and the earlier data requests about them (`data_request_type` jobs naming the customer in
    their input), whose results are copies of those jobs."""
    rows = await database.fetch_all(
        """
        DELETE FROM jobs
         WHERE shop_id = :shop_id
           AND (customer_id = :customer_id
                OR (type = :data_request AND input ->> 'customer_id' = :customer_id))
        RETURNING id
        """,
        {"shop_id": shop_id, "customer_id": customer_id, "data_request": data_request_type},
    )
    return len(rows)


async def redact_shop(database: Database, shop_id: int, keep_job_id: UUID | None) -> int:
    """shop/redact: delete the shop's jobs (but the one doing this) and its tokens.

    The shop row stays, without credentials and marked uninstalled, so the running redact
    job keeps its foreign key; retention removes that last job like any other.
    """
    async with database.transaction():
        rows = await database.fetch_all(
            """
            DELETE FROM jobs
             WHERE shop_id = :shop_id AND id IS DISTINCT FROM :keep
            RETURNING id
            """,
            {"shop_id": shop_id, "keep": keep_job_id},
        )
        await database.execute(
            """
            UPDATE shops
               SET access_token = NULL, token_expires_at = NULL, refresh_token = NULL,
                   refresh_token_expires_at = NULL, scopes = '',
                   uninstalled_at = COALESCE(uninstalled_at, now()), updated_at = now()
             WHERE id = :shop_id
            """,
            {"shop_id": shop_id},
        )
    return len(rows)


# -- jobs: the worker's side ----------------------------------------------------------------
# The worker's statements run on the raw asyncpg connection: positional parameters and
# asyncpg's prepared-statement cache keep the per-job cost to one round trip per write.


@dataclass(frozen=True)
class Claim:
    """A job this worker now holds, with what it needs to run it."""

    id: UUID
    type: str
    input: dict[str, Any]
    attempts: int
    retry_count: int
    shop: str
    recovered: bool = False  # it was processing under an expired lease: its worker died


CLAIMED = "claimed"
SKIP = "skip"  # final or gone: nothing to do
HELD = "held"  # a live worker runs it: look again when that worker's lease would expire
BUSY = "busy"  # runnable, but its shop is at its concurrency cap: try again shortly

_CLAIMABLE = """
    (status IN ('pending', 'retrying')
     OR (status = 'processing' AND lease_expires_at < now()))
"""

_CLAIM = f"""
    UPDATE jobs
       SET status = 'processing', attempts = attempts + 1, lease_owner = $2,
           lease_expires_at = now() + make_interval(secs => $3),
           started_at = COALESCE(started_at, now()), run_at = NULL, updated_at = now()
      FROM (SELECT status AS was FROM jobs WHERE id = $1 FOR UPDATE) AS before
     WHERE id = $1 AND {_CLAIMABLE}
       AND ($4 = 0 OR (SELECT count(*) FROM jobs AS other
                        WHERE other.shop_id = jobs.shop_id AND other.id <> jobs.id
                          AND other.status = 'processing' AND other.lease_expires_at > now()) < $4)
    RETURNING id, type, input, attempts, retry_count,
              (SELECT domain FROM shops WHERE shops.id = jobs.shop_id) AS shop,
              before.was = 'processing' AS recovered
"""

# Serialises claims of one shop's jobs, so two workers cannot both see room under the cap.
_SHOP_CAP_LOCK = (
    "SELECT pg_advisory_xact_lock(7331002, (SELECT shop_id FROM jobs WHERE id = $1)::int)"
)


async def claim_job(
    database: Database, job_id: UUID, owner: str, lease_seconds: float, shop_cap: int = 0
) -> tuple[str, Claim | None]:
    """Take a job for one run: (CLAIMED, claim), or (SKIP | HELD | BUSY, None).

    Only a pending or retrying job, or a processing one whose lease has expired (its worker
    died), can be claimed; completed and failed are final. The row is locked (`before`) so
    the claim can say which of these it was: an UPDATE's RETURNING sees only the new row.
    """
    async with _raw(database) as raw:
        if shop_cap:
            async with raw.transaction():
                await raw.execute(_SHOP_CAP_LOCK, job_id)
                row = await raw.fetchrow(_CLAIM, job_id, owner, lease_seconds, shop_cap)
        else:
            row = await raw.fetchrow(_CLAIM, job_id, owner, lease_seconds, 0)
        if row is not None:
            return CLAIMED, Claim(
                id=row["id"],
                type=row["type"],
                input=_json(row["input"]),
                attempts=row["attempts"],
                retry_count=row["retry_count"],
                shop=row["shop"],
                recovered=row["recovered"],
            )
        why = await raw.fetchrow(
            f"SELECT status, {_CLAIMABLE} AS runnable FROM jobs WHERE id = $1", job_id
        )
    if why is None or why["status"] in ("completed", "failed"):
        return SKIP, None
    return (BUSY if why["runnable"] else HELD), None


async def renew_lease(database: Database, job_id: UUID, owner: str, lease_seconds: float) -> bool:
    """Extend a running job's lease; False when this worker no longer holds it."""
    async with _raw(database) as raw:
        held = await raw.fetchval(
            """UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3)
                WHERE id = $1 AND lease_owner = $2 AND status = 'processing' RETURNING true""",
            job_id,
            owner,
            lease_seconds,
        )
    return bool(held)


async def record_progress(
    database: Database, job_id: UUID, owner: str, percent: int, message: str | None
) -> None:
    async with _raw(database) as raw:
        await raw.execute(
            """UPDATE jobs SET progress = $3, progress_message = $4, updated_at = now()
                WHERE id = $1 AND lease_owner = $2 AND status = 'processing'""",
            job_id,
            owner,
            percent,
            message,
        )


# A write a handler asks to be committed together with its job's completion (see
# RunContext.on_completion): it gets the connection that holds the completing transaction.

_COMPLETE = """
    UPDATE jobs SET status = 'completed', result = $3::jsonb, progress = 100,
           error_message = NULL, lease_owner = NULL, lease_expires_at = NULL,
           finished_at = now(), updated_at = now()
     WHERE id = $1 AND lease_owner = $2 AND status = 'processing' RETURNING true
"""


async def complete_job(
    database: Database,
    job_id: UUID,
    owner: str,
    result: Any,
    also: Sequence[CompletionWrite] = (),
) -> bool:
    """Record a run's success; False when this worker no longer holds the job.

    `also` runs in the same transaction, only if the completion itself is written: those
    writes happen exactly once per completed job, never for a run that crashed, failed or
    lost its lease, and never twice (a second completion of a completed job matches nothing).
    """
    payload = orjson.dumps(result).decode()
    async with database.connection() as connection:
        raw = connection.raw_connection
        if not also:
            return bool(await raw.fetchval(_COMPLETE, job_id, owner, payload))
        async with raw.transaction():
            done = await raw.fetchval(_COMPLETE, job_id, owner, payload)
            if done:
                for write in also:
                    await write(raw)
    return bool(done)


async def schedule_retry(
    database: Database, job_id: UUID, owner: str, failures: int, error: str, delay: float
) -> bool:
    async with _raw(database) as raw:
        done = await raw.fetchval(
            """UPDATE jobs SET status = 'retrying', retry_count = $3, error_message = $4,
                      run_at = now() + make_interval(secs => $5),
                      lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                WHERE id = $1 AND lease_owner = $2 AND status = 'processing' RETURNING true""",
            job_id,
            owner,
            failures,
            error,
            delay,
        )
    return bool(done)


async def fail_job(database: Database, job_id: UUID, owner: str, failures: int, error: str) -> bool:
    async with _raw(database) as raw:
        done = await raw.fetchval(
            """UPDATE jobs SET status = 'failed', retry_count = $3, error_message = $4,
                      lease_owner = NULL, lease_expires_at = NULL,
                      finished_at = now(), updated_at = now()
                WHERE id = $1 AND lease_owner = $2 AND status = 'processing' RETURNING true""",
            job_id,
            owner,
            failures,
            error,
        )
    return bool(done)


async def release_job(database: Database, job_id: UUID, owner: str) -> bool:
    """Give a job back unfinished (shutdown): `retrying`, due now, never left `processing`."""
    async with _raw(database) as raw:
        done = await raw.fetchval(
            """UPDATE jobs SET status = 'retrying', run_at = now(),
                      lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                WHERE id = $1 AND lease_owner = $2 AND status = 'processing' RETURNING true""",
            job_id,
            owner,
        )
    return bool(done)


_CLAIM_MANY = f"""
    WITH candidates AS (
        SELECT id, status AS was FROM jobs
         WHERE id = ANY($1::uuid[]) AND {_CLAIMABLE}
         FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs
       SET status = 'processing', attempts = attempts + 1, lease_owner = $2,
           lease_expires_at = now() + make_interval(secs => $3),
           started_at = COALESCE(started_at, now()), run_at = NULL, updated_at = now()
      FROM candidates
     WHERE jobs.id = candidates.id
    RETURNING jobs.id, jobs.type, jobs.input, jobs.attempts, jobs.retry_count,
              (SELECT domain FROM shops WHERE shops.id = jobs.shop_id) AS shop,
              candidates.was = 'processing' AS recovered
"""


async def claim_jobs(
    database: Database, job_ids: list[UUID], owner: str, lease_seconds: float
) -> tuple[list[Claim], dict[UUID, str]]:
    """`claim_job` for a batch in one round trip (no shop cap): the claims, and for every job
    not claimed, why (SKIP or HELD)."""
    async with _raw(database) as raw:
        rows = await raw.fetch(_CLAIM_MANY, job_ids, owner, lease_seconds)
        claims = [
            Claim(
                id=row["id"],
                type=row["type"],
                input=_json(row["input"]),
                attempts=row["attempts"],
                retry_count=row["retry_count"],
                shop=row["shop"],
                recovered=row["recovered"],
            )
            for row in rows
        ]
        unclaimed: dict[UUID, str] = {}
        missing = set(job_ids) - {c.id for c in claims}
        if missing:
            found = await raw.fetch(
                "SELECT id, status FROM jobs WHERE id = ANY($1::uuid[])", list(missing)
            )
            status = {row["id"]: row["status"] for row in found}
            for job_id in missing:
                final = status.get(job_id) in (None, "completed", "failed")
                unclaimed[job_id] = SKIP if final else HELD
    return claims, unclaimed


async def complete_jobs(database: Database, done: list[tuple[UUID, str, Any]]) -> list[bool]:
    """Record many (job id, owner, result) as completed in one statement; True where written.

    Only the job's current holder may complete it: a worker that lost its lease (it stalled
    past it and another worker took the job) records nothing."""
    async with _raw(database) as raw:
        rows = await raw.fetch(
            """UPDATE jobs SET status = 'completed', result = v.result::jsonb, progress = 100,
                      error_message = NULL, lease_owner = NULL, lease_expires_at = NULL,
                      finished_at = now(), updated_at = now()
                 FROM unnest($1::uuid[], $2::text[], $3::text[]) AS v(id, owner, result)
                WHERE jobs.id = v.id AND jobs.lease_owner = v.owner AND jobs.status = 'processing'
            RETURNING jobs.id""",
            [d[0] for d in done],
            [d[1] for d in done],
            [orjson.dumps(d[2]).decode() for d in done],
        )
    written = {row["id"] for row in rows}
    return [d[0] in written for d in done]


# -- the diagnostic echo job's side effects ------------------------------------------------


async def insert_echo_effect(
    connection: asyncpg.Connection, job_id: UUID, run: int, mode: str
) -> None:
    await connection.execute(
        "INSERT INTO echo_effects (job_id, run, mode) VALUES ($1, $2, $3)", job_id, run, mode
    )


async def record_echo_effect(database: Database, job_id: UUID, run: int, mode: str) -> None:
    """An effect written on its own, as a call to another system would be: not undone if the
    run then dies before its completion is recorded."""
    async with database.connection() as connection:
        await insert_echo_effect(connection.raw_connection, job_id, run, mode)


# -- jobs: maintenance ------------------------------------------------------------------------


async def stranded_jobs(
    database: Database, older_than_seconds: float, limit: int = 500
) -> list[tuple[UUID, str, str]]:
    """Jobs that should be in the queue by now: waiting too long, or held by a dead worker."""
    async with _raw(database) as raw:
        rows = await raw.fetch(
            """SELECT j.id, j.type, s.domain
                 FROM jobs AS j JOIN shops AS s ON s.id = j.shop_id
                WHERE (j.status IN ('pending', 'retrying')
                       AND j.updated_at < now() - make_interval(secs => $1)
                       AND (j.run_at IS NULL OR j.run_at < now() - make_interval(secs => $1)))
                   OR (j.status = 'processing'
                       AND j.lease_expires_at < now() - make_interval(secs => $1))
                ORDER BY j.updated_at
                LIMIT $2""",
            older_than_seconds,
            limit,
        )
    return [(row["id"], row["type"], row["domain"]) for row in rows]


async def delete_old_jobs(
    database: Database, status: str, max_age_seconds: float, keep: int
) -> int:
    """Retention: drop final jobs older than `max_age_seconds`, and all but the newest `keep`."""
    async with _raw(database) as raw:
        aged = await raw.fetch(
            """DELETE FROM jobs WHERE status = $1
                  AND finished_at < now() - make_interval(secs => $2) RETURNING 1""",
            status,
            max_age_seconds,
        )
        extra = await raw.fetch(
            """DELETE FROM jobs WHERE id IN (
                   SELECT id FROM jobs WHERE status = $1
                    ORDER BY finished_at DESC NULLS LAST, id OFFSET $2) RETURNING 1""",
            status,
            keep,
        )
    return len(aged) + len(extra)


# -- jobs: the dashboard ---------------------------------------------------------------------
# A cancelled job is a failed one with this message: failed is final, so a worker that later
# takes its queue entry skips it (claim_job answers SKIP), and the statuses stay the five of
# the API contract.
CANCELLED_MESSAGE = "Cancelled"


@dataclass(frozen=True)
class JobFilter:
    status: str | None = None
    shop: str | None = None  # part of a shop's domain
    job_type: str | None = None


@dataclass(frozen=True)
class ListedJob:
    job: Job
    shop: str


_LISTED_COLUMNS = ", ".join(f"j.{name}" for name in JOB_COLUMNS.split(", ")) + ", s.domain"


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _job_filter(filters: JobFilter, *, with_status: bool = True) -> tuple[str, dict[str, Any]]:
    """A WHERE clause from fixed fragments; the user's text only ever travels as parameters."""
    clauses, values = ["TRUE"], {}
    if with_status and filters.status:
        clauses.append("j.status = :status")
        values["status"] = filters.status
    if filters.shop:
        clauses.append("s.domain LIKE :shop")
        values["shop"] = f"%{_escape_like(filters.shop.lower())}%"
    if filters.job_type:
        clauses.append("j.type = :type")
        values["type"] = filters.job_type
    return " AND ".join(clauses), values


def _listed(row: Any) -> ListedJob:
    m = dict(row._mapping)
    domain = m.pop("domain")
    return ListedJob(job=_job(m), shop=domain)


async def list_jobs(
    database: Database, filters: JobFilter, *, limit: int, offset: int = 0
) -> list[ListedJob]:
    """Jobs matching `filters`, newest first."""
    where, values = _job_filter(filters)
    rows = await database.fetch_all(
        f"""
        SELECT {_LISTED_COLUMNS} FROM jobs AS j JOIN shops AS s ON s.id = j.shop_id
         WHERE {where}
         ORDER BY j.created_at DESC, j.id DESC
         LIMIT :limit OFFSET :offset
        """,
        {**values, "limit": limit, "offset": offset},
    )
    return [_listed(row) for row in rows]


async def get_listed_job(database: Database, job_id: UUID) -> ListedJob | None:
    row = await database.fetch_one(
        f"""SELECT {_LISTED_COLUMNS} FROM jobs AS j JOIN shops AS s ON s.id = j.shop_id
             WHERE j.id = :id""",
        {"id": job_id},
    )
    return None if row is None else _listed(row)


async def count_jobs_by_status(database: Database, filters: JobFilter) -> dict[str, int]:
    """How many jobs of each status match the filter's shop and type (its status ignored)."""
    where, values = _job_filter(filters, with_status=False)
    rows = await database.fetch_all(
        f"""SELECT j.status, count(*) AS n FROM jobs AS j JOIN shops AS s ON s.id = j.shop_id
             WHERE {where} GROUP BY j.status""",
        values,
    )
    return {row._mapping["status"]: row._mapping["n"] for row in rows}


async def failed_jobs_by_type(database: Database) -> dict[str, int]:
    """Failed jobs that `retry_failed_jobs` would retry (cancelled ones excluded), per type."""
    rows = await database.fetch_all(
        """SELECT type, count(*) AS n FROM jobs
            WHERE status = 'failed' AND error_message IS DISTINCT FROM :cancelled
            GROUP BY type ORDER BY type""",
        {"cancelled": CANCELLED_MESSAGE},
    )
    return {row._mapping["type"]: row._mapping["n"] for row in rows}


async def job_types_in_use(database: Database) -> list[str]:
    rows = await database.fetch_all("SELECT DISTINCT type FROM jobs ORDER BY type")
    return [row._mapping["type"] for row in rows]


# A retried job starts over: status, counters, outcome and timings as if it were new, so it
# gets its full attempts again (and the abandoned-job guard counts from zero).
_RESET_TO_PENDING = """
    status = 'pending', attempts = 0, retry_count = 0, progress = 0, progress_message = NULL,
    result = NULL, error_message = NULL, run_at = NULL, started_at = NULL, finished_at = NULL,
    lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
"""


async def retry_job(database: Database, job_id: UUID) -> tuple[str, str] | None:
    """Put a failed job back to pending; its (type, shop domain), or None if it was not failed."""
    row = await database.fetch_one(
        f"""UPDATE jobs AS j SET {_RESET_TO_PENDING}
              FROM shops AS s
             WHERE s.id = j.shop_id AND j.id = :id AND j.status = 'failed'
            RETURNING j.type, s.domain""",
        {"id": job_id},
    )
    return None if row is None else (row._mapping["type"], row._mapping["domain"])


async def retry_failed_jobs(database: Database, job_type: str) -> list[tuple[UUID, str, str]]:
    """Put every failed (not cancelled) job of a type back to pending: (id, type, domain)."""
    rows = await database.fetch_all(
        f"""UPDATE jobs AS j SET {_RESET_TO_PENDING}
              FROM shops AS s
             WHERE s.id = j.shop_id AND j.type = :type AND j.status = 'failed'
               AND j.error_message IS DISTINCT FROM :cancelled
            RETURNING j.id, j.type, s.domain""",
        {"type": job_type, "cancelled": CANCELLED_MESSAGE},
    )
    return [(row._mapping["id"], row._mapping["type"], row._mapping["domain"]) for row in rows]


async def cancel_job(database: Database, job_id: UUID) -> bool:
    """Cancel a job no worker is running (pending or retrying); False for any other status.

    A processing job cannot be cancelled: its handler may be half-way through changes in
    Shopify, and only the handler knows how to stop cleanly.
    """
    row = await database.fetch_one(
        """UPDATE jobs SET status = 'failed', error_message = :message, run_at = NULL,
                  finished_at = now(), updated_at = now()
            WHERE id = :id AND status IN ('pending', 'retrying')
           RETURNING id""",
        {"id": job_id, "message": CANCELLED_MESSAGE},
    )
    return row is not None
