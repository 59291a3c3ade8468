"""Ask Shopify whether a shop really uninstalled the app, before acting on `app/uninstalled`.

A webhook's HMAC covers its body only, and an `app/uninstalled` body names the shop and
nothing that changes between installs: captured once, it could be re-sent under fresh
headers to uninstall a shop that installed the app again. Its headers prove nothing, so the
web asks Shopify: when a shop uninstalls an app, Shopify revokes every token of it, so

- the shop's offline token answering 401 to `{ shop { id } }` (the cheapest Admin API call,
  1 point, no scope needed), and for an expiring token its refresh being refused too, is
  Shopify confirming the uninstall: REVOKED;
- the token working (200) means the app is installed: WORKING, the webhook is not acted on;
- no token to ask with (none stored, or expired with no refresh token left): UNKNOWN, also
  not acted on (the shop's jobs fail on their dead token as before);
- Shopify not answering in time, 429 or 5xx, a network error: CheckDeferred. The web then
  acts on nothing and answers 503, so that Shopify delivers the event again later (it
  retries for 4 hours) and the check runs again.

Any other status (402 frozen shop, 403, 404, 423 locked) is not a refused token: WORKING.
The check is bounded by CHECK_TIMEOUT_SECONDS, well inside Shopify's 5 s for a webhook answer.

The body of an `app/uninstalled` (the shop) can read the same at the shop's next uninstall,
so it is not deduplicated by its digest like other topics: a replay is answered by this check
instead. What bounds the Admin API calls a replayer can cause is a pause: once Shopify said
the token works, the shop is not asked again for WORKING_PAUSE_SECONDS (a Redis key shared by
every web process); a delivery meanwhile is CheckDeferred too (503, Shopify delivers it again).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from enum import StrEnum

import httpx
from databases import Database
from redis.asyncio import Redis

from service import store
from service.core.settings import Settings
from service.core.token_cipher import TokenDecryptError
from service.shopify import endpoints, oauth, tokens

logger = logging.getLogger("shopjobs.shopify")

CHECK_TIMEOUT_SECONDS = 3.0
SHOP_QUERY = "{ shop { id } }"
WORKING_PAUSE_SECONDS = 10
PAUSE_KEY_PREFIX = "shopjobs:uninstall-check"


class TokenCheck(StrEnum):
    REVOKED = "revoked"
    WORKING = "working"
    UNKNOWN = "unknown"


class CheckDeferred(Exception):
    """Shopify could not say (no answer in time, 429, 5xx, network), or was asked a moment
    ago: ask again later."""


async def _probe(http: httpx.AsyncClient, settings: Settings, shop: str, token: str) -> int:
    """The HTTP status Shopify answers `{ shop { id } }` with this token."""
    try:
        answer = await http.post(
            endpoints.graphql_url(settings, shop),
            json={"query": SHOP_QUERY},
            headers={"X-Shopify-Access-Token": token},
            timeout=min(CHECK_TIMEOUT_SECONDS, settings.shopify_admin_timeout_seconds),
        )
    except httpx.HTTPError as exc:
        raise CheckDeferred(f"network error {exc.__class__.__name__}") from None
    if answer.status_code == 429 or answer.status_code >= 500:
        raise CheckDeferred(f"HTTP {answer.status_code}")
    return answer.status_code


async def confirm_uninstalled(
    database: Database,
    redis: Redis,
    http: httpx.AsyncClient,
    settings: Settings,
    stored: store.Shop,
) -> TokenCheck:
    """`check_token`, at most once per WORKING_PAUSE_SECONDS per shop once the token worked."""
    key = f"{PAUSE_KEY_PREFIX}:{stored.domain}"
    if await redis.exists(key):
        raise CheckDeferred("Shopify accepted the token a moment ago")
    check = await check_token(database, redis, http, settings, stored)
    if check is TokenCheck.WORKING:
        await redis.set(key, "1", ex=WORKING_PAUSE_SECONDS)
    return check


async def check_token(
    database: Database,
    redis: Redis,
    http: httpx.AsyncClient,
    settings: Settings,
    stored: store.Shop,
) -> TokenCheck:
    """Whether Shopify still accepts the token of `stored` (read with its encrypted tokens).

    An expiring token that answers 401 is refreshed once (service/shopify/tokens.py, under its
    lock, storing the new pair): a refused refresh confirms the uninstall, a granted one is
    probed again.
    """
    if not stored.access_token:
        return TokenCheck.UNKNOWN
    try:
        token = settings.token_cipher.decrypt(stored.access_token)
    except TokenDecryptError:
        # Cannot ask with it; an operator restores the key and Shopify's retry asks again.
        raise CheckDeferred("the stored token cannot be decrypted") from None
    assert token is not None
    status = await _probe(http, settings, stored.domain, token)
    if status != 401:
        return TokenCheck.WORKING
    now = datetime.now(UTC)
    if stored.refresh_token is None:
        expired = stored.token_expires_at is not None and stored.token_expires_at <= now
        return TokenCheck.UNKNOWN if expired else TokenCheck.REVOKED
    if stored.refresh_token_expires_at is not None and stored.refresh_token_expires_at <= now:
        return TokenCheck.UNKNOWN  # Shopify cannot be asked: the refresh token ran out
    try:
        fresh = await tokens.offline_token(
            database, redis, http, settings, stored.domain, force_refresh=True
        )
    except tokens.TokenExpired:
        return TokenCheck.REVOKED  # Shopify refused the refresh (400)
    except tokens.ShopTokenMissing:
        return TokenCheck.UNKNOWN  # uninstalled or emptied meanwhile
    except oauth.OAuthError as exc:
        raise CheckDeferred(str(exc)) from None
    assert fresh.access_token is not None
    status = await _probe(http, settings, stored.domain, fresh.access_token)
    return TokenCheck.REVOKED if status == 401 else TokenCheck.WORKING
