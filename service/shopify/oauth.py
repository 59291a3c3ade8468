"""The OAuth install flow's Shopify side: state nonces, the callback check, token grants.

An install goes `/auth?shop=` -> Shopify's authorize page -> `/auth/callback?code&hmac&host&
shop&state&timestamp`. The callback is trusted only if its hmac is Shopify's (signed with the
app's secret), its shop is a well-formed `*.myshopify.com` name, and its state is the nonce
we issued to this browser for this shop (kept in a cookie signed with the same secret, so no
server-side table is needed). The code is then exchanged for an offline token. Expiring
offline tokens come with a refresh token, exchanged for a fresh pair before they run out.
Embedded apps installed by Shopify (no redirect at all) get their offline token by token
exchange instead: the admin's session token is traded for it (`exchange_session_token`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from service.core.settings import Settings
from service.shopify import endpoints, shop_domain
from service.shopify.signatures import verify_oauth_hmac

STATE_COOKIE = "shopjobs_oauth_state"
STATE_MAX_AGE_SECONDS = 600
CALLBACK_MAX_SKEW_SECONDS = 600  # the callback's `timestamp`; a replay needs the state cookie too


class OAuthError(Exception):
    """The install cannot go on; `status` is the HTTP answer, the message is safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    scopes: str
    expires_at: datetime | None = None
    refresh_token: str | None = None
    refresh_token_expires_at: datetime | None = None


# -- state nonce ----------------------------------------------------------------------------


def _state_mac(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), f"oauth-state:{message}".encode(), hashlib.sha256).hexdigest()


def new_state(shop: str, secret: str, now: float) -> tuple[str, str]:
    """A fresh nonce and the signed cookie value that binds it to this shop and moment."""
    nonce = secrets.token_urlsafe(24)
    message = f"{nonce}|{shop}|{int(now)}"
    return nonce, f"{message}|{_state_mac(secret, message)}"


def check_state(cookie: str | None, nonce: str, shop: str, secret: str, now: float) -> bool:
    if not cookie or not nonce:
        return False
    parts = cookie.split("|")
    if len(parts) != 4:
        return False
    cookie_nonce, cookie_shop, issued, mac = parts
    message = f"{cookie_nonce}|{cookie_shop}|{issued}"
    if not hmac.compare_digest(_state_mac(secret, message).encode(), mac.encode()):
        return False
    try:
        fresh = 0 <= now - int(issued) <= STATE_MAX_AGE_SECONDS
    except ValueError:
        return False
    # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, not False).
    return (
        fresh and cookie_shop == shop and hmac.compare_digest(cookie_nonce.encode(), nonce.encode())
    )


# -- callback ---------------------------------------------------------------------------------


def verify_callback(
    params: Mapping[str, str], cookie: str | None, secret: str, now: float
) -> tuple[str, str]:
    """The shop and code of a genuine callback, or OAuthError (400/401/403) saying why not."""
    try:
        shop = shop_domain.normalize(params.get("shop", ""))
    except ValueError:
        raise OAuthError(400, "Invalid shop domain") from None
    if not params.get("hmac") or not verify_oauth_hmac(params, secret):
        raise OAuthError(401, "Invalid hmac")
    try:
        stale = abs(now - int(params.get("timestamp", ""))) > CALLBACK_MAX_SKEW_SECONDS
    except ValueError:
        stale = True
    if stale:
        raise OAuthError(401, "Stale or missing timestamp")
    if not check_state(cookie, params.get("state", ""), shop, secret, now):
        raise OAuthError(403, "Invalid state")
    code = params.get("code", "")
    if not code:
        raise OAuthError(400, "Missing code")
    return shop, code


# -- token grants -----------------------------------------------------------------------------


def grant_from_answer(answer: Any, now: datetime) -> TokenGrant:
    if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
        raise OAuthError(502, "Shopify's token answer has no access_token")

    def at(seconds: Any) -> datetime | None:
        return now + timedelta(seconds=float(seconds)) if seconds is not None else None

    return TokenGrant(
        access_token=answer["access_token"],
        scopes=str(answer.get("scope", "")),
        expires_at=at(answer.get("expires_in")),
        refresh_token=answer.get("refresh_token"),
        refresh_token_expires_at=at(answer.get("refresh_token_expires_in")),
    )


async def _token_request(
    http: httpx.AsyncClient, settings: Settings, shop: str, fields: dict[str, str]
) -> TokenGrant:
    body = {
        "client_id": settings.shopify_api_key,
        "client_secret": settings.shopify_api_secret.get_secret_value(),
        **fields,
    }
    # httpx's timeout bounds each phase (connect, write, each read); the whole request is
    # bounded too, so a token refresh cannot outlast its lock (service/shopify/tokens.py).
    try:
        async with asyncio.timeout(settings.shopify_admin_timeout_seconds):
            answer = await http.post(
                endpoints.access_token_url(settings, shop),
                json=body,
                timeout=settings.shopify_admin_timeout_seconds,
            )
    except TimeoutError:
        raise OAuthError(503, "Shopify unreachable: no answer in time") from None
    except httpx.HTTPError as exc:
        raise OAuthError(503, f"Shopify unreachable: {exc.__class__.__name__}") from None
    if answer.status_code >= 500:
        raise OAuthError(503, f"Shopify answered {answer.status_code}")
    if answer.status_code != 200:
        raise OAuthError(400, f"Shopify refused the token request ({answer.status_code})")
    try:
        payload = answer.json()
    except ValueError:
        raise OAuthError(502, "Shopify's token answer is not JSON") from None
    return grant_from_answer(payload, datetime.now(UTC))


async def exchange_code(
    http: httpx.AsyncClient, settings: Settings, shop: str, code: str
) -> TokenGrant:
    fields = {"code": code}
    if settings.shopify_expiring_offline_tokens:
        fields["expiring"] = "1"
    return await _token_request(http, settings, shop, fields)


# Token exchange (Shopify-managed installation): a session token becomes an offline token.
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
OFFLINE_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:offline-access-token"


async def exchange_session_token(
    http: httpx.AsyncClient, settings: Settings, shop: str, session_token: str
) -> TokenGrant:
    """An offline token for the shop whose admin issued `session_token` (an App Bridge ID
    token); OAuthError 400 when Shopify refuses it (the app is not installed there, or the
    token is no longer good)."""
    fields = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": session_token,
        "subject_token_type": ID_TOKEN_TYPE,
        "requested_token_type": OFFLINE_TOKEN_TYPE,
    }
    if settings.shopify_expiring_offline_tokens:
        fields["expiring"] = "1"
    return await _token_request(http, settings, shop, fields)


async def refresh(
    http: httpx.AsyncClient, settings: Settings, shop: str, refresh_token: str
) -> TokenGrant:
    fields = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return await _token_request(http, settings, shop, fields)
