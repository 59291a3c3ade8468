"""Build a URL signed the way Shopify's app proxy signs it (for curl, tests and the emulator)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from service.shopify.signatures import app_proxy_signature


def signed_query(
    extra: list[tuple[str, str]],
    *,
    shop: str,
    secret: str,
    timestamp: int,
    customer_id: str = "",
    path_prefix: str = "/apps/jobs",
) -> list[tuple[str, str]]:
    pairs = [
        *extra,
        ("shop", shop),
        ("logged_in_customer_id", customer_id),
        ("path_prefix", path_prefix),
        ("timestamp", str(timestamp)),
    ]
    return [*pairs, ("signature", app_proxy_signature(pairs, secret))]


def signed_proxy_url(
    base: str,
    path: str,
    *,
    shop: str,
    secret: str,
    timestamp: int,
    customer_id: str = "",
    path_prefix: str = "/apps/jobs",
) -> str:
    parts = urlsplit(path)
    pairs = signed_query(
        parse_qsl(parts.query, keep_blank_values=True),
        shop=shop,
        secret=secret,
        timestamp=timestamp,
        customer_id=customer_id,
        path_prefix=path_prefix,
    )
    return f"{base.rstrip('/')}{parts.path}?{urlencode(pairs)}"
