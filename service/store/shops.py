"""Shops: installs, tokens and uninstalls."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from databases import Database

from service.store.sql import SHOP_COLUMNS, connection


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


def _shop(row: Mapping[str, Any] | None) -> Shop | None:
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
    """Register (or re-install) a shop with an offline Admin API token (expiring or not)."""
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
            RETURNING {SHOP_COLUMNS}
            """,
            domain, access_token, scopes, token_expires_at, refresh_token,
            refresh_token_expires_at,
        )  # fmt: skip
    shop = _shop(row)
    assert shop is not None
    return shop


async def get_shop(database: Database, domain: str) -> Shop | None:
    async with connection(database) as raw:
        row = await raw.fetchrow(f"SELECT {SHOP_COLUMNS} FROM shops WHERE domain = $1", domain)
    return _shop(row)


async def update_shop_token(
    database: Database,
    domain: str,
    access_token: str,
    token_expires_at: datetime | None,
    refresh_token: str | None,
    refresh_token_expires_at: datetime | None,
) -> None:
    """Store a refreshed token pair; a shop uninstalled meanwhile stays uninstalled."""
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
    database: Database, domain: str, triggered_at: datetime | None = None
) -> bool:
    """app/uninstalled: Shopify has revoked the tokens; forget them.

    Only an uninstall triggered after the shop's current install (`installed_at`, renewed by
    every install) counts: a late delivery of an older one must not revoke the token of a
    reinstall. None: now, whatever the install. False: unknown shop, or a stale event.
    """
    async with connection(database) as raw:
        row = await raw.fetchrow(
            """
            UPDATE shops
               SET uninstalled_at = COALESCE(uninstalled_at, now()), access_token = NULL,
                   token_expires_at = NULL, refresh_token = NULL,
                   refresh_token_expires_at = NULL, updated_at = now()
             WHERE domain = $1
               AND installed_at < COALESCE($2::timestamptz, 'infinity')
            RETURNING id
            """,
            domain,
            triggered_at,
        )
    return row is not None
