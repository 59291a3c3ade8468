"""What every store module shares: the one way to reach Postgres, and the SQL fragments that
more than one statement is built from.

`databases` manages the pool and the task's connection (and its transactions); every
statement runs on the asyncpg connection under it, with positional `$n` parameters. asyncpg
then prepares each statement once per connection and caches it, so a query costs one round
trip, without `databases` compiling an SQLAlchemy `text()` for every call (the hot paths:
claims, completions, the proxy's inserts).

Status values inside SQL text are spelled as literals, so the SQL reads as SQL; they are the
values of `JobStatus`, which the schema's CHECK on `jobs.status` is tested against.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
import orjson
from databases import Database

# A row as asyncpg returns it, or as a dict made from one: `dict(row)` reads either.
Row: TypeAlias = asyncpg.Record | Mapping[str, Any]


@asynccontextmanager
async def connection(database: Database) -> AsyncIterator[asyncpg.Connection]:
    """The task's connection, as asyncpg itself: inside a `database.transaction()` of the
    same task, the statements run in that transaction."""
    async with database.connection() as wrapper:
        yield wrapper.raw_connection


def from_json(value: Any) -> Any:
    """A jsonb value as Python: asyncpg hands jsonb over as text."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def to_json(value: Any) -> str:
    """A Python value as the text a `$n::jsonb` parameter takes."""
    return orjson.dumps(value).decode()


# Whether a token is stored, told without reading it (the web decides on token exchange so).
_TOKEN_PRESENCE = (
    "access_token IS NOT NULL AS has_access_token, refresh_token IS NOT NULL AS has_refresh_token"
)
SHOP_COLUMNS = (
    "id, domain, access_token, scopes, uninstalled_at, "
    f"token_expires_at, refresh_token, refresh_token_expires_at, {_TOKEN_PRESENCE}, paused_at"
)
# The same without the token columns (read as NULL): what the web reads. Only the worker, which
# calls the Admin API, ever reads a token (service/shopify/tokens.py decrypts it), and the web
# when it asks Shopify to confirm an app/uninstalled (service/shopify/uninstalls.py).
SHOP_COLUMNS_WITHOUT_TOKENS = (
    "id, domain, NULL::text AS access_token, scopes, uninstalled_at, "
    f"token_expires_at, NULL::text AS refresh_token, refresh_token_expires_at, {_TOKEN_PRESENCE}, "
    "paused_at"
)

JOB_COLUMNS = (
    "id, shop_id, type, input, status, progress, progress_message, result, error_message, "
    "attempts, retry_count, customer_id, idempotency_key, source, lease_owner, lease_expires_at, "
    "run_at, created_at, updated_at, started_at, finished_at, staff_user_id, parent_id, batch, "
    "error_public, wait_for, wait_until"
)

# A job a worker may take: waiting (pending, retrying), held under a lease that has expired
# (its worker died), or suspended (processing with no lease and a wait: service/store/waits.py;
# a batch parent has no lease and no wait, and is not taken). Completed and failed are final.
CLAIMABLE = """
    (status IN ('pending', 'retrying')
     OR (status = 'processing' AND lease_expires_at < now())
     OR (status = 'processing' AND lease_owner IS NULL AND wait_for IS NOT NULL))
"""

# What a claim writes ($2: the worker, $3: the lease in seconds), and what it returns: the
# claim statements read the row's status before the update as `before.was`.
CLAIM_SET = """
       SET status = 'processing', attempts = attempts + 1, lease_owner = $2,
           lease_expires_at = now() + make_interval(secs => $3),
           started_at = COALESCE(started_at, now()), run_at = NULL, updated_at = now(),
           wait_for = NULL, wait_name = NULL, wait_until = NULL,
           progress_message = CASE WHEN starts_with(progress_message, 'Rate limited until ')
                                   THEN NULL ELSE progress_message END
"""
CLAIM_RETURNING = """
    RETURNING jobs.id, jobs.type, jobs.input, jobs.attempts, jobs.retry_count, jobs.parent_id,
              (SELECT domain FROM shops WHERE shops.id = jobs.shop_id) AS shop,
              before.was = 'processing' AND before.waited IS NULL AS recovered,
              before.waited, jobs.created_at,
              (SELECT uninstalled_at IS NOT NULL FROM shops WHERE shops.id = jobs.shop_id)
                  AS shop_uninstalled
"""

# The guard of every write by the worker running a job ($1: the job, $2: the worker): a worker
# that lost its lease (another took the job over) writes nothing.
HELD_BY_OWNER = "id = $1 AND lease_owner = $2 AND status = 'processing'"
