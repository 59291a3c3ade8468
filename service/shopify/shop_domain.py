"""Shop domains: only `{name}.myshopify.com`, the form Shopify uses in every signed request."""

from __future__ import annotations

import re

SHOP_DOMAIN_RE = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")


def is_shop_domain(value: str) -> bool:
    return bool(SHOP_DOMAIN_RE.fullmatch(value))


def normalize(value: str) -> str:
    """Lower-case and strip a scheme or trailing slash; raise ValueError if it is not a shop."""
    domain = value.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
    if not is_shop_domain(domain):
        raise ValueError(f"not a shop domain (expected NAME.myshopify.com): {value!r}")
    return domain
