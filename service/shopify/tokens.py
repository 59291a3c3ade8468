"""A usable offline token for a shop: from Postgres, refreshed first if it is about to expire.

Several workers may find the same token expiring at once; Shopify rotates the refresh token
on every use, so only one of them may refresh. A Redis lock per shop serialises them, and
whoever gets it second re-reads the shop and finds the fresh token already stored.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
from databases import Database
from redis.asyncio import Redis

from jobs.types import NonRetryableError
from service import store
from service.core.settings import Settings
from service.core.token_cipher import TokenCipher, TokenDecryptError
from service.shopify import oauth

REFRESH_MARGIN = timedelta(seconds=60)
# The lock outlives the refresh it guards (its HTTP call is bounded by
# SHOPIFY_ADMIN_TIMEOUT_SECONDS, service/shopify/oauth.py) by this much, for the reads and the
# write around it: were it to expire mid-refresh, a second worker would refresh with the
# refresh token the first is consuming, and Shopify would refuse one of them.
REFRESH_LOCK_MARGIN_SECONDS = 30


class ShopTokenMissing(NonRetryableError):
    """The shop is unknown, uninstalled, or has no token: nothing to call the API with.

    Not service.jobs_client.ShopNotInstalled (an enqueue refused): this one fails a run."""


class TokenExpired(NonRetryableError):
    """The token expired and cannot be refreshed: the merchant must open the app again."""


def expiring(shop: store.Shop, now: datetime | None = None) -> bool:
    """True when the token runs out within REFRESH_MARGIN (never for non-expiring tokens)."""
    now = now or datetime.now(UTC)
    return shop.token_expires_at is not None and shop.token_expires_at - now <= REFRESH_MARGIN


def refresh_lock_seconds(settings: Settings) -> float:
    """How long the refresh lock lasts: longer than the refresh can take."""
    return settings.shopify_admin_timeout_seconds + REFRESH_LOCK_MARGIN_SECONDS


class TokenUnreadable(NonRetryableError):
    """No key of TOKEN_ENCRYPTION_KEYS opens the stored token (a key was dropped too soon)."""


async def _load(database: Database, cipher: TokenCipher, domain: str) -> store.Shop:
    """The shop with its tokens decrypted (a token stored in clear by an earlier version is
    read as it is; the worker encrypts those at start-up)."""
    shop = await store.get_shop(database, domain, tokens=True)
    if shop is None or not shop.installed or not shop.access_token:
        raise ShopTokenMissing(f"Shop not installed: {domain}")
    try:
        return replace(
            shop,
            access_token=cipher.decrypt(shop.access_token),
            refresh_token=cipher.decrypt(shop.refresh_token),
        )
    except TokenDecryptError:
        raise TokenUnreadable(
            f"The token of {domain} cannot be decrypted with TOKEN_ENCRYPTION_KEYS"
        ) from None


async def offline_token(
    database: Database,
    redis: Redis,
    http: httpx.AsyncClient,
    settings: Settings,
    domain: str,
    *,
    force_refresh: bool = False,
) -> store.Shop:
    """The shop with a token good for at least REFRESH_MARGIN (refreshing it if need be)."""
    cipher = settings.token_cipher
    shop = await _load(database, cipher, domain)
    if not (force_refresh or expiring(shop, datetime.now(UTC))):
        return shop
    lock_seconds = refresh_lock_seconds(settings)
    async with redis.lock(
        f"shopify:token-refresh:{domain}", timeout=lock_seconds, blocking_timeout=lock_seconds
    ):
        fresh = await _load(database, cipher, domain)
        if fresh.access_token != shop.access_token or not (
            force_refresh or expiring(fresh, datetime.now(UTC))
        ):
            return fresh  # another worker refreshed it while we waited
        now = datetime.now(UTC)
        usable_refresh = fresh.refresh_token and (
            fresh.refresh_token_expires_at is None or fresh.refresh_token_expires_at > now
        )
        if not usable_refresh:
            if force_refresh or fresh.token_expires_at is None or fresh.token_expires_at <= now:
                raise TokenExpired(f"Offline token of {domain} expired and cannot be refreshed")
            return fresh
        try:
            grant = await oauth.refresh(http, settings, domain, fresh.refresh_token or "")
        except oauth.OAuthError as exc:
            if exc.status == 400:
                raise TokenExpired(f"Shopify refused to refresh the token of {domain}") from None
            raise
        await store.update_shop_token(
            database,
            domain,
            cipher.encrypt(grant.access_token),
            grant.expires_at,
            cipher.encrypt_optional(grant.refresh_token or fresh.refresh_token),
            grant.refresh_token_expires_at or fresh.refresh_token_expires_at,
        )
        return await _load(database, cipher, domain)
