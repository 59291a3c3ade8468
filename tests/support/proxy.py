"""App-proxy URLs signed the way Shopify signs them, with the test app's secret."""

from __future__ import annotations

import time

from service.shopify.proxy_url import signed_proxy_url
from tests.support.config import TEST_SECRET


def proxy_url(
    base: str,
    path: str,
    *,
    shop: str,
    customer: str = "",
    secret: str = TEST_SECRET,
    skew: int = 0,
) -> str:
    """`base` + `path`, signed now (+ `skew` seconds); `base` "" gives a relative URL."""
    return signed_proxy_url(
        base,
        path,
        shop=shop,
        secret=secret,
        customer_id=customer,
        timestamp=int(time.time()) + skew,
    )
