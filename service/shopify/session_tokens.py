"""App Bridge session tokens (ID tokens): who is asking, from inside the Shopify admin.

The embedded page asks App Bridge for a fresh token (`await shopify.idToken()`, valid one
minute) and sends it as `Authorization: Bearer <JWT>`. Shopify signs it with the app's secret
(HS256); it is trusted only if that signature holds with HS256 and nothing else (so neither
`alg: none` nor a public-key algorithm keyed with our secret can pass), its audience is our API
key, it is within its lifetime (with a little leeway for clocks), and its `dest` is a
well-formed shop whose admin (`iss`) issued it. PyJWT checks the signature and the registered
claims; the Shopify-specific ones are checked here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

from service.shopify.shop_domain import is_shop_domain

ALGORITHM = "HS256"
# Clock skew tolerated on `exp` and `nbf`; Shopify's own libraries allow a few seconds.
LEEWAY_SECONDS = 10
REQUIRED_CLAIMS = ["exp", "nbf", "iss", "dest", "aud", "sub"]
MAX_TOKEN_LENGTH = 4096  # a real one is well under 1 KiB; bound the work on garbage


class InvalidSessionToken(Exception):
    """The token cannot be trusted; the message says why (safe to show the caller)."""


@dataclass(frozen=True)
class SessionToken:
    shop: str  # the shop's domain, from `dest`
    user: str  # `sub`: the staff member's user id
    session: str | None  # `sid`
    expires_at: int  # `exp`, seconds since the epoch
    raw: str  # the token itself, for the token exchange


def _claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    # Printable only: `sub` is stored (Postgres text refuses NUL and lone surrogates) and logged.
    if not isinstance(value, str) or not value or not value.isprintable():
        raise InvalidSessionToken(f"Claim {name!r} must be a non-empty printable string")
    return value


def verify(token: str, *, api_key: str, secret: str) -> SessionToken:
    """The verified claims of `token`, or InvalidSessionToken saying what is wrong."""
    if not secret:
        raise InvalidSessionToken("No secret to check the token with")
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidSessionToken("Missing or oversized token")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=api_key,
            leeway=LEEWAY_SECONDS,
            options={"require": REQUIRED_CLAIMS, "verify_signature": True},
        )
    except jwt.PyJWTError as exc:
        raise InvalidSessionToken(f"Invalid session token: {exc}") from None
    dest = _claim(claims, "dest")
    shop = dest.removeprefix("https://")
    if not dest.startswith("https://") or not is_shop_domain(shop):
        raise InvalidSessionToken("Claim 'dest' is not https://NAME.myshopify.com")
    if _claim(claims, "iss") != f"{dest}/admin":
        raise InvalidSessionToken("Claim 'iss' does not match 'dest'")
    sid = claims.get("sid")
    return SessionToken(
        shop=shop,
        user=_claim(claims, "sub"),
        session=sid if isinstance(sid, str) else None,
        expires_at=int(claims["exp"]),
        raw=token,
    )
