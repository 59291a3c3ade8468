"""Shopify's three signatures, computed exactly as Shopify computes them.

- App proxy: every query parameter but `signature`, blank values kept, a repeated key's values
  joined with ",", `key=value` pairs sorted and concatenated with no separator; hex HMAC-SHA256.
  A key containing "=" is refused (401) before the signature is computed: with no separator
  between pairs, `{"a=b": "c"}` and `{"a": "b=c"}` sign the same message, so a query Shopify
  signed could be read back as another one. Shopify's own parameters never contain one.
- OAuth callback: every parameter but `hmac`, sorted `key=value` pairs joined with "&"; hex.
- Webhooks: base64 HMAC-SHA256 of the raw body.

Comparisons are constant-time (`hmac.compare_digest`). Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping

PROXY_MAX_SKEW_SECONDS = 90
# Parameters that must appear once. A repeated key is signed with its values joined by ",",
# but read back as one value, so a repeated identity would be signed as one thing and used as
# another: `logged_in_customer_id` decides whose jobs a caller sees, so it is one of them.
UNIQUE_PROXY_PARAMS = ("shop", "timestamp", "signature", "logged_in_customer_id")


def _hmac_hex(secret: str, message: str) -> str:
    return hmac.digest(secret.encode(), message.encode(), "sha256").hex()  # one C call


def _grouped(pairs: Iterable[tuple[str, str]], skip: str) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        if key != skip:
            grouped.setdefault(key, []).append(value)
    return grouped


def app_proxy_signature(pairs: Iterable[tuple[str, str]], secret: str) -> str:
    grouped = _grouped(pairs, "signature")
    message = "".join(sorted(f"{k}={','.join(v)}" for k, v in grouped.items()))
    return _hmac_hex(secret, message)


class ProxySignatureError(Exception):
    """Why an app-proxy request was refused (the message is safe to return to the caller)."""


def verify_app_proxy(pairs: list[tuple[str, str]], secret: str, now: float) -> str:
    """Check an app-proxy query; return the shop domain or raise ProxySignatureError."""
    counts: dict[str, int] = {}
    for key, _ in pairs:
        counts[key] = counts.get(key, 0) + 1
    for key in UNIQUE_PROXY_PARAMS:
        if counts.get(key, 0) > 1:
            raise ProxySignatureError(f"Repeated parameter: {key}")
    if any("=" in key for key in counts):
        raise ProxySignatureError("Parameter name contains '='")
    params = dict(pairs)
    signature = params.get("signature")
    if not signature:
        raise ProxySignatureError("Missing signature")
    timestamp = params.get("timestamp")
    if not timestamp:
        raise ProxySignatureError("Missing timestamp")
    # Plain ASCII digits only: int() would also take "1_317_327_555", " 12" or other scripts'
    # digits, and refuses (ValueError) strings of thousands of digits.
    if not (len(timestamp) <= 12 and timestamp.isascii() and timestamp.isdigit()):
        raise ProxySignatureError("Invalid timestamp")
    stamp = int(timestamp)
    expected = app_proxy_signature(pairs, secret)
    if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
        raise ProxySignatureError("Invalid signature")
    if abs(now - stamp) > PROXY_MAX_SKEW_SECONDS:
        raise ProxySignatureError("Stale timestamp")
    shop = params.get("shop", "")
    if not shop:
        raise ProxySignatureError("Missing shop")
    return shop


def oauth_hmac(params: Mapping[str, str], secret: str) -> str:
    message = "&".join(
        f"{k}={v}" for k, v in sorted(params.items()) if k not in ("hmac", "signature")
    )
    return _hmac_hex(secret, message)


def verify_oauth_hmac(params: Mapping[str, str], secret: str) -> bool:
    given = params.get("hmac", "")
    return hmac.compare_digest(oauth_hmac(params, secret).encode(), given.lower().encode())


def webhook_hmac(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def verify_webhook(body: bytes, given: str | None, secret: str) -> bool:
    if not given:
        return False
    return hmac.compare_digest(webhook_hmac(body, secret).encode(), given.strip().encode())
