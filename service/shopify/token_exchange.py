"""The first admin request of a shop installed by Shopify: trade its session token for an
offline token, once.

With Shopify-managed installation there is no redirect and no callback: the app learns that a
shop installed it (or installed it again) when the merchant first opens it, from a verified
session token. Any admin request whose shop has no usable offline token exchanges that token
and stores the grant exactly as the OAuth callback does. A page load fires several requests at
once; a Redis lock per shop lets one of them exchange while the others wait and then find the
stored token, so Shopify sees one exchange.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from databases import Database
from redis.asyncio import Redis

from service import store
from service.core.settings import Settings
from service.shopify import oauth

# The lock outlives the exchange it guards (its HTTP call is bounded by
# SHOPIFY_ADMIN_TIMEOUT_SECONDS) by this much, for the read and the write around it.
EXCHANGE_LOCK_MARGIN_SECONDS = 30


def usable(shop: store.Shop | None, now: datetime | None = None) -> bool:
    """Whether the worker can call the Admin API for this shop without a new grant: installed,
    with a token that is still good or that its refresh token can renew."""
    if shop is None or not shop.installed or not shop.has_access_token:
        return False
    now = now or datetime.now(UTC)
    if shop.token_expires_at is None or shop.token_expires_at > now:
        return True
    return shop.has_refresh_token and (
        shop.refresh_token_expires_at is None or shop.refresh_token_expires_at > now
    )


async def ensure_offline_token(
    database: Database,
    redis: Redis,
    http: httpx.AsyncClient,
    settings: Settings,
    domain: str,
    session_token: str,
) -> store.Shop:
    """The shop with a usable offline token, exchanging `session_token` for one if need be.

    Raises oauth.OAuthError when Shopify refuses the exchange (400) or cannot be reached (503).
    """
    seconds = settings.shopify_admin_timeout_seconds + EXCHANGE_LOCK_MARGIN_SECONDS
    async with redis.lock(
        f"shopify:token-exchange:{domain}", timeout=seconds, blocking_timeout=seconds
    ):
        shop = await store.get_shop(database, domain)
        if usable(shop):
            assert shop is not None
            return shop  # another request exchanged while this one waited
        grant = await oauth.exchange_session_token(http, settings, domain, session_token)
        cipher = settings.token_cipher
        return await store.upsert_shop(
            database,
            domain,
            cipher.encrypt(grant.access_token),
            grant.scopes,
            token_expires_at=grant.expires_at,
            refresh_token=cipher.encrypt_optional(grant.refresh_token),
            refresh_token_expires_at=grant.refresh_token_expires_at,
        )
