"""Shops: installs, tokens and uninstalls."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from databases import Database

from service.core.states import UNINSTALLED_MESSAGE
from service.core.token_cipher import TokenCipher, TokenDecryptError
from service.store.sql import SHOP_COLUMNS, SHOP_COLUMNS_WITHOUT_TOKENS, Row, connection

logger = logging.getLogger("shopjobs.store")


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
    has_access_token: bool = False  # stored, whether or not this read fetched it
    has_refresh_token: bool = False
    paused_at: datetime | None = None  # its work is paused (JobsClient.pause_shop)

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    @property
    def installed(self) -> bool:
        return self.uninstalled_at is None

    def __repr__(self) -> str:  # tokens stay out of logs and tracebacks
        return f"Shop(id={self.id}, domain={self.domain!r}, installed={self.installed})"


def _shop(row: Row | None) -> Shop | None:
    return None if row is None else Shop(**dict(row))


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
    async with connection(database) as raw:
        row = await raw.fetchrow(
            f"""
            INSERT INTO shops (domain, access_token, scopes, token_expires_at, refresh_token,
                               refresh_token_expires_at)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (domain) DO UPDATE
                SET access_token = EXCLUDED.access_token, scopes = EXCLUDED.scopes,
                    token_expires_at = EXCLUDED.token_expires_at,
                    refresh_token = EXCLUDED.refresh_token,
                    refresh_token_expires_at = EXCLUDED.refresh_token_expires_at,
                    installed_at = now(),
                    uninstalled_at = NULL, updated_at = now()
            RETURNING {SHOP_COLUMNS_WITHOUT_TOKENS}
            """,
            domain, access_token, scopes, token_expires_at, refresh_token,
            refresh_token_expires_at,
        )  # fmt: skip
    shop = _shop(row)
    assert shop is not None
    return shop


async def get_shop(database: Database, domain: str, *, tokens: bool = False) -> Shop | None:
    """The shop; its token columns (still encrypted) only when `tokens` asks for them."""
    columns = SHOP_COLUMNS if tokens else SHOP_COLUMNS_WITHOUT_TOKENS
    async with connection(database) as raw:
        row = await raw.fetchrow(f"SELECT {columns} FROM shops WHERE domain = $1", domain)
    return _shop(row)


async def encrypt_stored_tokens(database: Database, cipher: TokenCipher) -> int:
    """Encrypt, under the first key, every token stored in clear (by an earlier version) or
    under an older key; returns how many shops were rewritten.

    Each row is rewritten only if its tokens are still what was read, so a token refreshed
    meanwhile by another worker is never overwritten with an older one.
    """
    rewritten = 0
    async with connection(database) as raw:
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
                row["id"], access, refresh, old_access, old_refresh,
            )  # fmt: skip
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
    async with connection(database) as raw:
        await raw.execute(
            """
            UPDATE shops
               SET access_token = $2, token_expires_at = $3,
                   refresh_token = $4, refresh_token_expires_at = $5, updated_at = now()
             WHERE domain = $1 AND uninstalled_at IS NULL
            """,
            domain, access_token, token_expires_at, refresh_token, refresh_token_expires_at,
        )  # fmt: skip


async def mark_shop_uninstalled(
    database: Database, domain: str, *, if_token: str | None = None
) -> bool:
    """The shop uninstalled the app: Shopify has revoked its tokens; forget them, and fail
    every job of the shop that is not running (pending, retrying, suspended, a batch parent
    waiting for its children) with UNINSTALLED_MESSAGE, in the same statement: no job can run
    for it again. A running one ends as its handler does (its next Admin API call fails); a
    queue entry left behind finds its job final and is dropped; a job that slips through (a
    claim racing this) is failed at its run (Claim.shop_uninstalled).

    `if_token` (the stored, encrypted access token that Shopify was seen to refuse) makes it
    conditional: a shop that stored another token meanwhile (installed again, or refreshed)
    is left alone. None: whatever the token. False: unknown shop, or its token changed.
    """
    async with connection(database) as raw:
        row = await raw.fetchrow(
            """
            WITH shop AS (
                UPDATE shops
                   SET uninstalled_at = COALESCE(uninstalled_at, now()), access_token = NULL,
                       token_expires_at = NULL, refresh_token = NULL,
                       refresh_token_expires_at = NULL, updated_at = now()
                 WHERE domain = $1
                   AND ($2::text IS NULL OR access_token = $2)
                RETURNING id
            ), failed AS (
                UPDATE jobs SET status = 'failed', error_message = $3, error_public = true,
                       run_at = NULL, wait_for = NULL, wait_name = NULL, wait_until = NULL,
                       lease_owner = NULL, lease_expires_at = NULL,
                       finished_at = now(), updated_at = now()
                  FROM shop
                 WHERE jobs.shop_id = shop.id
                   AND (jobs.status IN ('pending', 'retrying')
                        OR (jobs.status = 'processing' AND jobs.lease_owner IS NULL))
                RETURNING jobs.id
            )
            SELECT id, (SELECT count(*) FROM failed) AS failed FROM shop
            """,
            domain,
            if_token,
            UNINSTALLED_MESSAGE,
        )
    if row is not None and row["failed"]:
        logger.info("shop %s uninstalled: %d unfinished job(s) failed", domain, row["failed"])
    return row is not None


async def pause_shop(database: Database, domain: str, paused: bool) -> bool:
    """Pause (or resume) a shop's work: `paused_at` set (kept if already paused) or cleared.
    False: no such shop."""
    async with connection(database) as raw:
        row = await raw.fetchrow(
            """UPDATE shops
                  SET paused_at = CASE WHEN $2 THEN COALESCE(paused_at, now()) END,
                      updated_at = now()
                WHERE domain = $1 RETURNING id""",
            domain,
            paused,
        )
    return row is not None


async def paused_shops(database: Database) -> list[str]:
    """The domains of every paused shop (what the queue's paused set must hold)."""
    async with connection(database) as raw:
        rows = await raw.fetch(
            "SELECT domain FROM shops WHERE paused_at IS NOT NULL ORDER BY domain"
        )
    return [row["domain"] for row in rows]
